// Package participant lets a Go service take part in gdpr's erasure protocol
// (docs/protocol.md) in a few lines:
//
//	err := participant.Run(ctx, conn, "billing", func(ctx context.Context, s event.Subject) (string, error) {
//		if s.ID == "" {
//			return event.OutcomeCannotErase, nil // invoices are found by customer id only
//		}
//		res, err := db.ExecContext(ctx, `DELETE FROM invoices WHERE customer_id = $1`, s.ID)
//		if err != nil {
//			return "", err
//		}
//		if n, _ := res.RowsAffected(); n == 0 {
//			return event.OutcomeNotFound, nil
//		}
//		return event.OutcomeErased, nil
//	}, participant.Options{DB: db})
//
// It declares and consumes the service's queue (participant.<name>, bound to
// erasure.command.<name>), calls the erase function once per command,
// publishes the confirmation with a publisher confirm and only then
// acknowledges the command. Commands are delivered at least once, so the
// erase function must be idempotent; with Options.DB the package also records
// each handled command in a table of the service's own PostgreSQL database
// and answers a redelivered command from it without erasing again.
package participant

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/message"
)

// ProtocolVersion is the version of the command and confirmation this package speaks.
const ProtocolVersion = 1

// EraseFunc erases everything the service holds about subject and returns
// event.OutcomeErased or event.OutcomeNotFound, or event.OutcomeCannotErase
// when the subject lacks the identifier the service finds people by (never
// not_found then: the person would be told their data was deleted). It may be called more than
// once for the same subject and must then succeed again. An error is
// confirmed as "failed" (the canceller re-sends later, with backoff); its
// text is not sent, only the detail of a *FailedError, so personal data in
// an error message never leaves the service.
type EraseFunc func(ctx context.Context, subject event.Subject) (string, error)

// FailedError is an erase failure with a detail safe to send to the
// canceller and show to its operators (no personal data).
type FailedError struct{ Detail string }

func (e *FailedError) Error() string { return "erase failed: " + e.Detail }

// Failed returns an error whose detail is sent with the "failed" confirmation.
func Failed(detail string) error { return &FailedError{Detail: detail} }

// Options tune a participant.
type Options struct {
	// DB, when set, deduplicates commands in the table gdpr_participant_inbox
	// of this (PostgreSQL) database, created when missing. Without it, recent
	// command ids are remembered in memory only.
	DB *sql.DB
	// Concurrency is how many commands are handled at once; default 4.
	Concurrency int
	// Logger receives the package's logs; default discards them.
	Logger *slog.Logger
}

// Participant is a running participant: a Component with Name, Start and Stop.
type Participant struct {
	conn   *bus.Conn
	name   string
	erase  EraseFunc
	opts   Options
	logger *slog.Logger

	pub      *bus.Publisher
	consumer *bus.Consumer
	recent   *recentSet
}

