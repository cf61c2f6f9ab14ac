package requests

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/modules/deadline"
	"github.com/gdpr-oss/gdpr/modules/requests/record"
)

// The requests table as operators see and change it (modules/officer): more
// of the requests module's Store. The SQL stays here, with the table's
// owner; the officer decides who may do what and records it.

// ErrNotFound means no request has that id.
var ErrNotFound = errors.New("requests: no such request")

// ErrConflict means the request's state (or its history) does not allow the action.
var ErrConflict = errors.New("requests: the request's state does not allow this")

// OfficerOpenStates are the states of a request that still owes the subject an
// answer: its deadline runs. A failed request is open: it has not been
// answered, and an operator must retry, deny or cancel it.
func OfficerOpenStates() []State {
	return []State{StateReceived, StateProcessing, StateHandedOver, StateFailed}
}

// AdminRow is one request as operators see it: no personal data.
type AdminRow struct {
	ID         string `json:"id"`
	Type       string `json:"type"`
	State      State  `json:"state"`
	Regulation string `json:"regulation"`
	// Client is the API client that submitted the request (requests.client).
	Client          string     `json:"client,omitempty"`
	SubmittedAt     time.Time  `json:"submitted_at"`
	ReceivedAt      time.Time  `json:"received_at"`
	DueAt           time.Time  `json:"due_at"`
	ExtendedUntil   *time.Time `json:"extended_until,omitempty"`
	ExtensionReason string     `json:"extension_reason,omitempty"`
	ExtendedBy      string     `json:"extended_by,omitempty"`
	ExtendedAt      *time.Time `json:"extended_at,omitempty"`
	// Deadline is the deadline in force: extended_until, else due_at.
	Deadline    time.Time  `json:"deadline"`
	CompletedAt *time.Time `json:"completed_at,omitempty"`
	Attempts    int        `json:"attempts"`
	// Retries counts the operator's retries; attempts counts the current
	// generation's attempts only.
	Retries        int        `json:"retries"`
	NextAttemptAt  *time.Time `json:"next_attempt_at,omitempty"`
	LastErrorClass string     `json:"last_error_class,omitempty"`
	DenialCode     string     `json:"denial_code,omitempty"`
	ClosedReason   string     `json:"closed_reason,omitempty"`
	ClosedBy       string     `json:"closed_by,omitempty"`
	ClosedAt       *time.Time `json:"closed_at,omitempty"`
	UpdatedAt      time.Time  `json:"updated_at"`
	HadEmail       bool       `json:"had_email"`
	// ParticipantsOverdue counts the erasure's participants an operator
	// must act on (overdue, failed, cannot_erase). The canceller owns
	// them: the officer fills it in (erasure.Lister.AttentionCounts);
	// this store leaves it 0.
	ParticipantsOverdue int `json:"participants_overdue"`
}

// Attempt is one processing attempt of a request.
type Attempt struct {
	// Generation is 0 for the attempts before any retry, n for those after
	// the n-th operator's retry; Attempt counts from 1 within it.
	Generation    int        `json:"generation"`
	Attempt       int        `json:"attempt"`
	StartedAt     time.Time  `json:"started_at"`
	FinishedAt    *time.Time `json:"finished_at,omitempty"`
	Outcome       string     `json:"outcome"`
	ErrorClass    string     `json:"error_class,omitempty"`
	NextAttemptAt *time.Time `json:"next_attempt_at,omitempty"`
}

// Sort orders of List.
const (
	SortDeadline        = "deadline"
	SortDeadlineDesc    = "-deadline"
	SortSubmittedAt     = "submitted_at"
	SortSubmittedAtDesc = "-submitted_at"
)

// Filter selects requests for List. Zero fields select everything.
type Filter struct {
	States     []string
	Type       string
	Regulation string
	// Client: submitted by this API client (requests.client).
	Client string
	// DueBefore: the deadline in force is before it.
	DueBefore time.Time
	// Overdue: open and past the deadline in force.
	Overdue bool
	// NearDeadline: open, not yet due, due within Near[regulation].
	NearDeadline bool
	Near         map[string]time.Duration
	// ParticipantOverdue: an erasure with a participant an operator must
	// act on. The canceller knows which those are, so the caller sets
	// ParticipantOverdueIDs with it (the officer does,
	// erasure.Lister.AttentionRequests); List selects those ids.
	ParticipantOverdue    bool
	ParticipantOverdueIDs []string
	SubmittedAfter        time.Time
	SubmittedBefore       time.Time
	Sort                  string
	Limit                 int
	// Cursor continues a previous page (Page.Next).
	Cursor string
}

