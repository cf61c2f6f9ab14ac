package bus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// DeadLetter is one message in the dead-letter queue as an operator sees it:
// ids, type and why it is there, never its body.
type DeadLetter struct {
	MessageID string `json:"message_id"`
	Type      string `json:"type"`
	// RequestID is the message's correlation id.
	RequestID string `json:"request_id"`
	// Queue is the work queue (without prefix) it was dead-lettered from.
	Queue string `json:"queue"`
	// Class is ReasonPoison, ReasonMalformed, ReasonRetryExpired,
	// ReasonDeliveryLimit, or the broker's own reason for a message the
	// broker dead-lettered itself.
	Class  string `json:"class"`
	Reason string `json:"reason"`
	// At is when it was dead-lettered: the x-gdpr-dead-letter-at header, or
	// for a message the broker dead-lettered the time of its x-death entry,
	// else when it was published.
	At time.Time `json:"at"`
}

// ErrNoOrigin means a dead letter names no queue it came from, so it cannot be
// put back.
var ErrNoOrigin = errors.New("dead letter names no origin queue")

// DeadLetters lists up to limit messages of the dead-letter queue, oldest
// first, and leaves them there.
func (c *Conn) DeadLetters(ctx context.Context, limit int) ([]DeadLetter, error) {
	ch, err := c.Channel(ctx)
	if err != nil {
		return nil, err
	}
	// Closing the channel hands back every message taken without an ack.
	defer closeChannel(ch)
	var out []DeadLetter
	for len(out) < limit {
		d, ok, err := ch.Get(c.DeadLetterQueue(), false)
		if err != nil {
			return out, fmt.Errorf("reading %s: %w", c.DeadLetterQueue(), err)
		}
		if !ok {
			break
		}
		out = append(out, c.describe(d))
	}
	return out, nil
}

// Redrive puts up to limit dead letters back into the queues they came
// from (only those from queue, when it is not empty), each with a fresh
// retry budget, and returns how many it moved. Each copy is confirmed by the
// broker before its dead letter is removed, so a failure midway leaves every
// message in one queue or, at worst, in both (consumers deduplicate by
// message id). Run it once the cause of the dead letters is fixed.
func (c *Conn) Redrive(ctx context.Context, queue string, limit int) (int, error) {
	ch, err := c.Channel(ctx)
	if err != nil {
		return 0, err
	}
	// Messages skipped by the queue filter stay unacked until the channel
	// closes, so Get does not hand them out again and the loop ends.
	defer closeChannel(ch)
	pub := newPublisher(c, "")
	defer pub.Close()
	moved := 0
	for moved < limit {
		d, ok, err := ch.Get(c.DeadLetterQueue(), false)
		if err != nil {
			return moved, fmt.Errorf("reading %s: %w", c.DeadLetterQueue(), err)
		}
		if !ok {
			return moved, nil
		}
		origin := c.describe(d).Queue
		if queue != "" && origin != queue {
			continue
		}
		if origin == "" {
			return moved, fmt.Errorf("message %s: %w", d.MessageId, ErrNoOrigin)
		}
		if err := pub.send(ctx, "", c.QueueName(origin), redrivePublishing(d)); err != nil {
			return moved, fmt.Errorf("putting message %s back into %s: %w", d.MessageId, origin, err)
		}
		if err := d.Ack(false); err != nil {
			return moved, fmt.Errorf("removing dead letter %s: %w", d.MessageId, err)
		}
		moved++
	}
	return moved, nil
}

// describe reads where d came from and why: the consumer's own headers, or
// for a message the broker dead-lettered (delivery limit on a quorum queue)
// the broker's x-first-death-* headers.
func (c *Conn) describe(d amqp.Delivery) DeadLetter {
	dl := DeadLetter{MessageID: d.MessageId, Type: d.Type, RequestID: d.CorrelationId}
	str := func(k string) string {
		s, _ := d.Headers[k].(string)
		return s
	}
	dl.Queue, dl.Class, dl.Reason = str(HeaderDeadLetterQueue), str(HeaderDeadLetterClass), str(HeaderDeadLetterReason)
	dl.At = deadLetteredAt(d)
	if dl.Queue == "" {
		if q, ok := strings.CutPrefix(str("x-first-death-queue"), c.cfg.Prefix+"."); ok {
			dl.Queue = q
		}
		dl.Class = str("x-first-death-reason")
		dl.Reason = "dead-lettered by the broker"
	}
	return dl
}

// redrivePublishing is d as it was first published: without the
// dead-letter and retry headers, so it gets a whole new retry budget.
func redrivePublishing(d amqp.Delivery) amqp.Publishing {
	pub := copyPublishing(d)
	for k := range pub.Headers {
		switch {
		case k == HeaderDeadLetterReason, k == HeaderDeadLetterClass, k == HeaderDeadLetterQueue,
			k == HeaderDeadLetterAt, k == HeaderRetries, k == HeaderFailingSince,
			k == "x-death", strings.HasPrefix(k, "x-first-death-"), strings.HasPrefix(k, "x-last-death-"):
			delete(pub.Headers, k)
		}
	}
	return pub
}

