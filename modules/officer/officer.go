// Package officer is the privacy officer's domain: finding the requests that
// need attention and acting on them (retry, cancel, deny, extend, a
// participant's re-send, manual confirmation or "not applicable", dead
// letters), each action allowed by role, refused where the request's state
// does not allow it, idempotent, and recorded with the operator's name. It
// owns operator_actions and console_sessions. The HTTP layers (modules/api
// for /v1/admin, modules/adminui for /admin/) only decode and render.
package officer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/modules/audit"
	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/console"
	"github.com/gdpr-oss/gdpr/modules/erasure"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/reconcile"
	"github.com/gdpr-oss/gdpr/modules/requests"
)

// Errors the HTTP layers map to statuses with errors.Is.
var (
	// ErrNotFound: no such request (404).
	ErrNotFound = errors.New("officer: not found")
	// ErrConflict: the request's state does not allow the action (409).
	ErrConflict = errors.New("officer: the request's state does not allow this action")
	// ErrForbidden: the principal's role may not act (403).
	ErrForbidden = errors.New("officer: a viewer may not act")
	// ErrBadInput: a missing or invalid parameter (400).
	ErrBadInput = errors.New("officer: invalid input")
	// ErrUnavailable: a dependency (the broker) is down (503).
	ErrUnavailable = errors.New("officer: unavailable")
)

// Actions, as operator_actions.action and operator.action's action.
const (
	ActionRetry           = "retry"
	ActionCancel          = "cancel"
	ActionDeny            = "deny"
	ActionExtend          = "extend"
	ActionResend          = "resend"
	ActionConfirmManually = "confirm_manually"
	ActionNotApplicable   = "not_applicable"
	ActionRequeue         = "requeue_dead_letters"
)

// ReasonCodes are the reason codes each action accepts (the first is the
// default when none is given; deny needs one).
func ReasonCodes(action string) []string {
	switch action {
	case ActionDeny:
		return event.DenialCodes()
	case ActionCancel:
		return []string{"other", "withdrawn_by_subject", "duplicate", "submitted_in_error"}
	case ActionExtend:
		return []string{"complexity", "number_of_requests", "other"}
	case ActionRetry:
		return []string{"cause_fixed", "other"}
	case ActionResend:
		return []string{"no_answer", "cause_fixed", "other"}
	case ActionConfirmManually:
		return []string{"erased_by_other_means"}
	case ActionNotApplicable:
		return []string{"no_data_held", "not_in_scope", "other"}
	case ActionRequeue:
		return []string{"cause_fixed", "other"}
	}
	return nil
}

// Requests is the requests owner's store (requests.Store).
type Requests interface {
	List(ctx context.Context, f requests.Filter) (requests.Page, error)
	Counts(ctx context.Context) (map[string]int, error)
	Clients(ctx context.Context) ([]string, error)
	Daily(ctx context.Context, days int) ([]requests.Day, error)
	Detail(ctx context.Context, id string) (requests.AdminRow, []requests.Attempt, error)
	Retry(ctx context.Context, id string, within requests.Within) (requests.AdminRow, bool, error)
	Cancel(ctx context.Context, id, by, reason string, within requests.Within) (requests.AdminRow, bool, error)
	Deny(ctx context.Context, id, by, code, reason string, within requests.Within) (requests.AdminRow, bool, error)
	Extend(ctx context.Context, id, by string, until time.Time, reason string, now time.Time, within requests.Within) (requests.AdminRow, bool, error)
	// ExtendedUntilIn reads the extension Extend just set, in its transaction.
	ExtendedUntilIn(ctx context.Context, tx *gorm.DB, id string) (time.Time, error)
}

