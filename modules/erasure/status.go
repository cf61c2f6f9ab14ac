package erasure

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"gorm.io/gorm"
)

// ParticipantState is one participant's progress on one erasure, for the
// status API and operators. It holds no personal data.
type ParticipantState struct {
	Participant string     `json:"participant"`
	Kind        string     `json:"kind"`
	State       State      `json:"state"`
	Attempts    int        `json:"attempts"`
	LastOutcome string     `json:"last_outcome,omitempty"`
	Detail      string     `json:"detail,omitempty"`
	SentAt      *time.Time `json:"sent_at,omitempty"`
	ConfirmedAt *time.Time `json:"confirmed_at,omitempty"`
	UpdatedAt   time.Time  `json:"updated_at"`
}

// Participants returns the participants of erasure requestID in name order;
// an empty list when the canceller has not fanned it out (yet).
func Participants(ctx context.Context, db *gorm.DB, requestID string) ([]ParticipantState, error) {
	out := []ParticipantState{}
	if _, err := uuid.Parse(requestID); err != nil {
		return out, nil
	}
	err := db.WithContext(ctx).Raw(`SELECT participant, kind, state, attempt AS attempts, last_outcome, detail,
			sent_at, confirmed_at, updated_at
		FROM erasure_participants WHERE request_id = ? ORDER BY participant`, requestID).Scan(&out).Error
	if err != nil {
		return nil, fmt.Errorf("reading participants of %s: %w", requestID, err)
	}
	return out, nil
}

// Lister is Participants as a type, for callers that take an interface.
type Lister struct{ DB *gorm.DB }

// Participants returns the participants of erasure requestID.
func (l Lister) Participants(ctx context.Context, requestID string) ([]ParticipantState, error) {
	return Participants(ctx, l.DB, requestID)
}

// needsOperator are the participant states an operator must act on.
func needsOperator() []State { return []State{StateOverdue, StateFailed, StateCannotErase} }

// stillOpen are the erasure states in which a participant an operator must
// act on still holds the erasure up (completed: the email system waits).
func stillOpen() []ErasureState { return []ErasureState{ErasureOpen, ErasureCompleted} }

// AttentionRequests returns the ids of the erasures still open (or
// completed, waiting for the email system) with a participant an operator
// must act on: the console's "participant overdue" filter.
func (l Lister) AttentionRequests(ctx context.Context) ([]string, error) {
	ids := []string{}
	err := l.DB.WithContext(ctx).Raw(`SELECT DISTINCT p.request_id::text FROM erasure_participants p JOIN erasures e USING (request_id)
		WHERE p.state IN ? AND e.state IN ?`, needsOperator(), stillOpen()).Scan(&ids).Error
	if err != nil {
		return nil, fmt.Errorf("listing erasures needing an operator: %w", err)
	}
	return ids, nil
}

// AttentionCounts returns, for each of requestIDs that has any, how many of
// its participants an operator must act on.
func (l Lister) AttentionCounts(ctx context.Context, requestIDs []string) (map[string]int, error) {
	out := make(map[string]int, len(requestIDs))
	if len(requestIDs) == 0 {
		return out, nil
	}
	var rows []struct {
		RequestID string
		N         int
	}
	err := l.DB.WithContext(ctx).Raw(`SELECT request_id::text AS request_id, count(*) AS n FROM erasure_participants
		WHERE request_id IN ? AND state IN ? GROUP BY request_id`, requestIDs, needsOperator()).Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("counting participants needing an operator: %w", err)
	}
	for _, r := range rows {
		out[r.RequestID] = r.N
	}
	return out, nil
}
