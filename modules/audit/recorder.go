package audit

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gdpr-oss/gdpr/modules/message"
)

// errNoID marks a message that cannot be deduplicated, so cannot be audited
// exactly once.
var errNoID = errors.New("audit: message has no message_id")

// Recorder is the audit queue's message handler.
type Recorder struct {
	store    *Store
	logger   *slog.Logger
	recorded *prometheus.CounterVec
	now      func() time.Time
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
	fresh, err := r.store.Record(ctx, e)
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