// Erasures is the canceller's part: participants and the actions on them.
type Erasures interface {
	Participants(ctx context.Context, requestID string) ([]erasure.ParticipantState, error)
	Attention(ctx context.Context, limit int) ([]erasure.AttentionRow, error)
	// AttentionRequests and AttentionCounts are the participants an
	// operator must act on, for the list's filter and counts.
	AttentionRequests(ctx context.Context) ([]string, error)
	AttentionCounts(ctx context.Context, requestIDs []string) (map[string]int, error)
	ResendWithin(ctx context.Context, requestID, participant string, within func(tx *gorm.DB) error) error
	ConfirmManually(ctx context.Context, requestID, participant, note string, within func(tx *gorm.DB) error) (bool, error)
	NotApplicable(ctx context.Context, requestID, participant, reason string, within func(tx *gorm.DB) error) (bool, error)
	CancelIn(ctx context.Context, tx *gorm.DB, requestID string) (bool, error)
}

// Timeline is the audit log's timeline of a request.
type Timeline interface {
	Timeline(ctx context.Context, requestID string) ([]audit.Event, error)
}

// Checker is the in-sync check (`gdpr reconcile`).
type Checker interface {
	Check(ctx context.Context, opts reconcile.Options) (reconcile.Result, error)
}

// DeadLetters lists and requeues dead-lettered messages (bus.Conn), as
// `gdpr dead-letters` does.
type DeadLetters interface {
	DeadLetters(ctx context.Context, limit int) ([]bus.DeadLetter, error)
	Redrive(ctx context.Context, queue string, limit int) (int, error)
}

// Outbox enqueues a message inside the caller's transaction.
type Outbox interface {
	Enqueue(ctx context.Context, tx *gorm.DB, m message.Message) error
}

