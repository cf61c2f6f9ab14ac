package erasure

import (
	"context"
	"fmt"
	"strconv"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/modules/message"
)

// HandleTimer runs a scheduled send (a re-send after a failure, or an HTTP
// call) or sweeps an erasure for participants whose wait for a confirmation
// is over. A send for an attempt that is no longer the next one is stale and
// changes nothing.
func (c *Canceller) HandleTimer(ctx context.Context, m message.Message) error {
	var t Timer
	if err := m.Decode(&t); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if _, err := uuid.Parse(t.RequestID); err != nil {
		return fmt.Errorf("%w: request_id %q is not a UUID", ErrInvalid, t.RequestID)
	}
	if t.Action == ActionSweep {
		return c.transition(ctx, t, &m, func(s step, _ row) error {
			return c.sweep(ctx, s)
		})
	}
	if t.Action != ActionSend {
		return fmt.Errorf("%w: unknown timer action %q", ErrInvalid, t.Action)
	}
	p, ok := c.registry.Get(t.Participant)
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownParty, t.Participant)
	}
	if t.Attempt < 1 {
		return fmt.Errorf("%w: attempt must be >= 1, got %d", ErrInvalid, t.Attempt)
	}
	if p.Kind == KindHTTP {
		return c.call(ctx, m, t, p)
	}
	return c.transition(ctx, t, &m, func(s step, r row) error {
		if r.Attempt != t.Attempt-1 || (r.State != StateRetrying && r.State != StatePending) {
			return nil
		}
		if err := c.send(ctx, s, p, t.Attempt, s.e.Now); err != nil {
			return err
		}
		return c.reschedule(ctx, s)
	})
}

// sweep re-sends to every participant whose wait for a confirmation is
// over, or marks it overdue after its last re-send.
func (c *Canceller) sweep(ctx context.Context, s step) error {
	rows, err := c.sentRows(ctx, s.tx, s.requestID)
	if err != nil {
		return err
	}
	for _, r := range rows {
		if r.SentAt.Add(c.cfg.ResendWait(r.Attempt)).After(s.e.Now) {
			continue
		}
		cur := row{Participant: r.Participant, Kind: r.Kind, State: StateSent, Attempt: r.Attempt}
		if r.Attempt > c.cfg.MaxResends {
			if err := c.markOverdue(ctx, s, cur, "", "no confirmation after "+strconv.Itoa(r.Attempt)+" commands"); err != nil {
				return err
			}
			continue
		}
		p, ok := c.registry.Get(r.Participant)
		if !ok {
			// Unregistered since the fan-out: keep it visible instead of guessing.
			if err := c.markOverdue(ctx, s, cur, "", "participant no longer registered"); err != nil {
				return err
			}
			continue
		}
		c.logger.InfoContext(ctx, "participant silent; re-sending", "request_id", s.requestID, "participant", r.Participant, "attempt", r.Attempt+1)
		if err := c.send(ctx, s, p, r.Attempt+1, s.e.Now); err != nil {
			return err
		}
	}
	return c.reschedule(ctx, s)
}

// transition runs fn on the locked erasure and, for a participant's timer,
// its row.
func (c *Canceller) transition(ctx context.Context, t Timer, cause *message.Message, fn func(s step, r row) error) error {
	var fx effects
	err := c.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		e, r, ok, err := c.lockParticipant(ctx, tx, t.RequestID, t.Participant)
		if err != nil {
			return err
		}
		if e.State == ErasureFinished || e.State == ErasureCancelled {
			// Cancelled by an operator: no timer sends anything any more.
			return nil
		}
		if !ok && t.Participant != "" {
			return fmt.Errorf("%w: %q is not a participant of %s", ErrUnknownParty, t.Participant, t.RequestID)
		}
		return fn(step{tx: tx, e: e, requestID: t.RequestID, cause: cause, fx: &fx}, r)
	})
	if err != nil {
		return fmt.Errorf("%s timer of %s for %q: %w", t.Action, t.RequestID, t.Participant, err)
	}
	c.apply(fx)
	return nil
}

// Resend is the operator's action on an overdue, failed or silent
// participant: it sends a new command (or makes a new HTTP call) now, with
// the usual timeout and re-sends after it.
func (c *Canceller) Resend(ctx context.Context, requestID, participant string) error {
	return c.ResendWithin(ctx, requestID, participant, nil)
}

// ResendWithin is Resend; within, when set, runs in the same transaction
// once the re-send is recorded (the operator's audit record), so both commit
// or neither does.
func (c *Canceller) ResendWithin(ctx context.Context, requestID, participant string, within func(tx *gorm.DB) error) error {
	p, ok := c.registry.Get(participant)
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownParty, participant)
	}
	t := Timer{RequestID: requestID, Participant: participant, Action: ActionSend}
	cause, err := message.New("erasure.resend", t, nil)
	if err != nil {
		return err
	}
	cause.CorrelationID = requestID
	var stateErr error
	err = c.transition(ctx, t, &cause, func(s step, r row) error {
		switch r.State {
		case StateOverdue, StateFailed, StateSent, StateRetrying:
		default:
			stateErr = fmt.Errorf("%w: %s is %s", ErrNotResendable, participant, r.State)
			return nil
		}
		if within != nil {
			if err := within(s.tx); err != nil {
				return err
			}
		}
		if p.Kind == KindHTTP {
			if err := c.setState(ctx, s, participant, StateRetrying, r.Attempt, "", "re-sent by an operator"); err != nil {
				return err
			}
			// Replaces a pending retry of the same attempt, due now.
			return c.scheduleTimer(ctx, s, participant, ActionSend, r.Attempt+1, s.e.Now)
		}
		// A pending retry of this attempt would be stale now.
		if _, err := c.sched.Cancel(ctx, s.tx, timerKey(requestID, participant, ActionSend, r.Attempt+1)); err != nil {
			return err
		}
		if err := c.send(ctx, s, p, r.Attempt+1, s.e.Now); err != nil {
			return err
		}
		return c.reschedule(ctx, s)
	})
	if err != nil {
		return err
	}
	if stateErr != nil {
		return stateErr
	}
	c.logger.InfoContext(ctx, "participant re-sent by operator", "request_id", requestID, "participant", participant)
	return nil
}
