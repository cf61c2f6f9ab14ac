package erasure

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/expand"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/scheduler"
)

// Inbox consumer names: one per kind of message whose effect must happen once.
const (
	inboxRequested = "canceller.requested"
	inboxConfirmed = "canceller.confirmed"
)

// Scheduler is the part of the scheduler's store the canceller uses:
// delayed messages (re-sends, the sweep, the email system's delay), inside
// the caller's transaction.
type Scheduler interface {
	Schedule(ctx context.Context, tx *gorm.DB, e scheduler.Entry) error
	Cancel(ctx context.Context, tx *gorm.DB, key string) (bool, error)
}

// Outbox is where the canceller writes the messages it publishes at once,
// inside the caller's transaction (modules/outbox).
type Outbox interface {
	Enqueue(ctx context.Context, tx *gorm.DB, m message.Message) error
	// EnqueueAll writes several messages in one statement.
	EnqueueAll(ctx context.Context, tx *gorm.DB, ms []message.Message) error
}

// Canceller holds the erasure state machine. It keeps no state of its own
// besides the database, so any number of replicas can run.
type Canceller struct {
	db       *gorm.DB
	sched    Scheduler
	outbox   Outbox
	cfg      Config
	registry *Registry
	metrics  *Metrics
	logger   *slog.Logger
	client   *http.Client
	// confirmations groups the confirmations that arrive while a
	// confirmation transaction runs into the next one (confirmations.go).
	confirmations *confirmationGroups
}

// New returns a canceller over db. metrics may be nil (nothing is recorded).
func New(db *gorm.DB, sched Scheduler, outbox Outbox, cfg Config, metrics *Metrics, logger *slog.Logger) (*Canceller, error) {
	reg, err := NewRegistry(cfg.Participants)
	if err != nil {
		return nil, err
	}
	if metrics == nil {
		metrics = NewMetrics(nil, nil)
	}
	return &Canceller{
		db: db, sched: sched, outbox: outbox, cfg: cfg, registry: reg, metrics: metrics, logger: logger,
		// A participant's credentials must not follow a redirect to another
		// origin, and a DELETE must not become a GET on a 302.
		client:        &http.Client{CheckRedirect: expand.CheckRedirect},
		confirmations: &confirmationGroups{running: map[uint32]*confirmationGroup{}},
	}, nil
}

// Registry returns the configured participants.
func (c *Canceller) Registry() *Registry { return c.registry }

// row is one erasure_participants row.
type row struct {
	RequestID   string
	Participant string
	Kind        string
	State       State
	Attempt     int
}

// erasureRow is the locked erasures row plus the database's clock.
type erasureRow struct {
	RequestID          string
	State              ErasureState
	SubjectID          string
	SubjectEmail       string
	SubjectPhone       string
	SubjectIdentifiers string
	CompletedAt        *time.Time
	Now                time.Time
}

// subject is the erasure's subject as stored (empty once finished).
func (e erasureRow) subject() event.Subject {
	return storedSubject(e.SubjectID, e.SubjectEmail, e.SubjectPhone, e.SubjectIdentifiers)
}

// storedSubject rebuilds a subject from the erasures columns.
func storedSubject(id, email, phone, identifiers string) event.Subject {
	s := event.Subject{ID: id, Email: email, Phone: phone}
	if identifiers != "" && identifiers != "{}" {
		_ = json.Unmarshal([]byte(identifiers), &s.Identifiers) // written by this module from a map
	}
	return s
}

// redactSubject replaces every spelling, in any case, of the subject's
// identifiers in detail (free text a participant sends with its state, or
// an operator's note) with their placeholder names: the detail stays with
// the erasure's PII-free record for retention.record_for, long after the
// subject's identifiers were blanked (docs/privacy.md). Longer values go
// first, so an id inside the address cannot split it.
func redactSubject(detail string, s event.Subject) string {
	if detail == "" {
		return detail
	}
	type value struct{ text, placeholder string }
	var vs []value
	add := func(text, placeholder string) {
		if text != "" {
			vs = append(vs, value{text, "{" + placeholder + "}"})
		}
	}
	add(s.Email, "subject_email")
	add(s.ID, "subject_id")
	add(s.Phone, "phone")
	for name, v := range s.Identifiers {
		add(v, event.IdentifierPlaceholder(name))
	}
	slices.SortFunc(vs, func(a, b value) int { return cmp.Compare(len(b.text), len(a.text)) })
	for _, v := range vs {
		detail = regexp.MustCompile(`(?i)`+regexp.QuoteMeta(v.text)).ReplaceAllLiteralString(detail, v.placeholder)
	}
	return detail
}