// Options build a Service. Every field but DeadLetters is required.
type Options struct {
	DB          *gorm.DB
	Requests    Requests
	Erasures    Erasures
	Timeline    Timeline
	Checker     Checker
	Reconcile   reconcile.Options
	DeadLetters DeadLetters
	Outbox      Outbox
	Config      console.Config
	Logger      *slog.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Service finds requests and acts on them.
type Service struct {
	opts Options
	now  func() time.Time
}

// New returns a Service.
func New(opts Options) (*Service, error) {
	if opts.DB == nil || opts.Requests == nil || opts.Erasures == nil || opts.Timeline == nil || opts.Checker == nil ||
		opts.Outbox == nil || opts.Logger == nil {
		return nil, errors.New("officer: DB, Requests, Erasures, Timeline, Checker, Outbox and Logger are required")
	}
	s := &Service{opts: opts, now: opts.Now}
	if s.now == nil {
		s.now = time.Now
	}
	s.opts.Logger = opts.Logger.With("component", "officer")
	return s, nil
}

// Config is the console configuration the service runs with.
func (s *Service) Config() console.Config { return s.opts.Config }

// List returns one page of requests; the near-deadline windows are the
// configured ones.
func (s *Service) List(ctx context.Context, f requests.Filter) (requests.Page, error) {
	f.Near = s.opts.Config.NearDeadline.Map()
	if f.ParticipantOverdue {
		ids, err := s.opts.Erasures.AttentionRequests(ctx)
		if err != nil {
			return requests.Page{}, err
		}
		f.ParticipantOverdueIDs = ids
	}
	page, err := s.opts.Requests.List(ctx, f)
	if errors.Is(err, requests.ErrBadCursor) {
		return page, fmt.Errorf("%w: cursor: %w", ErrBadInput, err)
	}
	if err != nil {
		return page, err
	}
	ids := make([]string, 0, len(page.Requests))
	for _, r := range page.Requests {
		if r.Type == event.KindErasure {
			ids = append(ids, r.ID)
		}
	}
	counts, err := s.opts.Erasures.AttentionCounts(ctx, ids)
	if err != nil {
		return requests.Page{}, err
	}
	for i := range page.Requests {
		page.Requests[i].ParticipantsOverdue = counts[page.Requests[i].ID]
	}
	return page, nil
}

// Clients returns the API clients that submitted stored requests.
func (s *Service) Clients(ctx context.Context) ([]string, error) {
	return s.opts.Requests.Clients(ctx)
}

// Counts returns how many requests are in each state.
func (s *Service) Counts(ctx context.Context) (map[string]int, error) {
	return s.opts.Requests.Counts(ctx)
}

// Action is one recorded operator action.
type Action struct {
	Seq         int64     `json:"seq"`
	RequestID   string    `json:"request_id,omitempty"`
	Participant string    `json:"participant,omitempty"`
	Operator    string    `json:"operator"`
	Action      string    `json:"action"`
	ReasonCode  string    `json:"reason_code,omitempty"`
	At          time.Time `json:"at"`
}

// Detail is everything about one request an operator may see.
type Detail struct {
	Request      requests.AdminRow          `json:"request"`
	Attempts     []requests.Attempt         `json:"attempts"`
	Participants []erasure.ParticipantState `json:"participants"`
	Timeline     []audit.Event              `json:"timeline"`
	Actions      []Action                   `json:"actions"`
	Allowed      map[string]bool            `json:"allowed_actions"`
	Near         bool                       `json:"near_deadline"`
	Overdue      bool                       `json:"overdue"`
}

// Detail returns request id with its attempts, participants, audit
// timeline and operator actions.
func (s *Service) Detail(ctx context.Context, id string) (Detail, error) {
	row, attempts, err := s.opts.Requests.Detail(ctx, id)
	if errors.Is(err, requests.ErrNotFound) {
		return Detail{}, fmt.Errorf("%w: request %s", ErrNotFound, id)
	}
	if err != nil {
		return Detail{}, err
	}
	d := Detail{Request: row, Attempts: attempts}
	if d.Participants, err = s.opts.Erasures.Participants(ctx, id); err != nil {
		return Detail{}, err
	}
	counts, err := s.opts.Erasures.AttentionCounts(ctx, []string{id})
	if err != nil {
		return Detail{}, err
	}
	d.Request.ParticipantsOverdue = counts[id]
	if d.Timeline, err = s.opts.Timeline.Timeline(ctx, id); err != nil && !errors.Is(err, audit.ErrNoEvents) {
		return Detail{}, err
	}
	if d.Timeline == nil {
		d.Timeline = []audit.Event{}
	}
	if d.Actions, err = s.actions(ctx, id); err != nil {
		return Detail{}, err
	}
	now := s.now()
	open := isOpen(row.State)
	d.Overdue = open && !row.Deadline.After(now)
	d.Near = open && !d.Overdue && !row.Deadline.After(now.Add(s.opts.Config.NearDeadline.Map()[row.Regulation]))
	d.Allowed = allowedActions(row, now)
	return d, nil
}

func isOpen(state requests.State) bool {
	return slices.Contains(requests.OfficerOpenStates(), state)
}

// allowedActions is what the request's state allows (the console shows
// only these buttons; the actions themselves check again under the lock).
func allowedActions(r requests.AdminRow, now time.Time) map[string]bool {
	extendable := isOpen(r.State) && r.ExtendedUntil == nil && now.Before(r.DueAt) && r.Regulation != "lgpd"
	return map[string]bool{
		ActionRetry:           r.State == requests.StateFailed,
		ActionCancel:          r.State == requests.StateReceived || r.State == requests.StateFailed || r.State == requests.StateHandedOver,
		ActionDeny:            r.State == requests.StateReceived || r.State == requests.StateFailed,
		ActionExtend:          extendable,
		ActionResend:          r.State == requests.StateHandedOver,
		ActionConfirmManually: r.State == requests.StateHandedOver,
		ActionNotApplicable:   r.State == requests.StateHandedOver,
	}
}

func (s *Service) actions(ctx context.Context, id string) ([]Action, error) {
	out := []Action{}
	if err := s.opts.DB.WithContext(ctx).Raw(`SELECT seq, request_id::text AS request_id, participant, operator, action, reason_code, at
		FROM operator_actions WHERE request_id = ? ORDER BY seq`, id).Scan(&out).Error; err != nil {
		return nil, fmt.Errorf("reading operator actions of %s: %w", id, err)
	}
	return out, nil
}

// record writes the operator's action to operator_actions and puts
// operator.action on the bus (for the audit log), inside tx.
func (s *Service) record(ctx context.Context, tx *gorm.DB, p console.Principal, a event.OperatorAction) error {
	a.Operator = p.Name
	var reqID any
	if a.RequestID != "" {
		reqID = a.RequestID
	}
	if err := tx.WithContext(ctx).Exec(`INSERT INTO operator_actions (request_id, participant, operator, action, reason_code)
		VALUES (?, ?, ?, ?, ?)`, reqID, a.Participant, a.Operator, a.Action, a.ReasonCode).Error; err != nil {
		return fmt.Errorf("recording operator action %s: %w", a.Action, err)
	}
	m, err := message.New(event.TypeOperatorAction, a, nil)
	if err != nil {
		return err
	}
	m.CorrelationID = a.RequestID
	return s.opts.Outbox.Enqueue(ctx, tx, m)
}

func (s *Service) enqueue(ctx context.Context, tx *gorm.DB, typ, requestID string, body any) error {
	m, err := message.New(typ, body, nil)
	if err != nil {
		return err
	}
	m.CorrelationID = requestID
	return s.opts.Outbox.Enqueue(ctx, tx, m)
}

// Input is what an operator gives with an action.
type Input struct {
	ReasonCode string
	// Reason is free text: stored with the request (and emailed to the
	// subject for deny and extend), never in the audit log.
	Reason string
	// Until is the extended deadline (zero: the latest the regulation allows).
	Until time.Time
}

// Result is the outcome of an action.
type Result struct {
	// Changed is false when the action's effect already held: nothing
	// was done again and nothing recorded.
	Changed bool `json:"changed"`
	// Request is the request after the action.
	Request *requests.AdminRow `json:"request,omitempty"`
}

const maxReasonLen = 2000

func (s *Service) check(p console.Principal, action string, in *Input, needReason bool) error {
	if !p.CanAct() {
		return fmt.Errorf("%w: %s is a %s", ErrForbidden, p.Name, p.Role)
	}
	codes := ReasonCodes(action)
	if in.ReasonCode == "" {
		if action == ActionDeny {
			return fmt.Errorf("%w: reason_code is required (one of %s)", ErrBadInput, strings.Join(codes, ", "))
		}
		in.ReasonCode = codes[0]
	}
	ok := false
	for _, c := range codes {
		ok = ok || c == in.ReasonCode
	}
	if !ok {
		return fmt.Errorf("%w: reason_code must be one of %s", ErrBadInput, strings.Join(codes, ", "))
	}
	in.Reason = strings.TrimSpace(in.Reason)
	if needReason && in.Reason == "" {
		return fmt.Errorf("%w: reason is required", ErrBadInput)
	}
	if len(in.Reason) > maxReasonLen {
		return fmt.Errorf("%w: reason must be at most %d characters", ErrBadInput, maxReasonLen)
	}
	return nil
}

// mapErr turns the owners' errors into the officer's.
func mapErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, requests.ErrNotFound), errors.Is(err, erasure.ErrUnknownRequest), errors.Is(err, erasure.ErrUnknownParty):
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	case errors.Is(err, requests.ErrConflict), errors.Is(err, erasure.ErrNotOpen), errors.Is(err, erasure.ErrNotResendable):
		return fmt.Errorf("%w: %w", ErrConflict, err)
	case errors.Is(err, requests.ErrBadInput):
		return fmt.Errorf("%w: %w", ErrBadInput, err)
	}
	return err
}

