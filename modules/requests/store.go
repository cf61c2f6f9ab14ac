package requests

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/modules/notify"
	"github.com/gdpr-oss/gdpr/modules/requests/record"
)

// State is the state of a request (requests.state); docs/requests.md draws
// the machine.
type State = record.State

// Request states.
const (
	StateReceived   = record.StateReceived
	StateProcessing = record.StateProcessing
	StateHandedOver = record.StateHandedOver
	StateCompleted  = record.StateCompleted
	StateFailed     = record.StateFailed
)

// OpenStates are the states of a request that is not finished.
func OpenStates() []State {
	return []State{StateReceived, StateProcessing, StateHandedOver}
}

// Row is a stored request as a status shows it (record.Row).
type Row = record.Row

// Get returns request id; found is false when the requests manager has not
// stored it.
func (s *Store) Get(ctx context.Context, id string) (r Row, found bool, err error) {
	res := s.db.WithContext(ctx).Raw(`SELECT id, type, state, submitted_at, received_at, due_at, extended_until, completed_at,
		attempts, next_attempt_at, last_error_class, updated_at, client FROM requests WHERE id = ?`, id).Scan(&r)
	if res.Error != nil {
		return Row{}, false, fmt.Errorf("reading request %s: %w", id, res.Error)
	}
	return r, res.RowsAffected > 0, nil
}

// OpenStats is what the gauges show of unfinished requests.
type OpenStats struct {
	// ByState counts open requests per state; a state without any is absent.
	ByState map[State]int
	// OldestSeconds is the age of the oldest open request since submission, 0 when none.
	OldestSeconds float64
	// Near counts open requests due within the given window, Past those overdue.
	Near, Past int
}

// Open reads the open requests' counts and deadlines; near is, per
// regulation, how close to the deadline in force (an operator's
// extended_until, else due_at) counts as near it, the same windows List's
// NearDeadline filter uses. A regulation missing from near has no window.
// A request an operator cancelled or denied is finished.
func (s *Store) Open(ctx context.Context, near map[string]time.Duration) (OpenStats, error) {
	db := s.db.WithContext(ctx)
	var byState []struct {
		State State
		N     int
	}
	if err := db.Raw(`SELECT state, count(*) AS n FROM requests
		WHERE state NOT IN ? GROUP BY state`, finished()).Scan(&byState).Error; err != nil {
		return OpenStats{}, fmt.Errorf("counting open requests: %w", err)
	}
	var st struct {
		OldestSeconds float64
		Near          int
		Past          int
	}
	expr, args := nearExpr(near)
	if err := db.Raw(`SELECT
			COALESCE(EXTRACT(EPOCH FROM now() - min(r.submitted_at)), 0)::float8 AS oldest_seconds,
			count(*) FILTER (WHERE COALESCE(r.extended_until, r.due_at) > now()
				AND COALESCE(r.extended_until, r.due_at) <= now() + make_interval(secs => `+expr+`)) AS near,
			count(*) FILTER (WHERE COALESCE(r.extended_until, r.due_at) <= now()) AS past
		FROM requests r WHERE r.state NOT IN ?`, append(args, finished())...).Scan(&st).Error; err != nil {
		return OpenStats{}, fmt.Errorf("reading request deadlines: %w", err)
	}
	out := OpenStats{ByState: make(map[State]int, len(byState)), OldestSeconds: st.OldestSeconds, Near: st.Near, Past: st.Past}
	for _, b := range byState {
		out.ByState[b.State] = b.N
	}
	return out, nil
}

// finished are the states the gauges do not count as open: the
// requests manager's ends and the operator's (a failed request waits for
// an operator, and its own gauge and alert, not the open-request ones).
func finished() []State { return []State{StateCompleted, StateFailed, StateCancelled, StateDenied} }

// SubmittedSince returns the ids of the requests submitted at or after since.
func (s *Store) SubmittedSince(ctx context.Context, since time.Time) ([]string, error) {
	var ids []string
	if err := s.db.WithContext(ctx).Raw(`SELECT id::text FROM requests WHERE submitted_at >= ?`, since).
		Scan(&ids).Error; err != nil {
		return nil, fmt.Errorf("listing requests submitted since %s: %w", since, err)
	}
	return ids, nil
}