// New returns a participant named name (the name configured for it in the
// canceller's participants list). Nothing happens until Start.
func New(conn *bus.Conn, name string, erase EraseFunc, opts Options) (*Participant, error) {
	if name == "" {
		return nil, errors.New("participant: name is empty")
	}
	if erase == nil {
		return nil, errors.New("participant: erase function is nil")
	}
	if opts.Concurrency < 1 {
		opts.Concurrency = 4
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p := &Participant{conn: conn, name: name, erase: erase, opts: opts, logger: logger.With("participant", name), recent: newRecentSet(10000)}
	return p, nil
}

// Name identifies the component in logs.
func (p *Participant) Name() string { return "participant " + p.name }

// Queue is the participant's queue (without the connection's prefix).
func (p *Participant) Queue() string { return "participant." + p.name }

// Start declares the queue (so a participant may start before the
// canceller), prepares the inbox table, and consumes.
func (p *Participant) Start(ctx context.Context) error {
	if err := p.conn.DeclareQueue(ctx, bus.Queue{Name: p.Queue(), Bindings: []string{event.TypeErasureCommand + "." + p.name}, Shared: true}); err != nil {
		return fmt.Errorf("declaring queue of participant %s: %w", p.name, err)
	}
	if p.opts.DB != nil {
		if _, err := p.opts.DB.ExecContext(ctx, inboxDDL); err != nil {
			return fmt.Errorf("creating participant inbox table: %w", err)
		}
	}
	p.pub = bus.NewPublisher(p.conn)
	p.consumer = bus.NewConsumer(p.conn, bus.ConsumerOptions{Queue: p.Queue(), Concurrency: p.opts.Concurrency}, p.handle, p.logger)
	if err := p.consumer.Start(ctx); err != nil {
		_ = p.pub.Close()
		return err
	}
	return nil
}

// Stop stops consuming, lets running erasures finish until ctx ends, and
// releases the publisher. An unfinished command is redelivered later.
func (p *Participant) Stop(ctx context.Context) error {
	if p.consumer == nil {
		return nil
	}
	err := p.consumer.Stop(ctx)
	_ = p.pub.Close()
	return err
}

// Run starts a participant and runs it until ctx ends, then drains for up
// to 10 seconds.
func Run(ctx context.Context, conn *bus.Conn, name string, erase EraseFunc, opts Options) error {
	p, err := New(conn, name, erase, opts)
	if err != nil {
		return err
	}
	if err := p.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	return p.Stop(stopCtx)
}

// confirmationNamespace makes confirmation ids deterministic per command, so
// a confirmation published twice carries one message id and the canceller
// drops the copy.
const confirmationNamespace = "5b0f2c1e-7f4a-4c57-9a55-6a8f0f3c2d10"

// ConfirmationID is the message id of the confirmation of command commandID.
func ConfirmationID(participantName, commandID string) string {
	return uuid.NewSHA1(uuid.MustParse(confirmationNamespace), []byte(participantName+"\x00"+commandID)).String()
}

func (p *Participant) handle(ctx context.Context, m message.Message) error {
	cmd, err := p.decode(m)
	if err != nil {
		return message.Permanent(err)
	}
	outcome, detail, seen, err := p.lookup(ctx, m.ID)
	if err != nil {
		return err
	}
	if !seen {
		outcome, detail = p.run(ctx, cmd)
		if ctx.Err() != nil {
			// Draining: the erase may have been cut short; let the command come back.
			return ctx.Err()
		}
		if err := p.record(ctx, m.ID, outcome, detail); err != nil {
			return err
		}
	}
	conf, err := message.New(event.TypeErasureConfirmed, event.ErasureConfirmed{
		Version: ProtocolVersion, RequestID: cmd.RequestID, Participant: p.name,
		Outcome: outcome, Detail: detail, Attempt: cmd.Attempt,
	}, &m)
	if err != nil {
		return err
	}
	conf.ID = ConfirmationID(p.name, m.ID)
	conf.CorrelationID = cmd.RequestID
	if err := p.pub.Publish(ctx, conf); err != nil {
		return fmt.Errorf("confirming erasure %s: %w", cmd.RequestID, err)
	}
	p.logger.InfoContext(ctx, "erasure confirmed", "request_id", cmd.RequestID, "outcome", outcome, "attempt", cmd.Attempt)
	return nil
}

func (p *Participant) decode(m message.Message) (event.ErasureCommand, error) {
	var cmd event.ErasureCommand
	if m.Type != event.TypeErasureCommand {
		return cmd, fmt.Errorf("message type %q is not %s", m.Type, event.TypeErasureCommand)
	}
	if m.ID == "" {
		return cmd, errors.New("message_id is missing")
	}
	if err := m.Decode(&cmd); err != nil {
		return cmd, err
	}
	switch {
	case cmd.Version != ProtocolVersion:
		return cmd, fmt.Errorf("protocol version %d is not supported (want %d)", cmd.Version, ProtocolVersion)
	case cmd.Participant != p.name:
		return cmd, fmt.Errorf("command for participant %q reached %q", cmd.Participant, p.name)
	case cmd.RequestID == "":
		return cmd, errors.New("request_id is missing")
	case cmd.Subject.Empty():
		return cmd, errors.New("subject has no identifier")
	}
	return cmd, nil
}

// run calls the erase function, turning a panic or an error into "failed".
func (p *Participant) run(ctx context.Context, cmd event.ErasureCommand) (outcome, detail string) {
	defer func() {
		if r := recover(); r != nil {
			p.logger.ErrorContext(ctx, "erase function panicked", "request_id", cmd.RequestID)
			outcome, detail = event.OutcomeFailed, "erase function panicked"
		}
	}()
	out, err := p.erase(ctx, cmd.Subject)
	if err != nil {
		var fe *FailedError
		if errors.As(err, &fe) {
			detail = fe.Detail
		} else {
			detail = "erase function returned an error"
		}
		p.logger.WarnContext(ctx, "erase failed", "request_id", cmd.RequestID, "detail", detail)
		return event.OutcomeFailed, detail
	}
	switch out {
	case event.OutcomeErased, event.OutcomeNotFound:
		return out, ""
	case event.OutcomeCannotErase:
		return out, "the command lacks the identifier this service finds subjects by"
	default:
		return event.OutcomeFailed, fmt.Sprintf("erase function returned unknown outcome %q", out)
	}
}

// inboxDDL is the participant's own dedupe table, in the service's database.
const inboxDDL = `CREATE TABLE IF NOT EXISTS gdpr_participant_inbox (
    participant text        NOT NULL,
    message_id  text        NOT NULL,
    outcome     text        NOT NULL,
    detail      text        NOT NULL DEFAULT '',
    handled_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (participant, message_id)
)`

// lookup returns the recorded outcome of command id when it was handled
// before. A failed outcome is not replayed: the erase is tried again.
func (p *Participant) lookup(ctx context.Context, id string) (outcome, detail string, seen bool, err error) {
	if p.opts.DB == nil {
		outcome, seen = p.recent.get(id)
		return outcome, "", seen, nil
	}
	err = p.opts.DB.QueryRowContext(ctx, `SELECT outcome, detail FROM gdpr_participant_inbox
		WHERE participant = $1 AND message_id = $2 AND outcome <> 'failed'`, p.name, id).Scan(&outcome, &detail)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", false, nil
	}
	if err != nil {
		return "", "", false, fmt.Errorf("reading participant inbox: %w", err)
	}
	return outcome, detail, true, nil
}

func (p *Participant) record(ctx context.Context, id, outcome, detail string) error {
	if outcome == event.OutcomeFailed {
		return nil
	}
	if p.opts.DB == nil {
		p.recent.add(id, outcome)
		return nil
	}
	_, err := p.opts.DB.ExecContext(ctx, `INSERT INTO gdpr_participant_inbox (participant, message_id, outcome, detail)
		VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`, p.name, id, outcome, detail)
	if err != nil {
		return fmt.Errorf("recording command in participant inbox: %w", err)
	}
	return nil
}

// recentSet remembers the outcomes of the last n commands in memory.
type recentSet struct {
	mu    sync.Mutex
	n     int
	order []string
	m     map[string]string
}

func newRecentSet(n int) *recentSet { return &recentSet{n: n, m: map[string]string{}} }

func (r *recentSet) get(id string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	o, ok := r.m[id]
	return o, ok
}

func (r *recentSet) add(id, outcome string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.m[id]; ok {
		return
	}
	r.m[id] = outcome
	r.order = append(r.order, id)
	if len(r.order) > r.n {
		delete(r.m, r.order[0])
		r.order = r.order[1:]
	}
}