func (s *Service) done(ctx context.Context, p console.Principal, action, id, participant string, changed bool) (Result, error) {
	if changed {
		s.opts.Logger.InfoContext(ctx, "operator action", "operator", p.Name, "action", action, "request_id", id, "participant", participant)
	}
	row, _, err := s.opts.Requests.Detail(ctx, id)
	if err != nil {
		return Result{Changed: changed}, nil //nolint:nilerr // the action committed; only the echo of the row failed
	}
	return Result{Changed: changed, Request: &row}, nil
}

// Retry puts a failed request back to work in place (same id, same
// due_at, attempts from zero). Retrying a request an operator retried
// already, which is back at work, changes nothing.
func (s *Service) Retry(ctx context.Context, p console.Principal, id string, in Input) (Result, error) {
	if err := s.check(p, ActionRetry, &in, false); err != nil {
		return Result{}, err
	}
	_, changed, err := s.opts.Requests.Retry(ctx, id, func(tx *gorm.DB, _ requests.AdminRow) error {
		return s.record(ctx, tx, p, event.OperatorAction{RequestID: id, Action: ActionRetry, ReasonCode: in.ReasonCode})
	})
	if errors.Is(err, requests.ErrConflict) {
		if again, aerr := s.retriedAlready(ctx, id); aerr == nil && again {
			return s.done(ctx, p, ActionRetry, id, "", false)
		}
	}
	if err != nil {
		return Result{}, mapErr(err)
	}
	return s.done(ctx, p, ActionRetry, id, "", changed)
}

