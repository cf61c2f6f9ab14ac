package requests

import (
	"context"
	"errors"
	"fmt"
	"net/mail"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/modules/deadline"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/inbox"
	"github.com/gdpr-oss/gdpr/modules/message"
)

// ErrInvalid marks a message that can never be stored.
var ErrInvalid = errors.New("requests: invalid message")

// Handle is the bus handler of the worker.requests queue: request.submitted
// and erasure.finished. Every effect commits with the message id in the
// inbox, so a redelivery changes nothing.
func (m *Manager) Handle(ctx context.Context, msg message.Message) error {
	var err error
	switch msg.Type {
	case event.TypeRequestSubmitted:
		err = m.receive(ctx, msg)
	case event.TypeErasureFinished:
		err = m.finishErasure(ctx, msg)
	default:
		err = fmt.Errorf("%w: unexpected type %q", ErrInvalid, msg.Type)
	}
	if errors.Is(err, ErrInvalid) {
		return message.Permanent(err)
	}
	return err
}

func validSubmission(s event.RequestSubmitted) error {
	if _, err := uuid.Parse(s.RequestID); err != nil {
		return fmt.Errorf("%w: request_id is not a UUID", ErrInvalid)
	}
	if s.Type != event.KindAccess && s.Type != event.KindErasure {
		return fmt.Errorf("%w: type must be access or erasure, got %q", ErrInvalid, s.Type)
	}
	// Intake applies the same rules; a message can come from elsewhere.
	if err := s.Subject.Check(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if s.Subject.Email != "" {
		if _, err := mail.ParseAddress(s.Subject.Email); err != nil {
			return fmt.Errorf("%w: subject.email is not an address", ErrInvalid)
		}
	}
	if s.SubmittedAt.IsZero() {
		return fmt.Errorf("%w: submitted_at is missing", ErrInvalid)
	}
	if _, err := deadline.Parse(s.Regulation); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// receive stores a submitted request in state received and enqueues
// request.received, in one statement with the inbox record.
func (m *Manager) receive(ctx context.Context, msg message.Message) error {
	var sub event.RequestSubmitted
	if err := msg.Decode(&sub); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := validSubmission(sub); err != nil {
		return err
	}
	// The same request may arrive under a second message id (intake
	// re-published after an unknown confirm): the row's primary key
	// absorbs it.
	var method string
	var verifiedAt *time.Time
	if v := sub.Verification; v != nil {
		method, verifiedAt = v.Method, &v.VerifiedAt
	}
	out, err := message.New(event.TypeRequestReceived, event.RequestReceived{
		RequestID: sub.RequestID, Type: sub.Type, VerificationMethod: method, VerifiedAt: verifiedAt,
	}, &msg)
	if err != nil {
		return err
	}
	out.CorrelationID = sub.RequestID
	// had_email outlives the scrub: the in-sync check derives from it
	// whether the request owes the subject an email.
	// validSubmission parsed it already.
	reg, _ := deadline.Parse(sub.Regulation)
	// The inbox record, the row and request.received are one statement,
	// atomic without a transaction: a redelivered message id stores no
	// row, exactly as if inbox.Claim had said "not fresh" first, and a row
	// already stored enqueues nothing.
	inboxSQL, args := inbox.ClaimSQL(Consumer, msg.ID)
	outSQL, outArgs, err := m.outbox.EnqueueSQL(out, "EXISTS (SELECT 1 FROM stored)")
	if err != nil {
		return err
	}
	args = append(args, sub.RequestID, sub.Type, StateReceived, sub.Subject.ID, sub.Subject.Email, sub.Subject.Phone, identifiersJSON(sub.Subject.Identifiers), sub.Subject.Email != "", sub.SubmittedAt, reg.DueAt(sub.SubmittedAt),
		out.Traceparent, out.ID, method, verifiedAt, sub.Locale, sub.Receipt && sub.Subject.Email != "", string(reg), sub.Client)
	args = append(args, outArgs...)
	var stored int
	if err := m.db.WithContext(ctx).Raw(`WITH claimed AS (`+inboxSQL+`),
		stored AS (
			INSERT INTO requests (id, type, state, subject_id, subject_email, subject_phone, subject_identifiers, had_email, submitted_at, due_at, next_attempt_at,
				traceparent, received_message_id, verification_method, verified_at, locale, receipt, regulation, client)
			SELECT ?::uuid, ?, ?, ?, ?, ?, ?::jsonb, ?::boolean, ?::timestamptz, ?::timestamptz, now(), ?, ?, ?, ?::timestamptz, ?, ?::boolean, ?, ?
			WHERE EXISTS (SELECT 1 FROM claimed)
			ON CONFLICT (id) DO NOTHING
			RETURNING 1),
		queued AS (`+outSQL+`)
		SELECT count(*) FROM stored`, args...).Scan(&stored).Error; err != nil {
		return fmt.Errorf("storing request %s: %w", sub.RequestID, err)
	}
	inserted := stored > 0
	if inserted {
		m.metrics.received.WithLabelValues(sub.Type).Inc()
		m.logger.InfoContext(ctx, "request received", "request_id", sub.RequestID, "type", sub.Type)
		m.Wake()
	}
	return nil
}

// finishErasure completes an erasure request once every participant,
// including the email system, confirmed, and scrubs the subject from the row
// and from every other finished request of the same subject (their reports
// are deleted: the links answer 410 Gone).
//
// erasure.completed (to the notifier) and erasure.finished (here) may be
// handled in either order. The address stays on the row until the "deleted"
// email is recorded as sent or skipped: if it is not yet, the notifier blanks
// subject_email in the transaction that records it (notify.Notifier.finish).
// Both sides lock the requests row first, so exactly one of them sees the
// other's commit and scrubs.
func (m *Manager) finishErasure(ctx context.Context, msg message.Message) error {
	var fin event.ErasureFinished
	if err := msg.Decode(&fin); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if _, err := uuid.Parse(fin.RequestID); err != nil {
		return fmt.Errorf("%w: request_id is not a UUID", ErrInvalid)
	}
	var reports []string
	err := m.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		fresh, err := inbox.Claim(ctx, tx, Consumer, msg.ID)
		if err != nil || !fresh {
			return err
		}
		var row struct {
			State              State
			SubjectID          string
			SubjectEmail       string
			SubjectPhone       string
			SubjectIdentifiers string
		}
		res := tx.Raw(`SELECT state, subject_id, subject_email, subject_phone, subject_identifiers::text AS subject_identifiers
			FROM requests WHERE id = ? AND type = ? FOR UPDATE`,
			fin.RequestID, event.KindErasure).Scan(&row)
		if res.Error != nil {
			return fmt.Errorf("loading request %s: %w", fin.RequestID, res.Error)
		}
		if res.RowsAffected == 0 {
			return fmt.Errorf("%w: no erasure request %s", ErrInvalid, fin.RequestID)
		}
		if row.State == StateCompleted || row.State == StateCancelled {
			// A cancelled erasure never finishes (docs/console.md); a late
			// erasure.finished changes nothing either.
			return nil
		}
		// Every participant confirmed: gdpr's own copy goes now, in the
		// transaction that completes the erasure (docs/privacy.md). Only this
		// row's address stays until its "deleted" email is recorded.
		if reports, err = scrubSubject(tx, fin.RequestID, event.Subject{
			ID: row.SubjectID, Email: row.SubjectEmail, Phone: row.SubjectPhone, Identifiers: parseIdentifiers(row.SubjectIdentifiers),
		}); err != nil {
			return err
		}
		// Read under the row lock taken above, so the notifier's commit is
		// either seen here or sees ours.
		recorded, err := m.emails.DeletedEmailRecorded(ctx, tx, fin.RequestID)
		if err != nil {
			return err
		}
		if err := tx.Exec(`UPDATE requests SET state = ?, completed_at = now(), updated_at = now(),
			subject_id = '', subject_phone = '', subject_identifiers = '{}', lease_until = NULL, erased_by = id,
			subject_email = CASE WHEN ? THEN '' ELSE subject_email END,
			pii_scrubbed_at = CASE WHEN ? THEN now() END
			WHERE id = ?`, StateCompleted, recorded, recorded, fin.RequestID).Error; err != nil {
			return fmt.Errorf("completing erasure %s: %w", fin.RequestID, err)
		}
		m.logger.InfoContext(ctx, "erasure completed", "request_id", fin.RequestID, "reports_deleted", len(reports))
		return nil
	})
	if err != nil {
		return err
	}
	// After the commit: a crash before the files are gone leaves rows the
	// retention sweeper's purge finishes, and the download answers 410 already.
	if err := m.store.removeFiles(context.WithoutCancel(ctx), reports); err != nil {
		m.logger.WarnContext(ctx, "removing the reports of an erased subject failed; the purge retries", "request_id", fin.RequestID, "error", err)
	}
	return nil
}