// identifiersJSON is the subject_identifiers value of ids.
func identifiersJSON(ids map[string]string) string {
	if len(ids) == 0 {
		return "{}"
	}
	b, _ := json.Marshal(ids) // a map of strings always encodes
	return string(b)
}

// step is one transaction of the canceller on one locked erasure: what every
// state change inside it shares. cause is the message that caused the
// transaction (the cause of every message it writes); fx collects what to
// record once it committed. Passed by value: a function that moves e on (as
// checkCompletion does) changes only its own copy, as with a parameter.
type step struct {
	tx        *gorm.DB
	e         erasureRow
	requestID string
	cause     *message.Message
	fx        *effects
	// rows, when set, are the erasure's participant rows as this
	// transaction sees them (rowSet); nil reads them when needed.
	rows *rowSet
}

// effects are what to record once the transaction committed.
type effects struct {
	requested, completed, overdue bool
	confirmed                     []string // "participant\x00outcome"
}

func (c *Canceller) apply(e effects) {
	if e.requested {
		c.metrics.requested.Inc()
	}
	if e.completed {
		c.metrics.completed.Inc()
	}
	if e.overdue {
		c.metrics.overdue.Inc()
	}
	for _, pc := range e.confirmed {
		p, o, _ := strings.Cut(pc, "\x00")
		c.metrics.confirmations.WithLabelValues(p, o).Inc()
	}
}

// lock takes the erasure's row lock for the rest of tx: every state change
// of one erasure is serialised behind it, across replicas.
func (c *Canceller) lock(ctx context.Context, tx *gorm.DB, requestID string) (erasureRow, error) {
	var e erasureRow
	res := tx.WithContext(ctx).Raw(`SELECT state, subject_id, subject_email, subject_phone,
			subject_identifiers::text AS subject_identifiers, completed_at, now() AS now
		FROM erasures WHERE request_id = ? FOR UPDATE`, requestID).Scan(&e)
	if res.Error != nil {
		return e, fmt.Errorf("locking erasure %s: %w", requestID, res.Error)
	}
	if res.RowsAffected == 0 {
		return e, fmt.Errorf("%w: %s", ErrUnknownRequest, requestID)
	}
	return e, nil
}

// lockParticipant is lock, then participant name's row. Two statements on
// purpose: a join taking the lock would return the participant row as it was
// before a concurrent transaction that held the lock committed (READ
// COMMITTED re-reads only the locked row), and a duplicate confirmation would
// then be applied twice.
func (c *Canceller) lockParticipant(ctx context.Context, tx *gorm.DB, requestID, name string) (erasureRow, row, bool, error) {
	e, err := c.lock(ctx, tx, requestID)
	if err != nil || name == "" {
		return e, row{}, false, err
	}
	var r row
	res := tx.WithContext(ctx).Raw(`SELECT participant, kind, state, attempt FROM erasure_participants
		WHERE request_id = ? AND participant = ?`, requestID, name).Scan(&r)
	if res.Error != nil {
		return e, r, false, fmt.Errorf("reading participant %s of %s: %w", name, requestID, res.Error)
	}
	return e, r, res.RowsAffected == 1, nil
}

func (c *Canceller) setState(ctx context.Context, s step, name string, state State, attempt int, outcome, detail string) error {
	detail = redactSubject(detail, s.e.subject())
	if s.rows != nil {
		s.rows.set(name, state, attempt, outcome, detail)
		if s.rows.deferred {
			return nil
		}
	}
	tx, requestID := s.tx, s.requestID
	confirmed := state == StateErased || state == StateNotFound
	err := tx.WithContext(ctx).Exec(`UPDATE erasure_participants SET state = ?, attempt = ?,
			last_outcome = CASE WHEN ? = '' THEN last_outcome ELSE ? END, detail = ?,
			confirmed_at = CASE WHEN ? THEN now() ELSE confirmed_at END, updated_at = now()
		WHERE request_id = ? AND participant = ?`,
		state, attempt, outcome, outcome, truncate(detail, 500), confirmed, requestID, name).Error
	if err != nil {
		return fmt.Errorf("updating participant %s of %s: %w", name, requestID, err)
	}
	return nil
}