// retriedAlready: the last action on id was a retry and the request is at
// work (not failed again, not ended otherwise).
func (s *Service) retriedAlready(ctx context.Context, id string) (bool, error) {
	row, _, err := s.opts.Requests.Detail(ctx, id)
	if err != nil {
		return false, err
	}
	if row.State != requests.StateReceived && row.State != requests.StateProcessing && row.State != requests.StateHandedOver {
		return false, nil
	}
	acts, err := s.actions(ctx, id)
	if err != nil || len(acts) == 0 {
		return false, err
	}
	return acts[len(acts)-1].Action == ActionRetry, nil
}

// Cancel ends a request with a reason. For an erasure handed over already,
// the canceller stops sending anything more in the same transaction
// (erasure.Canceller.CancelIn; docs/console.md).
func (s *Service) Cancel(ctx context.Context, p console.Principal, id string, in Input) (Result, error) {
	if err := s.check(p, ActionCancel, &in, true); err != nil {
		return Result{}, err
	}
	_, changed, err := s.opts.Requests.Cancel(ctx, id, p.Name, in.Reason, func(tx *gorm.DB, before requests.AdminRow) error {
		if before.Type == event.KindErasure && before.State == requests.StateHandedOver {
			if _, err := s.opts.Erasures.CancelIn(ctx, tx, id); err != nil {
				return err
			}
		}
		return s.record(ctx, tx, p, event.OperatorAction{RequestID: id, Action: ActionCancel, ReasonCode: in.ReasonCode})
	})
	if err != nil {
		return Result{}, mapErr(err)
	}
	return s.done(ctx, p, ActionCancel, id, "", changed)
}

// Deny refuses a request with a reason code and a text; the subject is
// emailed both and their right to complain to a supervisory authority.
func (s *Service) Deny(ctx context.Context, p console.Principal, id string, in Input) (Result, error) {
	if err := s.check(p, ActionDeny, &in, true); err != nil {
		return Result{}, err
	}
	_, changed, err := s.opts.Requests.Deny(ctx, id, p.Name, in.ReasonCode, in.Reason, func(tx *gorm.DB, before requests.AdminRow) error {
		if err := s.enqueue(ctx, tx, event.TypeRequestDenied, id, event.RequestDenied{
			RequestID: id, Code: in.ReasonCode, Reason: in.Reason, Regulation: before.Regulation}); err != nil {
			return err
		}
		return s.record(ctx, tx, p, event.OperatorAction{RequestID: id, Action: ActionDeny, ReasonCode: in.ReasonCode})
	})
	if err != nil {
		return Result{}, mapErr(err)
	}
	return s.done(ctx, p, ActionDeny, id, "", changed)
}

// Extend extends the deadline once, before the original one passes, by
// up to what the regulation allows; the subject is emailed the new
// deadline and the reason.
func (s *Service) Extend(ctx context.Context, p console.Principal, id string, in Input) (Result, error) {
	if err := s.check(p, ActionExtend, &in, true); err != nil {
		return Result{}, err
	}
	_, changed, err := s.opts.Requests.Extend(ctx, id, p.Name, in.Until, in.Reason, s.now(), func(tx *gorm.DB, before requests.AdminRow) error {
		until, err := s.opts.Requests.ExtendedUntilIn(ctx, tx, id)
		if err != nil {
			return err
		}
		if err := s.enqueue(ctx, tx, event.TypeRequestExtended, id, event.RequestExtended{
			RequestID: id, ExtendedUntil: until.UTC(), Reason: in.Reason, Regulation: before.Regulation}); err != nil {
			return err
		}
		return s.record(ctx, tx, p, event.OperatorAction{RequestID: id, Action: ActionExtend, ReasonCode: in.ReasonCode})
	})
	if err != nil {
		return Result{}, mapErr(err)
	}
	return s.done(ctx, p, ActionExtend, id, "", changed)
}

