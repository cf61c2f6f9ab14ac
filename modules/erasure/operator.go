package erasure

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/modules/message"
)

// The operator's actions on one erasure (modules/officer calls them). Each
// takes `within`, run in the same transaction once the change is made, so
// the operator's audit record commits with it or not at all.

// ErrNotOpen marks an operator action on a participant whose erasure (or
// own state) does not allow it.
var ErrNotOpen = errors.New("erasure: the participant's state does not allow this")

// Outcomes recorded in last_outcome for an operator's confirmation: they
// tell a participant's own confirmation from an operator's.
const (
	// OutcomeManual: the operator recorded that the service erased by other
	// means (the detail is the operator's note: the proof).
	OutcomeManual = "manual"
	// OutcomeNotApplicable: the operator recorded that the participant holds
	// nothing of this subject, with a reason.
	OutcomeNotApplicable = "not_applicable"
)

// ConfirmManually records that participant erased the subject by other
// means: the participant counts as erased (confirmed now, by an operator,
// with note), and the erasure completes if it was the last one. changed is
// false when it was already confirmed that way (the action is idempotent);
// a participant confirmed otherwise gets ErrNotOpen.
func (c *Canceller) ConfirmManually(ctx context.Context, requestID, participant, note string, within func(tx *gorm.DB) error) (changed bool, err error) {
	return c.operatorConfirm(ctx, requestID, participant, StateErased, OutcomeManual, note, within)
}

// NotApplicable records that participant holds nothing of this subject
// (it counts like a not_found confirmation), with the operator's reason.
func (c *Canceller) NotApplicable(ctx context.Context, requestID, participant, reason string, within func(tx *gorm.DB) error) (changed bool, err error) {
	return c.operatorConfirm(ctx, requestID, participant, StateNotFound, OutcomeNotApplicable, reason, within)
}

func (c *Canceller) operatorConfirm(ctx context.Context, requestID, participant string, state State, outcome, text string, within func(tx *gorm.DB) error) (bool, error) {
	cause, err := message.New("erasure.operator", map[string]string{"request_id": requestID, "participant": participant, "outcome": outcome}, nil)
	if err != nil {
		return false, err
	}
	cause.CorrelationID = requestID
	changed := false
	var fx effects
	err = c.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		e, r, ok, err := c.lockParticipant(ctx, tx, requestID, participant)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: %q is not a participant of %s", ErrUnknownParty, participant, requestID)
		}
		var last string
		if err := tx.Raw(`SELECT last_outcome FROM erasure_participants WHERE request_id = ? AND participant = ?`,
			requestID, participant).Scan(&last).Error; err != nil {
			return fmt.Errorf("reading participant %s of %s: %w", participant, requestID, err)
		}
		switch {
		case r.State == state && last == outcome:
			return nil
		case r.State == StateErased || r.State == StateNotFound:
			return fmt.Errorf("%w: %s is %s already", ErrNotOpen, participant, r.State)
		case e.State == ErasureFinished || e.State == ErasureCancelled:
			return fmt.Errorf("%w: the erasure is %s", ErrNotOpen, e.State)
		}
		if within != nil {
			if err := within(tx); err != nil {
				return err
			}
		}
		// Pending re-sends and calls of this participant would be stale now.
		for _, key := range []string{timerKey(requestID, participant, ActionSend, r.Attempt+1), timerKey(requestID, participant, "command", r.Attempt+1)} {
			if _, err := c.sched.Cancel(ctx, tx, key); err != nil {
				return err
			}
		}
		s := step{tx: tx, e: e, requestID: requestID, cause: &cause, fx: &fx}
		if err := c.setState(ctx, s, participant, state, r.Attempt, outcome, text); err != nil {
			return err
		}
		changed = true
		fx.confirmed = append(fx.confirmed, participant+"\x00"+outcome)
		if err := c.checkCompletion(ctx, s); err != nil {
			return err
		}
		if e.State == ErasureOpen || e.State == ErasureCompleted {
			// checkCompletion may have moved e on; the sweep follows what is
			// still awaiting a confirmation.
			cur, err := c.lock(ctx, tx, requestID)
			if err != nil {
				return err
			}
			if cur.State != ErasureFinished {
				s.e = cur
				return c.reschedule(ctx, s)
			}
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	c.apply(fx)
	if changed {
		c.logger.InfoContext(ctx, "participant confirmed by an operator", "request_id", requestID, "participant", participant, "outcome", outcome)
	}
	return changed, nil
}

// CancelIn stops an erasure inside the caller's transaction tx (the one
// that cancels its request): every command, re-send, call and sweep still
// scheduled for it is dropped, the subject is scrubbed from the erasure row
// and the erasure is marked cancelled. Commands that went out already
// cannot be called back: a participant may still erase, and its
// confirmation is recorded when it arrives (docs/console.md). It reports
// false when the request has no erasure row (never handed over yet).
func (c *Canceller) CancelIn(ctx context.Context, tx *gorm.DB, requestID string) (bool, error) {
	e, err := c.lock(ctx, tx, requestID)
	if errors.Is(err, ErrUnknownRequest) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if e.State == ErasureFinished || e.State == ErasureCancelled {
		return false, nil
	}
	var rows []row
	if err := tx.WithContext(ctx).Raw(`SELECT participant, kind, state, attempt FROM erasure_participants
		WHERE request_id = ?`, requestID).Scan(&rows).Error; err != nil {
		return false, fmt.Errorf("reading participants of %s: %w", requestID, err)
	}
	keys := []string{sweepKey(requestID)}
	for _, r := range rows {
		keys = append(keys, timerKey(requestID, r.Participant, ActionSend, r.Attempt+1),
			timerKey(requestID, r.Participant, "command", r.Attempt), timerKey(requestID, r.Participant, "command", r.Attempt+1))
	}
	for _, k := range keys {
		if _, err := c.sched.Cancel(ctx, tx, k); err != nil {
			return false, err
		}
	}
	if err := tx.WithContext(ctx).Exec(`UPDATE erasures SET state = ?, subject_id = '', subject_email = '', subject_phone = '', subject_identifiers = '{}', updated_at = now()
		WHERE request_id = ?`, ErasureCancelled, requestID).Error; err != nil {
		return false, fmt.Errorf("cancelling erasure %s: %w", requestID, err)
	}
	c.logger.InfoContext(ctx, "erasure cancelled by an operator", "request_id", requestID)
	return true, nil
}

// Attention lists participants an operator must act on (overdue, failed,
// cannot_erase) of erasures still open, oldest first.
func Attention(ctx context.Context, db *gorm.DB, limit int) ([]AttentionRow, error) {
	var out []AttentionRow
	err := db.WithContext(ctx).Raw(`SELECT p.request_id::text AS request_id, p.participant, p.kind, p.state, p.attempt AS attempts, p.updated_at
		FROM erasure_participants p JOIN erasures e USING (request_id)
		WHERE p.state IN ? AND e.state IN ?
		ORDER BY p.updated_at LIMIT ?`, needsOperator(), stillOpen(), limit).Scan(&out).Error
	if err != nil {
		return nil, fmt.Errorf("listing participants needing attention: %w", err)
	}
	return out, nil
}

// AttentionRow is one participant needing an operator.
type AttentionRow struct {
	RequestID   string    `json:"request_id"`
	Participant string    `json:"participant"`
	Kind        string    `json:"kind"`
	State       State     `json:"state"`
	Attempts    int       `json:"attempts"`
	UpdatedAt   time.Time `json:"updated_at"`
}