// Page is one page of List.
type Page struct {
	Requests []AdminRow `json:"requests"`
	// Next is the cursor of the next page; empty on the last.
	Next string `json:"next,omitempty"`
}

// ErrBadCursor marks a cursor List did not make (or made for another sort).
var ErrBadCursor = errors.New("requests: invalid cursor")

type cursor struct {
	Sort string    `json:"s"`
	At   time.Time `json:"t"`
	ID   string    `json:"i"`
}

const rowColumns = `r.id::text AS id, r.type, r.state, r.regulation, r.client, r.submitted_at, r.received_at, r.due_at,
	r.extended_until, r.extension_reason, r.extended_by, r.extended_at, COALESCE(r.extended_until, r.due_at) AS deadline,
	r.completed_at, r.attempts, r.retries, r.next_attempt_at, r.last_error_class, r.denial_code, r.closed_reason, r.closed_by,
	r.closed_at, r.updated_at, r.had_email`

// nearExpr is the near-deadline window of r's regulation, in seconds.
func nearExpr(near map[string]time.Duration) (string, []any) {
	var sb strings.Builder
	args := []any{}
	sb.WriteString("(CASE r.regulation")
	for _, reg := range deadline.Regulations() {
		sb.WriteString(" WHEN ? THEN ?::float8")
		args = append(args, string(reg), near[string(reg)].Seconds())
	}
	sb.WriteString(" ELSE 0 END)")
	return sb.String(), args
}

// List returns one page of requests matching f.
func (s *Store) List(ctx context.Context, f Filter) (Page, error) {
	if f.Limit < 1 || f.Limit > 500 {
		f.Limit = 50
	}
	if f.Sort == "" {
		f.Sort = SortDeadline
	}
	key, desc := "", false
	switch f.Sort {
	case SortDeadline, SortDeadlineDesc:
		key = "COALESCE(r.extended_until, r.due_at)"
	case SortSubmittedAt, SortSubmittedAtDesc:
		key = "r.submitted_at"
	default:
		return Page{}, fmt.Errorf("%w: unknown sort %q", ErrBadCursor, f.Sort)
	}
	desc = strings.HasPrefix(f.Sort, "-")
	var where []string
	var args []any
	open := OfficerOpenStates()
	if len(f.States) > 0 {
		where = append(where, "r.state IN ?")
		args = append(args, f.States)
	}
	if f.Type != "" {
		where = append(where, "r.type = ?")
		args = append(args, f.Type)
	}
	if f.Regulation != "" {
		where = append(where, "r.regulation = ?")
		args = append(args, f.Regulation)
	}
	if f.Client != "" {
		where = append(where, "r.client = ?")
		args = append(args, f.Client)
	}
	if !f.DueBefore.IsZero() {
		where = append(where, "COALESCE(r.extended_until, r.due_at) < ?")
		args = append(args, f.DueBefore)
	}
	if f.Overdue {
		where = append(where, "r.state IN ? AND COALESCE(r.extended_until, r.due_at) <= now()")
		args = append(args, open)
	}
	if f.NearDeadline {
		expr, nargs := nearExpr(f.Near)
		where = append(where, "r.state IN ? AND COALESCE(r.extended_until, r.due_at) > now() AND COALESCE(r.extended_until, r.due_at) <= now() + make_interval(secs => "+expr+")")
		args = append(append(args, open), nargs...)
	}
	if f.ParticipantOverdue {
		if len(f.ParticipantOverdueIDs) == 0 {
			where = append(where, "false")
		} else {
			where = append(where, "r.id IN ?")
			args = append(args, f.ParticipantOverdueIDs)
		}
	}
	if !f.SubmittedAfter.IsZero() {
		where = append(where, "r.submitted_at >= ?")
		args = append(args, f.SubmittedAfter)
	}
	if !f.SubmittedBefore.IsZero() {
		where = append(where, "r.submitted_at < ?")
		args = append(args, f.SubmittedBefore)
	}
	if f.Cursor != "" {
		c, err := decodeCursor(f.Cursor)
		if err != nil || c.Sort != f.Sort {
			return Page{}, ErrBadCursor
		}
		op := ">"
		if desc {
			op = "<"
		}
		where = append(where, "("+key+", r.id) "+op+" (?, ?::uuid)")
		args = append(args, c.At, c.ID)
	}
	q := "SELECT " + rowColumns + " FROM requests r"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	dir := "ASC"
	if desc {
		dir = "DESC"
	}
	q += " ORDER BY " + key + " " + dir + ", r.id " + dir + " LIMIT ?"
	args = append(args, f.Limit+1)
	var rows []AdminRow
	if err := s.db.WithContext(ctx).Raw(q, args...).Scan(&rows).Error; err != nil {
		return Page{}, fmt.Errorf("listing requests: %w", err)
	}
	page := Page{Requests: rows}
	if len(rows) > f.Limit {
		page.Requests = rows[:f.Limit]
		last := page.Requests[f.Limit-1]
		at := last.Deadline
		if key == "r.submitted_at" {
			at = last.SubmittedAt
		}
		page.Next = encodeCursor(cursor{Sort: f.Sort, At: at, ID: last.ID})
	}
	if page.Requests == nil {
		page.Requests = []AdminRow{}
	}
	return page, nil
}

