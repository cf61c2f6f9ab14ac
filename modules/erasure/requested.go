package erasure

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	oteltrace "go.opentelemetry.io/otel/trace"
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
		// RETURNING now(): the new row is this transaction's until it
		// commits (a concurrent insert of the same request waits on it), so
		// it needs no SELECT ... FOR UPDATE to be locked.
		var now []time.Time
		res := tx.Raw(`INSERT INTO erasures (request_id, state, subject_id, subject_email, subject_phone, subject_identifiers)
			VALUES (?, ?, ?, ?, ?, ?::jsonb) ON CONFLICT (request_id) DO NOTHING RETURNING now()`,
			body.RequestID, ErasureOpen, body.Subject.ID, body.Subject.Email, body.Subject.Phone, identifiersJSON(body.Subject.Identifiers)).Scan(&now)
		if res.Error != nil {
			return fmt.Errorf("storing erasure %s: %w", body.RequestID, res.Error)
		}
		if len(now) == 0 {
			// The same request under another message id: already fanned out.
			c.logger.InfoContext(ctx, "erasure already known", "request_id", body.RequestID)
			return nil
		}
		fx.requested = true
		e := erasureRow{State: ErasureOpen, SubjectID: body.Subject.ID, SubjectEmail: body.Subject.Email,
			SubjectPhone: body.Subject.Phone, Now: now[0]}
		e.SubjectIdentifiers = identifiersJSON(body.Subject.Identifiers)
		rows, err := c.insertParticipants(ctx, tx, body.RequestID, body.Subject, e.Now)
		if err != nil {
			return err
		}
		s := step{tx: tx, e: e, requestID: body.RequestID, cause: &m, fx: &fx, rows: rows}
		// Every message due at once goes to the outbox in one statement.
		// deliver's cancelling of a delayed message under the same key is
		// left out: the erasure row is new in this transaction, and every
		// key is the erasure's own, written only in its transactions.
		var now1 []message.Message
		var spans []oteltrace.Span
		sweepDue := time.Time{}
		for _, p := range c.registry.All() {
			if rows.byName[p.Name].State == StateCannotErase {
				c.logger.WarnContext(ctx, "erasure participant cannot erase; operator action needed",
					"request_id", body.RequestID, "participant", p.Name, "missing", c.registry.missing(p.Name, body.Subject))
				continue
			}
			var msg message.Message
			switch p.Kind {
			case KindAMQP:
				_, span := startCommandSpan(ctx, body.RequestID, p.Name, 1)
				spans = append(spans, span)
				if msg, err = c.command(s, p.Name, 1); err != nil {
					endSpans(spans, err)
					return err
				}
				sweepDue = e.Now.Add(c.cfg.ResendWait(1))
			case KindHTTP:
				if msg, err = c.timer(s, p.Name, ActionSend, 1); err != nil {
					return err
				}
			default:
				continue
			}
			now1 = append(now1, msg)
		}
		err = c.enqueueAll(ctx, tx, now1)
		endSpans(spans, err)
		if err != nil {
			return err
		}
		if err := c.checkCompletion(ctx, s); err != nil {
			return err
		}
		if sweepDue.IsZero() {
			return nil // nothing awaits a confirmation: no sweep to keep
		}
		return c.scheduleSweep(ctx, s, sweepDue)
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
func (c *Canceller) insertParticipants(ctx context.Context, tx *gorm.DB, requestID string, subject event.Subject, now time.Time) (*rowSet, error) {
	ps := c.registry.All()
	rows := newRowSet(requestID, ErasureOpen, len(ps))
	if len(ps) == 0 {
		return rows, nil
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
		rows.add(row{Participant: p.Name, Kind: p.Kind, State: state, Attempt: attempt})
	}
	// A conflict here would be a bug (the erasure row is new); let it fail loudly.
	if err := tx.WithContext(ctx).Exec(sb.String(), args...).Error; err != nil {
		return nil, fmt.Errorf("creating participants of %s: %w", requestID, err)
	}
	return rows, nil
}

// endSpans ends the command spans of one outbox write.
func endSpans(spans []oteltrace.Span, err error) {
	for _, sp := range spans {
		endCommandSpan(sp, err)
	}
}
