package erasure

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/inbox"
	"github.com/gdpr-oss/gdpr/modules/message"
)

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