func encodeCursor(c cursor) string {
	raw, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(raw)
}

func decodeCursor(s string) (cursor, error) {
	var c cursor
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return c, ErrBadCursor
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return c, ErrBadCursor
	}
	if _, err := uuid.Parse(c.ID); err != nil {
		return c, ErrBadCursor
	}
	return c, nil
}

// Counts returns how many requests are in each state.
func (s *Store) Counts(ctx context.Context) (map[string]int, error) {
	var rows []struct {
		State string
		N     int
	}
	if err := s.db.WithContext(ctx).Raw(`SELECT state, count(*) AS n FROM requests GROUP BY state`).Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("counting requests: %w", err)
	}
	out := map[string]int{}
	for _, st := range States() {
		out[string(st)] = 0
	}
	for _, r := range rows {
		out[r.State] = r.N
	}
	return out, nil
}

// Clients returns the API clients that submitted any stored request,
// sorted: the console's choices for the client filter.
func (s *Store) Clients(ctx context.Context) ([]string, error) {
	out := []string{}
	if err := s.db.WithContext(ctx).Raw(`SELECT DISTINCT client FROM requests WHERE client <> '' ORDER BY client`).
		Scan(&out).Error; err != nil {
		return nil, fmt.Errorf("listing request clients: %w", err)
	}
	return out, nil
}

// Day is one day of Daily.
type Day struct {
	Day       time.Time `json:"day"`
	Submitted int       `json:"submitted"`
	Completed int       `json:"completed"`
}

// Daily counts requests submitted and completed per UTC day over the last
// days days, today included, oldest first.
func (s *Store) Daily(ctx context.Context, days int) ([]Day, error) {
	var out []Day
	err := s.db.WithContext(ctx).Raw(`WITH d AS (
			SELECT generate_series(date_trunc('day', now() AT TIME ZONE 'UTC') - make_interval(days => ? - 1),
				date_trunc('day', now() AT TIME ZONE 'UTC'), interval '1 day') AS day)
		SELECT d.day AT TIME ZONE 'UTC' AS day,
			(SELECT count(*) FROM requests r WHERE r.submitted_at >= d.day AT TIME ZONE 'UTC'
				AND r.submitted_at < (d.day + interval '1 day') AT TIME ZONE 'UTC') AS submitted,
			(SELECT count(*) FROM requests r WHERE r.completed_at >= d.day AT TIME ZONE 'UTC'
				AND r.completed_at < (d.day + interval '1 day') AT TIME ZONE 'UTC') AS completed
		FROM d ORDER BY d.day`, days).Scan(&out).Error
	if err != nil {
		return nil, fmt.Errorf("counting requests per day: %w", err)
	}
	return out, nil
}