// send records attempt n to an AMQP (or email) participant as sent at `at`
// and enqueues its command for then. The caller reschedules the sweep.
func (c *Canceller) send(ctx context.Context, s step, p Participant, n int, at time.Time) error {
	// The row is written here at once: deferred changes go first, so the
	// statement below is the row's last.
	if err := c.flush(ctx, s); err != nil {
		return err
	}
	if err := c.enqueueCommand(ctx, s, p.Name, n, at); err != nil {
		return err
	}
	if s.rows != nil {
		if r, ok := s.rows.byName[p.Name]; ok {
			r.State, r.Attempt = StateSent, n
		}
	}
	if err := s.tx.WithContext(ctx).Exec(`UPDATE erasure_participants SET state = ?, attempt = ?, sent_at = ?, updated_at = now()
		WHERE request_id = ? AND participant = ?`, StateSent, n, at, s.requestID, p.Name).Error; err != nil {
		return fmt.Errorf("marking %s of %s sent: %w", p.Name, s.requestID, err)
	}
	return nil
}

// enqueueCommand schedules attempt n's command to be published at `at`.
func (c *Canceller) enqueueCommand(ctx context.Context, s step, name string, n int, at time.Time) (err error) {
	ctx, span := startCommandSpan(ctx, s.requestID, name, n)
	defer func() { endCommandSpan(span, err) }()
	cmd, err := c.command(s, name, n)
	if err != nil {
		return err
	}
	return c.deliver(ctx, s.tx, timerKey(s.requestID, name, "command", n), at, s.e.Now, cmd)
}

// command is attempt n's command to participant name.
func (c *Canceller) command(s step, name string, n int) (message.Message, error) {
	cmd, err := message.New(event.TypeErasureCommand, event.ErasureCommand{
		Version: 1, RequestID: s.requestID, Participant: name,
		Subject: s.e.subject(), Attempt: n,
	}, s.cause)
	if err != nil {
		return cmd, err
	}
	cmd.RoutingKey = CommandRoutingKey(name)
	cmd.CorrelationID = s.requestID
	return cmd, nil
}

// deliver publishes m at `at`: through the outbox when `at` is not after
// now (the transaction's moment), so a message due at once does not wait
// for the scheduler role, after dropping a pending delayed message of the
// same key it replaces; otherwise as a delayed message under key.
func (c *Canceller) deliver(ctx context.Context, tx *gorm.DB, key string, at, now time.Time, m message.Message) error {
	if at.After(now) {
		return c.sched.Schedule(ctx, tx, scheduler.Entry{Key: key, DeliverAt: at, Message: m})
	}
	if _, err := c.sched.Cancel(ctx, tx, key); err != nil {
		return err
	}
	return c.outbox.Enqueue(ctx, tx, m)
}

func timerKey(requestID, participant, action string, attempt int) string {
	return "erasure:" + requestID + ":" + participant + ":" + action + ":" + strconv.Itoa(attempt)
}

func sweepKey(requestID string) string { return "erasure:" + requestID + ":sweep" }

// scheduleTimer delivers participant's timer for attempt n at `at`, judged
// due against the transaction's moment.
func (c *Canceller) scheduleTimer(ctx context.Context, s step, participant, action string, n int, at time.Time) error {
	m, err := c.timer(s, participant, action, n)
	if err != nil {
		return err
	}
	return c.deliver(ctx, s.tx, timerKey(s.requestID, participant, action, n), at, s.e.Now, m)
}

// timer is participant's timer message for attempt n.
func (c *Canceller) timer(s step, participant, action string, n int) (message.Message, error) {
	m, err := message.New(TypeTimer, Timer{RequestID: s.requestID, Participant: participant, Action: action, Attempt: n}, s.cause)
	if err != nil {
		return m, err
	}
	m.CorrelationID = s.requestID
	return m, nil
}

