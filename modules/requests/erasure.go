package requests

import (
	"context"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/trace"
)

// erasure hands the request to the canceller exactly once: the
// erasure.requested message commits with the move to handed_over. An access
// report of the same subject that is being built, or was asked for earlier
// and is still open, goes first, so no report shows data that was already
// erased (docs/requests.md).
func (m *Manager) erasure(ctx, _ context.Context, c *claimed) error {
	commitCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	waited := false
	err := m.db.WithContext(commitCtx).Transaction(func(tx *gorm.DB) error {
		if err := m.fence.Check(commitCtx, tx, c.ID, c.Token); err != nil {
			return err
		}
		var pending bool
		if err := tx.Raw(`SELECT EXISTS (SELECT 1 FROM requests
			WHERE type = ? AND id <> ?
			  AND `+sameSubject+`
			  AND (state = ? OR (state = ? AND submitted_at <= ?)))`,
			append(append([]any{event.KindAccess, c.ID}, sameSubjectArgs(c.subject())...),
				StateProcessing, StateReceived, c.SubmittedAt)...).Scan(&pending).Error; err != nil {
			return fmt.Errorf("looking for open access requests of %s: %w", c.ID, err)
		}
		if pending {
			waited = true
			// Not an attempt: the erasure only yields to the report.
			if err := tx.Exec(`DELETE FROM request_attempts WHERE request_id = ? AND attempt = ?
				AND generation = (SELECT retries FROM requests WHERE id = ?)`, c.ID, c.Attempt, c.ID).Error; err != nil {
				return fmt.Errorf("dropping waiting attempt of %s: %w", c.ID, err)
			}
			return tx.Exec(`UPDATE requests SET state = ?, next_attempt_at = now() + ?::interval,
				lease_until = NULL, updated_at = now() WHERE id = ?`, StateReceived, m.cfg.ErasureWait.String(), c.ID).Error
		}
		out, err := message.New(event.TypeErasureRequested, event.ErasureRequested{RequestID: c.ID, Subject: c.subject()}, nil)
		if err != nil {
			return err
		}
		out.CorrelationID = c.ID
		out.CausationID = c.CauseID
		out.Traceparent = trace.Child(trace.Traceparent(ctx))
		if err := m.outbox.Enqueue(commitCtx, tx, out); err != nil {
			return err
		}
		if err := m.closeAttempt(tx, c.ID, c.Attempt, "succeeded", "", nil); err != nil {
			return err
		}
		return tx.Exec(`UPDATE requests SET state = ?, attempts = ?, last_error_class = '', lease_until = NULL,
			updated_at = now() WHERE id = ?`, StateHandedOver, c.Attempt, c.ID).Error
	})
	if err != nil {
		return err
	}
	if waited {
		m.logger.InfoContext(ctx, "erasure waits for an open access report", "request_id", c.ID)
		return nil
	}
	// gdpr_erasures_requested_total is the canceller's: it counts fan-outs.
	m.logger.InfoContext(ctx, "erasure handed over", "request_id", c.ID)
	return nil
}
