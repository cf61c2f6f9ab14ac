package audit

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gdpr-oss/gdpr/modules/message"
)

// errNoID marks a message that cannot be deduplicated, so cannot be audited
// exactly once.
var errNoID = errors.New("audit: message has no message_id")

// maxBatch bounds the events one INSERT writes (10 parameters each, well
// within PostgreSQL's 65,535).
const maxBatch = 500

// Recorder is the audit queue's message handler. Handlers that run at once
// share commits: while one batch is being written, the events that arrive
// wait and go into the next one, so under load one commit records many
// events (one per message was most of the audit consumer's cost), and each
// handler returns, so its delivery is acknowledged, only after the commit
// that holds its event.
type Recorder struct {
	store    *Store
	logger   *slog.Logger
	recorded *prometheus.CounterVec
	now      func() time.Time

	mu      sync.Mutex
	pending []*pendingEvent
	writing bool
}

// pendingEvent is one handler's event waiting for its batch's commit.
type pendingEvent struct {
	e    Event
	done chan struct{} // closed once its batch is written (or failed)
	lead chan struct{} // closed when this handler is to write the next batch
	// leading and abandoned are guarded by the Recorder's mu.
	leading   bool
	abandoned bool
	fresh     bool
	err       error
}

// NewRecorder returns a recorder writing to store; its counter
// gdpr_audit_events_total{type} is registered on reg.
func NewRecorder(store *Store, reg prometheus.Registerer, logger *slog.Logger) *Recorder {
	r := &Recorder{
		store:  store,
		logger: logger,
		recorded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gdpr_audit_events_total",
			Help: "Messages written to the audit log (first delivery only), by message type.",
		}, []string{"type"}),
		now: time.Now,
	}
	reg.MustRegister(r.recorded)
	return r
}

// Handle records m. A message without an id is dead-lettered; a database
// error is returned so the message is redelivered.
func (r *Recorder) Handle(ctx context.Context, m message.Message) error {
	if m.ID == "" {
		return message.Permanent(errNoID)
	}
	e := FromMessage(m, r.now())
	fresh, err := r.record(ctx, e)
	if err != nil {
		return err
	}
	if !fresh {
		r.logger.DebugContext(ctx, "audit event already recorded", "type", m.Type)
		return nil
	}
	label := m.Type
	if !Known(label) {
		label = "other"
	}
	r.recorded.WithLabelValues(label).Inc()
	r.logger.DebugContext(ctx, "audit event recorded", "type", m.Type, "producer", e.Role)
	return nil
}

// record writes e in a batch with the events of the handlers running at the
// same time. One handler at a time leads: it writes a batch holding its own
// event (and whatever else is pending), then hands the lead to the oldest
// handler still waiting, so no handler writes other handlers' batches for
// long and every handler returns soon after the commit holding its event.
func (r *Recorder) record(ctx context.Context, e Event) (bool, error) {
	p := &pendingEvent{e: e, done: make(chan struct{}), lead: make(chan struct{})}
	r.mu.Lock()
	r.pending = append(r.pending, p)
	if !r.writing {
		r.writing = true
		p.leading = true
		close(p.lead)
	}
	r.mu.Unlock()
	select {
	case <-p.done:
		return p.fresh, p.err
	case <-p.lead:
	case <-ctx.Done():
		r.mu.Lock()
		leading := p.leading
		p.abandoned = !leading
		r.mu.Unlock()
		if !leading {
			// A later batch may still commit it; the redelivery then finds it recorded.
			return false, ctx.Err()
		}
	}
	r.lead(ctx, p)
	return p.fresh, p.err
}

// lead writes batches until p's is committed, then passes the lead on.
func (r *Recorder) lead(ctx context.Context, p *pendingEvent) {
	for written := false; !written; {
		r.mu.Lock()
		n := min(len(r.pending), maxBatch)
		batch := r.pending[:n:n]
		r.pending = r.pending[n:]
		r.mu.Unlock()
		r.writeBatch(ctx, batch)
		select {
		case <-p.done:
			written = true
		default:
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, next := range r.pending {
		if !next.abandoned {
			next.leading = true
			close(next.lead)
			return
		}
	}
	// Only abandoned events are left (their handlers returned an error, so
	// their messages come back): the next handler to arrive writes them.
	r.writing = false
}

func (r *Recorder) writeBatch(ctx context.Context, batch []*pendingEvent) {
	if len(batch) == 0 {
		return
	}
	events := make([]Event, len(batch))
	for i, p := range batch {
		events[i] = p.e
	}
	fresh, err := r.store.RecordBatch(ctx, events)
	for i, p := range batch {
		if err != nil {
			p.err = err
		} else {
			p.fresh = fresh[i]
		}
		close(p.done)
	}
}