// sentRow is a participant awaiting a confirmation.
type sentRow struct {
	Participant string
	Kind        string
	Attempt     int
	SentAt      time.Time
}

func (c *Canceller) sentRows(ctx context.Context, tx *gorm.DB, requestID string) ([]sentRow, error) {
	var rows []sentRow
	if err := tx.WithContext(ctx).Raw(`SELECT participant, kind, attempt, sent_at FROM erasure_participants
		WHERE request_id = ? AND state = ? ORDER BY participant`, requestID, StateSent).Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("reading sent participants of %s: %w", requestID, err)
	}
	return rows, nil
}

// reschedule keeps one sweep timer per erasure, due when the earliest
// unconfirmed command's wait ends (one scheduled row per erasure instead of
// one per participant), or drops it when nothing awaits a confirmation.
func (c *Canceller) reschedule(ctx context.Context, s step) error {
	tx, requestID := s.tx, s.requestID
	if err := c.flush(ctx, s); err != nil {
		return err
	}
	rows, err := c.sentRows(ctx, tx, requestID)
	if err != nil {
		return err
	}
	if len(rows) == 0 {
		_, err := c.sched.Cancel(ctx, tx, sweepKey(requestID))
		return err
	}
	var due time.Time
	for i, r := range rows {
		if d := r.SentAt.Add(c.cfg.ResendWait(r.Attempt)); i == 0 || d.Before(due) {
			due = d
		}
	}
	return c.scheduleSweep(ctx, s, due)
}

// scheduleSweep sets the erasure's sweep timer to due.
func (c *Canceller) scheduleSweep(ctx context.Context, s step, due time.Time) error {
	m, err := message.New(TypeTimer, Timer{RequestID: s.requestID, Action: ActionSweep}, s.cause)
	if err != nil {
		return err
	}
	m.CorrelationID = s.requestID
	return c.sched.Schedule(ctx, s.tx, scheduler.Entry{Key: sweepKey(s.requestID), DeliverAt: due, Message: m})
}

// checkCompletion completes the erasure when every participant but the email
// system confirmed, and finishes it when the email system confirmed too.
// Both happen at most once: they change the locked erasure row's state.
func (c *Canceller) checkCompletion(ctx context.Context, s step) error {
	tx, requestID := s.tx, s.requestID
	if s.e.State == ErasureFinished || s.e.State == ErasureCancelled {
		return nil
	}
	var rows []row
	if s.rows != nil {
		rows = s.rows.all()
	} else if err := tx.WithContext(ctx).Raw(`SELECT participant, kind, state, attempt FROM erasure_participants
		WHERE request_id = ?`, requestID).Scan(&rows).Error; err != nil {
		return fmt.Errorf("reading participants of %s: %w", requestID, err)
	}
	var email *row
	for i, r := range rows {
		if r.Kind == KindEmail {
			email = &rows[i]
			continue
		}
		if r.State != StateErased && r.State != StateNotFound {
			return nil
		}
	}
	emailDone := email == nil || email.State == StateErased || email.State == StateNotFound
	if s.e.State == ErasureOpen {
		// One moment, read from the database's clock now rather than the
		// transaction's start (which may be long before, behind the row
		// lock), is completed_at, erasure.completed's occurred_at and the
		// start of the email system's delay: its command is never due
		// sooner than email_delay after what the audit log shows. Without
		// an email system to wait for, the same statement finishes it.
		var completedAt time.Time
		q, to := `UPDATE erasures SET state = ?, completed_at = clock_timestamp(), updated_at = now()
			WHERE request_id = ? RETURNING completed_at`, ErasureCompleted
		if emailDone {
			q, to = `UPDATE erasures SET state = ?, completed_at = clock_timestamp(), finished_at = now(), updated_at = now(),
				subject_id = '', subject_email = '', subject_phone = '', subject_identifiers = '{}'
			WHERE request_id = ? RETURNING completed_at`, ErasureFinished
		}
		if err := tx.WithContext(ctx).Raw(q, to, requestID).Scan(&completedAt).Error; err != nil {
			return fmt.Errorf("completing erasure %s: %w", requestID, err)
		}
		done, err := message.New(event.TypeErasureCompleted, event.ErasureCompleted{RequestID: requestID}, s.cause)
		if err != nil {
			return err
		}
		done.CorrelationID = requestID
		done.OccurredAt = completedAt.UTC()
		s.fx.completed = true
		s.e.State = ErasureCompleted
		if s.rows != nil {
			s.rows.state = ErasureCompleted
		}
		c.logger.InfoContext(ctx, "erasure completed", "request_id", requestID)
		if emailDone {
			return c.finished(ctx, s, done)
		}
		if err := c.outbox.Enqueue(ctx, tx, done); err != nil {
			return err
		}
		if email.State == StateWaiting {
			p, ok := c.registry.Get(email.Participant)
			if !ok {
				p = Participant{Name: email.Participant, Kind: KindEmail}
			}
			if err := c.send(ctx, s, p, 1, done.OccurredAt.Add(c.cfg.EmailDelay)); err != nil {
				return err
			}
			return c.reschedule(ctx, s)
		}
		return nil
	}
	if !emailDone {
		return nil
	}
	if err := tx.WithContext(ctx).Exec(`UPDATE erasures SET state = ?, finished_at = now(), updated_at = now(),
			subject_id = '', subject_email = '', subject_phone = '', subject_identifiers = '{}' WHERE request_id = ?`, ErasureFinished, requestID).Error; err != nil {
		return fmt.Errorf("finishing erasure %s: %w", requestID, err)
	}
	return c.finished(ctx, s)
}