// Detail returns request id and its attempts.
func (s *Store) Detail(ctx context.Context, id string) (AdminRow, []Attempt, error) {
	return s.get(ctx, s.db, id, false)
}

func (s *Store) get(ctx context.Context, db *gorm.DB, id string, lock bool) (AdminRow, []Attempt, error) {
	var r AdminRow
	if _, err := uuid.Parse(id); err != nil {
		return r, nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	q := "SELECT " + rowColumns + " FROM requests r WHERE r.id = ?"
	if lock {
		q += " FOR UPDATE OF r"
	}
	res := db.WithContext(ctx).Raw(q, id).Scan(&r)
	if res.Error != nil {
		return r, nil, fmt.Errorf("loading request %s: %w", id, res.Error)
	}
	if res.RowsAffected == 0 {
		return r, nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if lock {
		return r, nil, nil
	}
	var attempts []Attempt
	if err := db.WithContext(ctx).Raw(`SELECT generation, attempt, started_at, finished_at, outcome, error_class, next_attempt_at
		FROM request_attempts WHERE request_id = ? ORDER BY generation, attempt`, id).Scan(&attempts).Error; err != nil {
		return r, nil, fmt.Errorf("loading attempts of %s: %w", id, err)
	}
	if attempts == nil {
		attempts = []Attempt{}
	}
	return r, attempts, nil
}

// ErrBadInput marks an operator's change whose values are out of range
// (an extension beyond what the regulation allows, say).
var ErrBadInput = errors.New("requests: invalid change")

// Within runs inside the transaction of an operator's change, after the
// row was updated: the caller's audit record and outbox messages, another
// owner's part of the change. before is the row as it was.
type Within func(tx *gorm.DB, before AdminRow) error

// change is an operator's change to one request.
type change struct {
	// allowed are the states the change applies in; done says the change
	// already holds (the action is idempotent: nothing happens again).
	allowed []State
	done    func(AdminRow) bool
	// check refuses the change for reasons other than the state.
	check func(AdminRow) error
	// sql and args update the locked row (WHERE id = ? is appended); args
	// is called after check, which may work out a value.
	sql    string
	args   func() []any
	within Within
}

// Retry puts a failed request back to work in place: same id, same
// due_at, attempts counted from zero again in a new generation (the
// failed run's attempts stay in the history), due now. Only a failed
// request can be retried.
func (s *Store) Retry(ctx context.Context, id string, within Within) (AdminRow, bool, error) {
	return s.apply(ctx, id, change{
		allowed: []State{StateFailed},
		sql: `UPDATE requests SET state = 'received', attempts = 0, retries = retries + 1, last_error_class = '', next_attempt_at = now(),
			lease_until = NULL, updated_at = now()`,
		within: within,
	})
}

// Cancel ends a request that is not being worked on this instant and has
// not been answered: nothing more is done for it and its subject is
// scrubbed from the row. An erasure handed over already is stopped by the
// canceller's part, which the caller runs in within (docs/console.md).
func (s *Store) Cancel(ctx context.Context, id, by, reason string, within Within) (AdminRow, bool, error) {
	return s.apply(ctx, id, change{
		allowed: []State{StateReceived, StateFailed, StateHandedOver},
		done:    func(r AdminRow) bool { return r.State == StateCancelled },
		sql: `UPDATE requests SET state = 'cancelled', closed_reason = ?, closed_by = ?, closed_at = now(),
			subject_id = '', subject_email = '', subject_phone = '', subject_identifiers = '{}', lease_until = NULL, updated_at = now()`,
		args:   func() []any { return []any{reason, by} },
		within: within,
	})
}

// Deny refuses a request that was not handed on yet (GDPR Art. 12(4),
// 12(5)): the subject's identifiers (id, phone number, named ones) are
// scrubbed; the address stays until the notifier has sent the denial,
// which scrubs it.
func (s *Store) Deny(ctx context.Context, id, by, code, reason string, within Within) (AdminRow, bool, error) {
	return s.apply(ctx, id, change{
		allowed: []State{StateReceived, StateFailed},
		done:    func(r AdminRow) bool { return r.State == StateDenied && r.DenialCode == code },
		sql: `UPDATE requests SET state = 'denied', denial_code = ?, closed_reason = ?, closed_by = ?, closed_at = now(),
			subject_id = '', subject_phone = '', subject_identifiers = '{}', lease_until = NULL, updated_at = now()`,
		args:   func() []any { return []any{code, reason, by} },
		within: within,
	})
}

// Extend sets the deadline of an open request to until, once, before
// due_at passes and no later than its regulation allows (a zero until is
// that limit). The row returned is the one before the change.
func (s *Store) Extend(ctx context.Context, id, by string, until time.Time, reason string, now time.Time, within Within) (AdminRow, bool, error) {
	var target time.Time
	return s.apply(ctx, id, change{
		allowed: OfficerOpenStates(),
		done: func(r AdminRow) bool {
			return slices.Contains(OfficerOpenStates(), r.State) && r.ExtendedUntil != nil && (until.IsZero() || r.ExtendedUntil.Equal(until))
		},
		check: func(r AdminRow) error {
			if r.ExtendedUntil != nil {
				return fmt.Errorf("%w: the deadline was extended once already", ErrConflict)
			}
			if !now.Before(r.DueAt) {
				return fmt.Errorf("%w: the original deadline has passed", ErrConflict)
			}
			reg, _ := deadline.Parse(r.Regulation)
			limit, err := reg.ExtendedLimit(r.DueAt)
			if err != nil {
				return fmt.Errorf("%w: %w", ErrConflict, err)
			}
			target = until
			if target.IsZero() {
				target = limit
			}
			if !target.After(r.DueAt) || target.After(limit) {
				return fmt.Errorf("%w: until must be after %s and no later than %s", ErrBadInput,
					r.DueAt.UTC().Format(time.RFC3339), limit.UTC().Format(time.RFC3339))
			}
			return nil
		},
		sql: `UPDATE requests SET extended_until = ?, extension_reason = ?, extended_by = ?,
			extended_at = now(), updated_at = now()`,
		args:   func() []any { return []any{target, reason, by} },
		within: within,
	})
}

// ExtendedUntilIn reads the deadline Extend set, in the caller's
// transaction (the one Extend's within runs in, so the email names the
// deadline that committed with it).
func (s *Store) ExtendedUntilIn(ctx context.Context, tx *gorm.DB, id string) (time.Time, error) {
	var until *time.Time
	if err := tx.WithContext(ctx).Raw(`SELECT extended_until FROM requests WHERE id = ?`, id).Scan(&until).Error; err != nil {
		return time.Time{}, fmt.Errorf("reading the extension of %s: %w", id, err)
	}
	if until == nil {
		return time.Time{}, fmt.Errorf("%w: request %s has no extension", ErrConflict, id)
	}
	return *until, nil
}

func (s *Store) apply(ctx context.Context, id string, c change) (before AdminRow, changed bool, err error) {
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		r, _, err := s.get(ctx, tx, id, true)
		if err != nil {
			return err
		}
		before = r
		if c.done != nil && c.done(r) {
			return nil
		}
		if !slices.Contains(c.allowed, r.State) {
			return fmt.Errorf("%w: the request is %s", ErrConflict, r.State)
		}
		if c.check != nil {
			if err := c.check(r); err != nil {
				return err
			}
		}
		var args []any
		if c.args != nil {
			args = c.args()
		}
		if err := tx.Exec(c.sql+" WHERE id = ?", append(args, id)...).Error; err != nil {
			return fmt.Errorf("changing request %s: %w", id, err)
		}
		changed = true
		if c.within != nil {
			return c.within(tx, r)
		}
		return nil
	})
	return before, changed, err
}

// StateCancelled and StateDenied are ends an operator gives a request
// (modules/officer): nothing more is done for it. record has them, as the
// other states, for the packages that read a request's state without this one.
const (
	StateCancelled = record.StateCancelled
	StateDenied    = record.StateDenied
)

// States is every state a request can be in, in lifecycle order (the
// console's dashboard and filter list them so).
func States() []State {
	return []State{StateReceived, StateProcessing, StateHandedOver, StateFailed, StateCompleted, StateCancelled, StateDenied}
}
