package erasure

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/expand"
	"github.com/gdpr-oss/gdpr/modules/inbox"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/scheduler"
	"github.com/gdpr-oss/gdpr/modules/strictjson"
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
	// confirmations groups the confirmations of one erasure that arrive
	// while one of its transactions runs into the next one.
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
		confirmations: &confirmationGroups{running: map[string]*confirmationGroup{}},
	}, nil
}

// Registry returns the configured participants.
func (c *Canceller) Registry() *Registry { return c.registry }

// row is one erasure_participants row.
type row struct {
	Participant string
	Kind        string
	State       string
	Attempt     int
}

// erasureRow is the locked erasures row plus the database's clock.
type erasureRow struct {
	State              string
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

// HandleRequested fans an erasure out: one participant row per registered
// participant, commands for the AMQP ones, calls scheduled for the HTTP ones,
// all in one transaction with the inbox claim, so a redelivery creates nothing twice.
func (c *Canceller) HandleRequested(ctx context.Context, m message.Message) error {
	var body event.ErasureRequested
	if err := m.Decode(&body); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if _, err := uuid.Parse(body.RequestID); err != nil {
		return fmt.Errorf("%w: request_id %q is not a UUID", ErrInvalid, body.RequestID)
	}
	// Intake applies the same rules; a message can come from elsewhere.
	if err := body.Subject.Check(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if m.ID == "" {
		return fmt.Errorf("%w: message_id is missing", ErrInvalid)
	}
	var fx effects
	err := c.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		fresh, err := inbox.Claim(ctx, tx, inboxRequested, m.ID)
		if err != nil || !fresh {
			return err
		}
		res := tx.Exec(`INSERT INTO erasures (request_id, state, subject_id, subject_email, subject_phone, subject_identifiers)
			VALUES (?, 'open', ?, ?, ?, ?::jsonb) ON CONFLICT (request_id) DO NOTHING`,
			body.RequestID, body.Subject.ID, body.Subject.Email, body.Subject.Phone, identifiersJSON(body.Subject.Identifiers))
		if res.Error != nil {
			return fmt.Errorf("storing erasure %s: %w", body.RequestID, res.Error)
		}
		if res.RowsAffected == 0 {
			// The same request under another message id: already fanned out.
			c.logger.InfoContext(ctx, "erasure already known", "request_id", body.RequestID)
			return nil
		}
		fx.requested = true
		e, err := c.lock(ctx, tx, body.RequestID)
		if err != nil {
			return err
		}
		if err := c.insertParticipants(ctx, tx, body.RequestID, body.Subject, e.Now); err != nil {
			return err
		}
		s := step{tx: tx, e: e, requestID: body.RequestID, cause: &m, fx: &fx}
		for _, p := range c.registry.All() {
			if n := c.registry.missing(p.Name, body.Subject); n != "" {
				c.logger.WarnContext(ctx, "erasure participant cannot erase; operator action needed",
					"request_id", body.RequestID, "participant", p.Name, "missing", n)
				continue
			}
			switch p.Kind {
			case KindAMQP:
				if err := c.enqueueCommand(ctx, s, p.Name, 1, e.Now); err != nil {
					return err
				}
			case KindHTTP:
				if err := c.scheduleTimer(ctx, s, p.Name, ActionSend, 1, e.Now); err != nil {
					return err
				}
			}
		}
		if err := c.checkCompletion(ctx, s); err != nil {
			return err
		}
		return c.reschedule(ctx, s)
	})
	if err != nil {
		return fmt.Errorf("fanning out erasure %s: %w", body.RequestID, err)
	}
	c.apply(fx)
	if fx.requested {
		c.logger.InfoContext(ctx, "erasure fanned out", "request_id", body.RequestID, "participants", len(c.registry.All()))
	}
	return nil
}