// finished is what follows the erasure row's move to finished: no sweep any
// more, and erasure.finished (after the given messages) in one outbox write.
func (c *Canceller) finished(ctx context.Context, s step, before ...message.Message) error {
	if s.rows != nil {
		s.rows.state = ErasureFinished
	}
	c.logger.InfoContext(ctx, "erasure finished", "request_id", s.requestID)
	if _, err := c.sched.Cancel(ctx, s.tx, sweepKey(s.requestID)); err != nil {
		return err
	}
	fin, err := message.New(event.TypeErasureFinished, event.ErasureFinished{RequestID: s.requestID}, s.cause)
	if err != nil {
		return err
	}
	fin.CorrelationID = s.requestID
	return c.outbox.EnqueueAll(ctx, s.tx, append(before, fin))
}

// enqueueAll writes ms to the outbox in one statement.
func (c *Canceller) enqueueAll(ctx context.Context, tx *gorm.DB, ms []message.Message) error {
	return c.outbox.EnqueueAll(ctx, tx, ms)
}

// enqueue writes a message of typ about the step's erasure to the outbox.
func (c *Canceller) enqueue(ctx context.Context, s step, typ string, body any) error {
	m, err := message.New(typ, body, s.cause)
	if err != nil {
		return err
	}
	m.CorrelationID = s.requestID
	return c.outbox.Enqueue(ctx, s.tx, m)
}

// retryOrOverdue schedules attempt r.Attempt+1 after a backoff, or marks the
// participant overdue when it had every re-send already.
func (c *Canceller) retryOrOverdue(ctx context.Context, s step, r row, outcome, detail string) error {
	if r.Attempt > c.cfg.MaxResends {
		return c.markOverdue(ctx, s, r, outcome, detail)
	}
	if err := c.setState(ctx, s, r.Participant, StateRetrying, r.Attempt, outcome, detail); err != nil {
		return err
	}
	return c.scheduleTimer(ctx, s, r.Participant, ActionSend, r.Attempt+1, s.e.Now.Add(c.cfg.RetryWait(r.Attempt)))
}

// markOverdue marks participant r overdue once and says so on the bus.
func (c *Canceller) markOverdue(ctx context.Context, s step, r row, outcome, detail string) error {
	if r.State == StateOverdue {
		return nil
	}
	if err := c.setState(ctx, s, r.Participant, StateOverdue, r.Attempt, outcome, detail); err != nil {
		return err
	}
	s.fx.overdue = true
	c.logger.WarnContext(ctx, "erasure participant overdue", "request_id", s.requestID, "participant", r.Participant, "attempts", r.Attempt)
	return c.enqueue(ctx, s, event.TypeErasureOverdue, event.ErasureOverdue{RequestID: s.requestID, Participant: r.Participant})
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