// participantAction checks that the request is an erasure handed over to
// the canceller, the only state its participants can be acted on in.
func (s *Service) participantAction(ctx context.Context, id string) error {
	row, _, err := s.opts.Requests.Detail(ctx, id)
	if err != nil {
		return mapErr(err)
	}
	if row.Type != event.KindErasure || row.State != requests.StateHandedOver {
		return fmt.Errorf("%w: the request is a %s request in state %s, not an erasure handed over", ErrConflict, row.Type, row.State)
	}
	return nil
}

// Resend sends participant's command (or makes its HTTP call) again now.
func (s *Service) Resend(ctx context.Context, p console.Principal, id, participant string, in Input) (Result, error) {
	if err := s.check(p, ActionResend, &in, false); err != nil {
		return Result{}, err
	}
	if err := s.participantAction(ctx, id); err != nil {
		return Result{}, err
	}
	err := s.opts.Erasures.ResendWithin(ctx, id, participant, func(tx *gorm.DB) error {
		return s.record(ctx, tx, p, event.OperatorAction{RequestID: id, Participant: participant, Action: ActionResend, ReasonCode: in.ReasonCode})
	})
	if err != nil {
		return Result{}, mapErr(err)
	}
	return s.done(ctx, p, ActionResend, id, participant, true)
}

// ConfirmManually records that participant erased by other means, with the
// operator's note (the proof of a manual erasure).
func (s *Service) ConfirmManually(ctx context.Context, p console.Principal, id, participant string, in Input) (Result, error) {
	if err := s.check(p, ActionConfirmManually, &in, true); err != nil {
		return Result{}, err
	}
	if err := s.participantAction(ctx, id); err != nil {
		return s.idempotentParticipant(ctx, p, id, participant, erasure.StateErased, erasure.OutcomeManual, ActionConfirmManually, err)
	}
	changed, err := s.opts.Erasures.ConfirmManually(ctx, id, participant, "confirmed manually by "+p.Name+": "+in.Reason, func(tx *gorm.DB) error {
		return s.record(ctx, tx, p, event.OperatorAction{RequestID: id, Participant: participant, Action: ActionConfirmManually, ReasonCode: in.ReasonCode})
	})
	if err != nil {
		return Result{}, mapErr(err)
	}
	return s.done(ctx, p, ActionConfirmManually, id, participant, changed)
}

// NotApplicable records that participant holds nothing of this subject.
func (s *Service) NotApplicable(ctx context.Context, p console.Principal, id, participant string, in Input) (Result, error) {
	if err := s.check(p, ActionNotApplicable, &in, true); err != nil {
		return Result{}, err
	}
	if err := s.participantAction(ctx, id); err != nil {
		return s.idempotentParticipant(ctx, p, id, participant, erasure.StateNotFound, erasure.OutcomeNotApplicable, ActionNotApplicable, err)
	}
	changed, err := s.opts.Erasures.NotApplicable(ctx, id, participant, "not applicable, by "+p.Name+": "+in.Reason, func(tx *gorm.DB) error {
		return s.record(ctx, tx, p, event.OperatorAction{RequestID: id, Participant: participant, Action: ActionNotApplicable, ReasonCode: in.ReasonCode})
	})
	if err != nil {
		return Result{}, mapErr(err)
	}
	return s.done(ctx, p, ActionNotApplicable, id, participant, changed)
}

