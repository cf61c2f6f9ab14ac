package notify

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/google/uuid"
	"gorm.io/gorm"
)

// State is the state of a notification (notifications.state).
type State string

// Notification states.
const (
	// StateSending: recorded before the SMTP conversation; a stale one is
	// from a delivery that died before its commit.
	StateSending State = "sending"
	StateSent    State = "sent"
	StateSkipped State = "skipped"
)

// Store is what other modules may read of the notifier's table
// (notifications). It holds no state besides the database.
type Store struct {
	db *gorm.DB
}

// NewStore returns the store over db.
func NewStore(db *gorm.DB) *Store { return &Store{db: db} }

// DeletedEmailRecorded reports, inside the caller's transaction tx, whether
// the "deleted" email of erasure requestID is recorded as sent or skipped.
func (s *Store) DeletedEmailRecorded(ctx context.Context, tx *gorm.DB, requestID string) (bool, error) {
	var recorded bool
	if err := tx.WithContext(ctx).Raw(`SELECT EXISTS (SELECT 1 FROM notifications
		WHERE request_id = ? AND template = ? AND state IN ?)`,
		requestID, TemplateErasureCompleted, []State{StateSent, StateSkipped}).Scan(&recorded).Error; err != nil {
		return false, fmt.Errorf("reading the deleted email of %s: %w", requestID, err)
	}
	return recorded, nil
}

// Outcome is what became of a request's emails.
type Outcome struct {
	RequestID string
	// Sent: an email of the request was accepted by the SMTP server.
	Sent bool
	// Skipped: an email of the request was skipped; SkipReasons lists why
	// (comma-separated Reason* values).
	Skipped     bool
	SkipReasons string
}

// Outcomes returns the email outcomes of those of requestIDs that have a
// notification.
func (s *Store) Outcomes(ctx context.Context, requestIDs []string) ([]Outcome, error) {
	list, err := uuidList(requestIDs)
	if err != nil {
		return nil, err
	}
	var out []Outcome
	err = s.db.WithContext(ctx).Raw(`
		SELECT request_id::text AS request_id,
			bool_or(state = ?) AS sent,
			bool_or(state = ?) AS skipped,
			COALESCE(string_agg(DISTINCT reason, ',') FILTER (WHERE state = ?), '') AS skip_reasons
		FROM notifications WHERE request_id IN (SELECT jsonb_array_elements_text(?::jsonb)::uuid)
			-- A receipt is not the email a request owes at its end.
			AND template <> ?
		GROUP BY request_id`, StateSent, StateSkipped, StateSkipped, list, TemplateRequestReceived).Scan(&out).Error
	if err != nil {
		return nil, fmt.Errorf("reading the email outcomes of %d requests: %w", len(requestIDs), err)
	}
	return out, nil
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
