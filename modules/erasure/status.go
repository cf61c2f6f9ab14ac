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
	State       string     `json:"state"`
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