// insertParticipants creates every participant's row in one statement: the
// AMQP ones already as sent (their commands commit in the same transaction),
// those that need an identifier the subject lacks as cannot_erase (they are
// never commanded).
func (c *Canceller) insertParticipants(ctx context.Context, tx *gorm.DB, requestID string, subject event.Subject, now time.Time) error {
	ps := c.registry.All()
	if len(ps) == 0 {
		return nil
	}
	var sb strings.Builder
	args := make([]any, 0, len(ps)*7)
	sb.WriteString(`INSERT INTO erasure_participants (request_id, participant, kind, state, attempt, sent_at, detail) VALUES `)
	for i, p := range ps {
		if i > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString("(?, ?, ?, ?, ?, ?, ?)")
		state, attempt, sentAt, detail := StatePending, 0, (*time.Time)(nil), ""
		switch p.Kind {
		case KindEmail:
			state = StateWaiting
		case KindAMQP:
			state, attempt, sentAt = StateSent, 1, &now
		}
		if n := c.registry.missing(p.Name, subject); n != "" {
			state, attempt, sentAt, detail = StateCannotErase, 0, nil, DetailMissingIdentifier+" {"+n+"}"
		}
		args = append(args, requestID, p.Name, p.Kind, state, attempt, sentAt, detail)
	}
	// A conflict here would be a bug (the erasure row is new); let it fail loudly.
	if err := tx.WithContext(ctx).Exec(sb.String(), args...).Error; err != nil {
		return fmt.Errorf("creating participants of %s: %w", requestID, err)
	}
	return nil
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

func (c *Canceller) setState(ctx context.Context, s step, name, state string, attempt int, outcome, detail string) error {
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
	if err := c.enqueueCommand(ctx, s, p.Name, n, at); err != nil {
		return err
	}
	if err := s.tx.WithContext(ctx).Exec(`UPDATE erasure_participants SET state = 'sent', attempt = ?, sent_at = ?, updated_at = now()
		WHERE request_id = ? AND participant = ?`, n, at, s.requestID, p.Name).Error; err != nil {
		return fmt.Errorf("marking %s of %s sent: %w", p.Name, s.requestID, err)
	}
	return nil
}

// enqueueCommand schedules attempt n's command to be published at `at`.
func (c *Canceller) enqueueCommand(ctx context.Context, s step, name string, n int, at time.Time) (err error) {
	requestID, e := s.requestID, s.e
	ctx, span := startCommandSpan(ctx, requestID, name, n)
	defer func() { endCommandSpan(span, err) }()
	cmd, err := message.New(event.TypeErasureCommand, event.ErasureCommand{
		Version: 1, RequestID: requestID, Participant: name,
		Subject: e.subject(), Attempt: n,
	}, s.cause)
	if err != nil {
		return err
	}
	cmd.RoutingKey = CommandRoutingKey(name)
	cmd.CorrelationID = requestID
	return c.deliver(ctx, s.tx, timerKey(requestID, name, "command", n), at, e.Now, cmd)
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
	m, err := message.New(TypeTimer, Timer{RequestID: s.requestID, Participant: participant, Action: action, Attempt: n}, s.cause)
	if err != nil {
		return err
	}
	m.CorrelationID = s.requestID
	return c.deliver(ctx, s.tx, timerKey(s.requestID, participant, action, n), at, s.e.Now, m)
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
		WHERE request_id = ? AND state = 'sent' ORDER BY participant`, requestID).Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("reading sent participants of %s: %w", requestID, err)
	}
	return rows, nil
}

// reschedule keeps one sweep timer per erasure, due when the earliest
// unconfirmed command's wait ends (one scheduled row per erasure instead of
// one per participant), or drops it when nothing awaits a confirmation.
func (c *Canceller) reschedule(ctx context.Context, s step) error {
	tx, requestID := s.tx, s.requestID
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
	m, err := message.New(TypeTimer, Timer{RequestID: requestID, Action: ActionSweep}, s.cause)
	if err != nil {
		return err
	}
	m.CorrelationID = requestID
	return c.sched.Schedule(ctx, tx, scheduler.Entry{Key: sweepKey(requestID), DeliverAt: due, Message: m})
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
	if err := tx.WithContext(ctx).Raw(`SELECT participant, kind, state, attempt FROM erasure_participants
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
	if s.e.State == ErasureOpen {
		// One moment, read from the database's clock now rather than the
		// transaction's start (which may be long before, behind the row
		// lock), is completed_at, erasure.completed's occurred_at and the
		// start of the email system's delay: its command is never due
		// sooner than email_delay after what the audit log shows.
		var completedAt time.Time
		if err := tx.WithContext(ctx).Raw(`UPDATE erasures SET state = 'completed', completed_at = clock_timestamp(), updated_at = now()
			WHERE request_id = ? RETURNING completed_at`, requestID).Scan(&completedAt).Error; err != nil {
			return fmt.Errorf("completing erasure %s: %w", requestID, err)
		}
		done, err := message.New(event.TypeErasureCompleted, event.ErasureCompleted{RequestID: requestID}, s.cause)
		if err != nil {
			return err
		}
		done.CorrelationID = requestID
		done.OccurredAt = completedAt.UTC()
		if err := c.outbox.Enqueue(ctx, tx, done); err != nil {
			return err
		}
		s.fx.completed = true
		s.e.State = ErasureCompleted
		c.logger.InfoContext(ctx, "erasure completed", "request_id", requestID)
		if email != nil && email.State == StateWaiting {
			p, ok := c.registry.Get(email.Participant)
			if !ok {
				p = Participant{Name: email.Participant, Kind: KindEmail}
			}
			if err := c.send(ctx, s, p, 1, done.OccurredAt.Add(c.cfg.EmailDelay)); err != nil {
				return err
			}
			return c.reschedule(ctx, s)
		}
	}
	if email != nil && email.State != StateErased && email.State != StateNotFound {
		return nil
	}
	if err := tx.WithContext(ctx).Exec(`UPDATE erasures SET state = 'finished', finished_at = now(), updated_at = now(),
			subject_id = '', subject_email = '', subject_phone = '', subject_identifiers = '{}' WHERE request_id = ?`, requestID).Error; err != nil {
		return fmt.Errorf("finishing erasure %s: %w", requestID, err)
	}
	c.logger.InfoContext(ctx, "erasure finished", "request_id", requestID)
	if _, err := c.sched.Cancel(ctx, tx, sweepKey(requestID)); err != nil {
		return err
	}
	return c.enqueue(ctx, s, event.TypeErasureFinished, event.ErasureFinished{RequestID: requestID})
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

// HandleConfirmed records a participant's confirmation. A duplicate changes
// nothing; "failed" schedules a re-send with backoff until max_resends.
func (c *Canceller) HandleConfirmed(ctx context.Context, m message.Message) error {
	var body event.ErasureConfirmed
	// Confirmations come from participants, outside this service: a repeated
	// member ("outcome":"erased","outcome":"failed") or a miscased one would
	// otherwise be taken silently, the last one winning.
	if err := strictjson.Check(m.Body, &body); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := m.Decode(&body); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	switch {
	case m.ID == "":
		return fmt.Errorf("%w: message_id is missing", ErrInvalid)
	case body.Version != 1:
		return fmt.Errorf("%w: version must be 1, got %d", ErrInvalid, body.Version)
	case body.Participant == "":
		return fmt.Errorf("%w: participant is missing", ErrInvalid)
	}
	if _, err := uuid.Parse(body.RequestID); err != nil {
		return fmt.Errorf("%w: request_id %q is not a UUID", ErrInvalid, body.RequestID)
	}
	switch body.Outcome {
	case event.OutcomeErased, event.OutcomeNotFound, event.OutcomeFailed, event.OutcomeCannotErase:
	default:
		return fmt.Errorf("%w: outcome must be erased, not_found, failed or cannot_erase, got %q", ErrInvalid, body.Outcome)
	}
	if _, ok := c.registry.Get(body.Participant); !ok {
		return fmt.Errorf("%w: %q", ErrUnknownParty, body.Participant)
	}
	return c.confirmations.submit(ctx, c, &confirmation{m: m, body: body})
}

// confirm applies one participant's confirmation to its row r.
func (c *Canceller) confirm(ctx context.Context, s step, body event.ErasureConfirmed, r row) error {
	if r.State == StateErased || r.State == StateNotFound {
		c.logger.InfoContext(ctx, "duplicate confirmation ignored", "request_id", body.RequestID, "participant", body.Participant)
		return nil
	}
	switch body.Outcome {
	case event.OutcomeErased, event.OutcomeNotFound:
		if err := c.setState(ctx, s, r.Participant, body.Outcome, r.Attempt, body.Outcome, body.Detail); err != nil {
			return err
		}
		s.fx.confirmed = append(s.fx.confirmed, r.Participant+"\x00"+body.Outcome)
		return c.checkCompletion(ctx, s)
	case event.OutcomeCannotErase:
		// Not retried: the participant cannot find the subject by what the
		// command holds, and asking again holds the same. An operator erases
		// by other means and confirms; the erasure stays open until then.
		if body.Attempt != 0 && body.Attempt < r.Attempt {
			return nil
		}
		s.fx.confirmed = append(s.fx.confirmed, r.Participant+"\x00"+body.Outcome)
		c.logger.WarnContext(ctx, "erasure participant cannot erase; operator action needed",
			"request_id", body.RequestID, "participant", r.Participant)
		detail := body.Detail
		if detail == "" {
			detail = DetailCannotFind
		}
		return c.setState(ctx, s, r.Participant, StateCannotErase, r.Attempt, body.Outcome, detail)
	}
	// failed
	s.fx.confirmed = append(s.fx.confirmed, r.Participant+"\x00"+body.Outcome)
	if body.Attempt != 0 && body.Attempt < r.Attempt {
		c.logger.InfoContext(ctx, "failure of an older attempt ignored", "request_id", body.RequestID, "participant", r.Participant, "attempt", body.Attempt)
		return nil
	}
	if r.State != StateSent && r.State != StateOverdue {
		// Already retrying (or never sent): the next attempt is scheduled.
		return nil
	}
	return c.retryOrOverdue(ctx, s, r, event.OutcomeFailed, body.Detail)
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

// HandleTimer runs a scheduled send (a re-send after a failure, or an HTTP
// call) or sweeps an erasure for participants whose wait for a confirmation
// is over. A send for an attempt that is no longer the next one is stale and
// changes nothing.
func (c *Canceller) HandleTimer(ctx context.Context, m message.Message) error {
	var t Timer
	if err := m.Decode(&t); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if _, err := uuid.Parse(t.RequestID); err != nil {
		return fmt.Errorf("%w: request_id %q is not a UUID", ErrInvalid, t.RequestID)
	}
	if t.Action == ActionSweep {
		return c.transition(ctx, t, &m, func(s step, _ row) error {
			return c.sweep(ctx, s)
		})
	}
	if t.Action != ActionSend {
		return fmt.Errorf("%w: unknown timer action %q", ErrInvalid, t.Action)
	}
	p, ok := c.registry.Get(t.Participant)
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownParty, t.Participant)
	}
	if t.Attempt < 1 {
		return fmt.Errorf("%w: attempt must be >= 1, got %d", ErrInvalid, t.Attempt)
	}
	if p.Kind == KindHTTP {
		return c.call(ctx, m, t, p)
	}
	return c.transition(ctx, t, &m, func(s step, r row) error {
		if r.Attempt != t.Attempt-1 || (r.State != StateRetrying && r.State != StatePending) {
			return nil
		}
		if err := c.send(ctx, s, p, t.Attempt, s.e.Now); err != nil {
			return err
		}
		return c.reschedule(ctx, s)
	})
}

// sweep re-sends to every participant whose wait for a confirmation is
// over, or marks it overdue after its last re-send.
func (c *Canceller) sweep(ctx context.Context, s step) error {
	rows, err := c.sentRows(ctx, s.tx, s.requestID)
	if err != nil {
		return err
	}
	for _, r := range rows {
		if r.SentAt.Add(c.cfg.ResendWait(r.Attempt)).After(s.e.Now) {
			continue
		}
		cur := row{Participant: r.Participant, Kind: r.Kind, State: StateSent, Attempt: r.Attempt}
		if r.Attempt > c.cfg.MaxResends {
			if err := c.markOverdue(ctx, s, cur, "", "no confirmation after "+strconv.Itoa(r.Attempt)+" commands"); err != nil {
				return err
			}
			continue
		}
		p, ok := c.registry.Get(r.Participant)
		if !ok {
			// Unregistered since the fan-out: keep it visible instead of guessing.
			if err := c.markOverdue(ctx, s, cur, "", "participant no longer registered"); err != nil {
				return err
			}
			continue
		}
		c.logger.InfoContext(ctx, "participant silent; re-sending", "request_id", s.requestID, "participant", r.Participant, "attempt", r.Attempt+1)
		if err := c.send(ctx, s, p, r.Attempt+1, s.e.Now); err != nil {
			return err
		}
	}
	return c.reschedule(ctx, s)
}

// transition runs fn on the locked erasure and, for a participant's timer,
// its row.
func (c *Canceller) transition(ctx context.Context, t Timer, cause *message.Message, fn func(s step, r row) error) error {
	var fx effects
	err := c.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		e, r, ok, err := c.lockParticipant(ctx, tx, t.RequestID, t.Participant)
		if err != nil {
			return err
		}
		if e.State == ErasureFinished || e.State == ErasureCancelled {
			// Cancelled by an operator: no timer sends anything any more.
			return nil
		}
		if !ok && t.Participant != "" {
			return fmt.Errorf("%w: %q is not a participant of %s", ErrUnknownParty, t.Participant, t.RequestID)
		}
		return fn(step{tx: tx, e: e, requestID: t.RequestID, cause: cause, fx: &fx}, r)
	})
	if err != nil {
		return fmt.Errorf("%s timer of %s for %q: %w", t.Action, t.RequestID, t.Participant, err)
	}
	c.apply(fx)
	return nil
}