func deadLetteredAt(d amqp.Delivery) time.Time {
	if s, ok := d.Headers[HeaderDeadLetterAt].(string); ok {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			return t
		}
	}
	if deaths, ok := d.Headers["x-death"].([]any); ok {
		for _, x := range deaths {
			if tbl, ok := x.(amqp.Table); ok {
				if t, ok := tbl["time"].(time.Time); ok {
					return t
				}
			}
		}
	}
	return d.Timestamp
}

// DeadLetterFilter selects dead letters to purge. Every set field must
// match; the zero filter selects all.
type DeadLetterFilter struct {
	// DeadLetteredBefore selects those dead-lettered before it; a dead
	// letter of unknown age is selected only when it is zero.
	DeadLetteredBefore time.Time
	// RequestIDs selects those of these requests (their correlation id).
	RequestIDs []string
}

func (f DeadLetterFilter) selects(dl DeadLetter) bool {
	if !f.DeadLetteredBefore.IsZero() && (dl.At.IsZero() || !dl.At.Before(f.DeadLetteredBefore)) {
		return false
	}
	if f.RequestIDs != nil && !slices.Contains(f.RequestIDs, dl.RequestID) {
		return false
	}
	return true
}

// maxPurgeScan bounds how many dead letters one purge looks at.
const maxPurgeScan = 100_000

// DeadLetterRequestIDs returns the distinct request ids (correlation ids) of
// the dead letters, looking at up to as many as a purge does, and leaves
// every message where it is. The retention sweeper asks which of them were
// erased: looking at the queue's head only would miss an erased request's
// dead letter behind others.
func (c *Conn) DeadLetterRequestIDs(ctx context.Context) ([]string, error) {
	ch, err := c.Channel(ctx)
	if err != nil {
		return nil, err
	}
	// Closing the channel hands back every message taken without an ack.
	defer closeChannel(ch)
	seen := map[string]bool{}
	var out []string
	err = c.eachDeadLetter(ctx, ch, maxPurgeScan, func(d amqp.Delivery) (bool, error) {
		if id := d.CorrelationId; id != "" && !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
		return true, nil
	})
	return out, err
}

// eachDeadLetter hands fn the dead-letter queue's messages taken on ch
// without an ack, at most maxScan of them, until the queue has no more for
// this channel, ctx ends, or fn says to stop or fails.
func (c *Conn) eachDeadLetter(ctx context.Context, ch *amqp.Channel, maxScan int, fn func(amqp.Delivery) (more bool, err error)) error {
	for range maxScan {
		if err := ctx.Err(); err != nil {
			return err
		}
		d, ok, err := ch.Get(c.DeadLetterQueue(), false)
		if err != nil {
			return fmt.Errorf("reading %s: %w", c.DeadLetterQueue(), err)
		}
		if !ok {
			return nil
		}
		if more, err := fn(d); err != nil || !more {
			return err
		}
	}
	return nil
}

// PurgeDeadLetters removes up to limit dead letters that f selects and
// returns them; with dryRun it only lists them. The others stay where they
// are. Each removal is an ack on one channel, and the purge ends with a
// synchronous round trip on that channel: the broker handles a channel's
// frames in order, so once it answered every listed removal was done. Two
// purges at once see different messages (a message taken by one is
// invisible to the other until handed back), so each is removed once.
func (c *Conn) PurgeDeadLetters(ctx context.Context, f DeadLetterFilter, limit int, dryRun bool) ([]DeadLetter, error) {
	ch, err := c.Channel(ctx)
	if err != nil {
		return nil, err
	}
	// Closing the channel hands back every message not removed.
	defer closeChannel(ch)
	var out []DeadLetter
	if limit <= 0 {
		return out, nil
	}
	err = c.eachDeadLetter(ctx, ch, maxPurgeScan, func(d amqp.Delivery) (bool, error) {
		dl := c.describe(d)
		if !f.selects(dl) {
			return true, nil
		}
		if !dryRun {
			if err := d.Ack(false); err != nil {
				return false, fmt.Errorf("removing dead letter %s: %w", d.MessageId, err)
			}
		}
		out = append(out, dl)
		return len(out) < limit, nil
	})
	if err != nil {
		return out, err
	}
	if !dryRun && len(out) > 0 {
		if _, err := ch.QueueDeclarePassive(c.DeadLetterQueue(), true, false, false, false, nil); err != nil {
			return out, fmt.Errorf("confirming the removal of %d dead letters: %w", len(out), err)
		}
	}
	return out, nil
}