// idempotentParticipant: the last manual confirmation completed the
// erasure, so the request is no longer handed over; repeating the same
// confirmation changes nothing rather than being refused.
func (s *Service) idempotentParticipant(ctx context.Context, p console.Principal, id, participant string, state erasure.State, outcome, action string, stateErr error) (Result, error) {
	parts, err := s.opts.Erasures.Participants(ctx, id)
	if err != nil {
		return Result{}, stateErr
	}
	for _, ps := range parts {
		if ps.Participant == participant && ps.State == state && ps.LastOutcome == outcome {
			return s.done(ctx, p, action, id, participant, false)
		}
	}
	return Result{}, stateErr
}

// DeadLetterList lists up to limit dead-lettered messages, oldest first.
func (s *Service) DeadLetterList(ctx context.Context, limit int) ([]bus.DeadLetter, error) {
	if s.opts.DeadLetters == nil {
		return nil, fmt.Errorf("%w: no broker connection", ErrUnavailable)
	}
	dls, err := s.opts.DeadLetters.DeadLetters(ctx, limit)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if dls == nil {
		dls = []bus.DeadLetter{}
	}
	return dls, nil
}

// Requeue moves up to limit dead letters (of queue, when set) back to the
// queues they came from, and records that the operator did.
func (s *Service) Requeue(ctx context.Context, p console.Principal, queue string, limit int, in Input) (int, error) {
	if err := s.check(p, ActionRequeue, &in, false); err != nil {
		return 0, err
	}
	if s.opts.DeadLetters == nil {
		return 0, fmt.Errorf("%w: no broker connection", ErrUnavailable)
	}
	if limit < 1 || limit > 10000 {
		return 0, fmt.Errorf("%w: limit must be between 1 and 10000", ErrBadInput)
	}
	moved, err := s.opts.DeadLetters.Redrive(ctx, queue, limit)
	if moved > 0 || err == nil {
		rerr := s.opts.DB.WithContext(context.WithoutCancel(ctx)).Transaction(func(tx *gorm.DB) error {
			return s.record(ctx, tx, p, event.OperatorAction{Action: ActionRequeue, ReasonCode: in.ReasonCode})
		})
		if rerr != nil {
			return moved, rerr
		}
		s.opts.Logger.InfoContext(ctx, "operator action", "operator", p.Name, "action", ActionRequeue, "queue", queue, "moved", moved)
	}
	if err != nil {
		return moved, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return moved, nil
}

// Dashboard is what the console's first page shows.
type Dashboard struct {
	Counts       map[string]int         `json:"counts"`
	InSync       reconcile.Result       `json:"in_sync"`
	Near         []requests.AdminRow    `json:"near_deadline"`
	Overdue      []requests.AdminRow    `json:"overdue"`
	Participants []erasure.AttentionRow `json:"participants_overdue"`
	DeadLetters  []bus.DeadLetter       `json:"dead_letters"`
	// DeadLettersError says why dead letters could not be listed.
	DeadLettersError string         `json:"dead_letters_error,omitempty"`
	Daily            []requests.Day `json:"daily"`
}

// Dashboard gathers the dashboard.
func (s *Service) Dashboard(ctx context.Context) (Dashboard, error) {
	var d Dashboard
	var err error
	if d.Counts, err = s.Counts(ctx); err != nil {
		return d, err
	}
	if d.InSync, err = s.opts.Checker.Check(ctx, s.opts.Reconcile); err != nil {
		return d, err
	}
	near, err := s.List(ctx, requests.Filter{NearDeadline: true, Limit: 20})
	if err != nil {
		return d, err
	}
	d.Near = near.Requests
	over, err := s.List(ctx, requests.Filter{Overdue: true, Limit: 20})
	if err != nil {
		return d, err
	}
	d.Overdue = over.Requests
	if d.Participants, err = s.opts.Erasures.Attention(ctx, 20); err != nil {
		return d, err
	}
	if d.DeadLetters, err = s.DeadLetterList(ctx, 20); err != nil {
		d.DeadLettersError = "the broker could not be asked"
		d.DeadLetters = []bus.DeadLetter{}
	}
	if d.Daily, err = s.opts.Requests.Daily(ctx, 14); err != nil {
		return d, err
	}
	return d, nil
}