// Resend is the operator's action on an overdue, failed or silent
// participant: it sends a new command (or makes a new HTTP call) now, with
// the usual timeout and re-sends after it.
func (c *Canceller) Resend(ctx context.Context, requestID, participant string) error {
	return c.ResendWithin(ctx, requestID, participant, nil)
}

// ResendWithin is Resend; within, when set, runs in the same transaction
// once the re-send is recorded (the operator's audit record), so both commit
// or neither does.
func (c *Canceller) ResendWithin(ctx context.Context, requestID, participant string, within func(tx *gorm.DB) error) error {
	p, ok := c.registry.Get(participant)
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownParty, participant)
	}
	t := Timer{RequestID: requestID, Participant: participant, Action: ActionSend}
	cause, err := message.New("erasure.resend", t, nil)
	if err != nil {
		return err
	}
	cause.CorrelationID = requestID
	var stateErr error
	err = c.transition(ctx, t, &cause, func(s step, r row) error {
		switch r.State {
		case StateOverdue, StateFailed, StateSent, StateRetrying:
		default:
			stateErr = fmt.Errorf("%w: %s is %s", ErrNotResendable, participant, r.State)
			return nil
		}
		if within != nil {
			if err := within(s.tx); err != nil {
				return err
			}
		}
		if p.Kind == KindHTTP {
			if err := c.setState(ctx, s, participant, StateRetrying, r.Attempt, "", "re-sent by an operator"); err != nil {
				return err
			}
			// Replaces a pending retry of the same attempt, due now.
			return c.scheduleTimer(ctx, s, participant, ActionSend, r.Attempt+1, s.e.Now)
		}
		// A pending retry of this attempt would be stale now.
		if _, err := c.sched.Cancel(ctx, s.tx, timerKey(requestID, participant, ActionSend, r.Attempt+1)); err != nil {
			return err
		}
		if err := c.send(ctx, s, p, r.Attempt+1, s.e.Now); err != nil {
			return err
		}
		return c.reschedule(ctx, s)
	})
	if err != nil {
		return err
	}
	if stateErr != nil {
		return stateErr
	}
	c.logger.InfoContext(ctx, "participant re-sent by operator", "request_id", requestID, "participant", participant)
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