// Progress is how far one request got by the requests module's own record.
type Progress struct {
	ID         string
	Type       string
	State      State
	ErrorClass string
	// HasReport: the request's reports row exists.
	HasReport bool
	// HadEmail: submitted with an address (kept through the scrub).
	HadEmail bool
	// Activity is the request's latest change, its attempts' included.
	Activity time.Time
}

// Progresses returns the progress of those of ids that are stored.
func (s *Store) Progresses(ctx context.Context, ids []string) ([]Progress, error) {
	list, err := uuidList(ids)
	if err != nil {
		return nil, err
	}
	var out []Progress
	err = s.db.WithContext(ctx).Raw(`
		SELECT r.id::text AS id, r.type, r.state, r.last_error_class AS error_class,
			EXISTS (SELECT 1 FROM reports p WHERE p.request_id = r.id) AS has_report,
			r.had_email,
			GREATEST(r.received_at, r.updated_at, COALESCE(r.completed_at, r.received_at),
				COALESCE((SELECT max(GREATEST(a.started_at, COALESCE(a.finished_at, a.started_at)))
					FROM request_attempts a WHERE a.request_id = r.id), r.received_at)) AS activity
		FROM requests r WHERE r.id IN (SELECT jsonb_array_elements_text(?::jsonb)::uuid)`, list).Scan(&out).Error
	if err != nil {
		return nil, fmt.Errorf("reading the progress of %d requests: %w", len(ids), err)
	}
	return out, nil
}

// Recipient returns the address of request id inside the caller's
// transaction tx, for the notifier; found is false when no such request is
// stored.
func (s *Store) Recipient(ctx context.Context, tx *gorm.DB, id string) (r notify.Recipient, found bool, err error) {
	res := tx.WithContext(ctx).Raw(`SELECT subject_email AS email, had_email,
			erased_by IS NOT NULL AND erased_by <> id AS erased, locale, type AS kind, due_at
		FROM requests WHERE id = ?`, id).Scan(&r)
	if res.Error != nil {
		return notify.Recipient{}, false, fmt.Errorf("loading the address of %s: %w", id, res.Error)
	}
	return r, res.RowsAffected > 0, nil
}

// LockFinished locks request id's row in the caller's transaction tx, as
// finishErasure does before it scrubs, and reports whether the request is
// completed. Both sides of the erasure-email race take this lock first, so
// exactly one of them sees the other's commit (docs/requests.md).
func (s *Store) LockFinished(ctx context.Context, tx *gorm.DB, id string) (bool, error) {
	var state string // gorm scans a single column only into basic types
	if err := tx.WithContext(ctx).Raw(`SELECT state FROM requests WHERE id = ? FOR UPDATE`, id).Scan(&state).Error; err != nil {
		return false, fmt.Errorf("locking request %s: %w", id, err)
	}
	return State(state) == StateCompleted, nil
}

// ForgetEmail blanks the subject's address of request id in the caller's
// transaction tx, so that it commits with the email record that made it
// unnecessary.
func (s *Store) ForgetEmail(ctx context.Context, tx *gorm.DB, id string) error {
	if err := tx.WithContext(ctx).Exec(`UPDATE requests SET subject_email = '', pii_scrubbed_at = now(), updated_at = now()
		WHERE id = ? AND subject_email <> ''`,
		id).Error; err != nil {
		return fmt.Errorf("scrubbing the address of %s: %w", id, err)
	}
	return nil
}

// uuidList encodes those of ids that are UUIDs (request ids from elsewhere,
// such as the audit log, may be anything) as one JSON array parameter, so
// that any number of ids is one bind variable and the uuid index serves.
func uuidList(ids []string) (string, error) {
	valid := make([]string, 0, len(ids))
	for _, id := range ids {
		// Only the canonical form: the text comparison this replaces matched no other.
		if u, err := uuid.Parse(id); err == nil && u.String() == id {
			valid = append(valid, id)
		}
	}
	b, err := json.Marshal(valid)
	if err != nil {
		return "", fmt.Errorf("encoding request ids: %w", err)
	}
	return string(b), nil
}
