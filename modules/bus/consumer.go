package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gdpr-oss/gdpr/modules/lifecycle"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/trace"
)

// Handler handles one message (see message.Handler): nil acks it, a
// message.Permanent error dead-letters it with the reason, any other error
// has it tried again after a backoff.
type Handler = message.Handler

// ErrPoison is message.ErrPermanent, kept for participants built on this
// package.
//
// Deprecated: use message.ErrPermanent.
var ErrPoison = message.ErrPermanent

// Poison marks err permanent, kept for participants built on this package.
//
// Deprecated: use message.Permanent.
func Poison(err error) error { return message.Permanent(err) }

// ConsumerOptions configures one consumer.
type ConsumerOptions struct {
	// Middleware wraps the handler inside the consumer's own (trace
	// context, then panic recovery), first outermost.
	Middleware []message.Middleware
	// Queue is a topology queue name (without prefix).
	Queue string
	// Concurrency is how many messages are handled at once; default 1.
	Concurrency int
	// Prefetch overrides the connection's prefetch when > 0.
	Prefetch int
	// RetryBackoff is the first delay before a failed message is tried
	// again; it doubles with each attempt up to 30s. Default 200ms.
	RetryBackoff time.Duration
}

// Consumer delivers messages from one queue to a Handler, acking only after
// the handler succeeded, and re-subscribes by itself after a connection loss.
type Consumer struct {
	conn    *Conn
	opts    ConsumerOptions
	handler Handler
	logger  *slog.Logger
	dlx     *Publisher
	// retry puts failed messages back at the end of their queue (default
	// exchange, routing key = queue name).
	retry *Publisher

	handlers context.Context // cancelled when the drain deadline passes
	life     lifecycle.Runner
}

// NewConsumer returns a consumer; nothing happens until Start.
func NewConsumer(conn *Conn, opts ConsumerOptions, h Handler, logger *slog.Logger) *Consumer {
	if opts.Concurrency < 1 {
		opts.Concurrency = 1
	}
	if opts.Prefetch < 1 {
		opts.Prefetch = max(conn.cfg.Prefetch, opts.Concurrency)
	}
	if opts.RetryBackoff <= 0 {
		opts.RetryBackoff = 200 * time.Millisecond
	}
	// The consumer settles what the chain returns: acknowledgement,
	// dead-lettering and retries stay here, the rest is middleware.
	c := &Consumer{
		conn:   conn,
		opts:   opts,
		logger: logger.With("queue", opts.Queue),
		dlx:    newPublisher(conn, conn.DeadLetterExchange()),
		retry:  newPublisher(conn, ""),
	}
	// The span sits inside Trace (its parent is the message's traceparent)
	// and outside Recover (a panic ends it as an error).
	mws := append([]message.Middleware{message.Trace, c.span, message.Recover}, opts.Middleware...)
	c.handler = message.Chain(h, mws...)
	return c
}

// Name identifies the component in logs.
func (c *Consumer) Name() string { return "consumer " + c.opts.Queue }

// Start subscribes in the background; it returns once the first
// subscription is made or ctx ends.
func (c *Consumer) Start(ctx context.Context) error {
	runCtx, handlers, err := c.life.Begin(ctx)
	if err != nil {
		return fmt.Errorf("starting consumer %s: %w", c.opts.Queue, err)
	}
	c.handlers = handlers
	first := make(chan error, 1)
	c.life.Go(func() { c.run(runCtx, first) })
	select {
	case err = <-first:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		_ = c.life.Stop(context.Background(), nil)
	}
	return err
}

// Stop stops taking deliveries, lets in-flight handlers finish until ctx
// ends (then cancels them; their messages are redelivered), and returns
// once every handler has.
func (c *Consumer) Stop(ctx context.Context) error {
	err := c.life.Stop(ctx, nil)
	_ = c.dlx.Close()
	_ = c.retry.Close()
	if err != nil {
		return fmt.Errorf("draining %s: %w", c.opts.Queue, err)
	}
	return nil
}

// Failed receives a failure of the consumer after Start (a panic outside
// a handler; a handler's panic only fails its message).
func (c *Consumer) Failed() <-chan error { return c.life.Failed() }

// Running is how many of the consumer's goroutines have not returned yet
// (the subscription loop; handlers run inside it).
func (c *Consumer) Running() int { return c.life.Running() }

func (c *Consumer) run(ctx context.Context, first chan<- error) {
	backoff := 100 * time.Millisecond
	for {
		ch, deliveries, err := c.subscribe(ctx)
		if first != nil {
			first <- err
			first = nil
			if err != nil {
				return
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			c.logger.WarnContext(ctx, "amqp subscribe failed", "error", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		c.consume(ctx, ch, deliveries)
		if ctx.Err() != nil {
			return
		}
	}
}

func (c *Consumer) subscribe(ctx context.Context) (*amqp.Channel, <-chan amqp.Delivery, error) {
	var deliveries <-chan amqp.Delivery
	ch, err := c.conn.openChannel(ctx, func(ch *amqp.Channel) error {
		if err := ch.Qos(c.opts.Prefetch, 0, false); err != nil {
			return fmt.Errorf("setting prefetch: %w", err)
		}
		d, err := ch.Consume(c.conn.QueueName(c.opts.Queue), "", false, false, false, false, nil)
		if err != nil {
			return fmt.Errorf("consuming %s: %w", c.opts.Queue, err)
		}
		deliveries = d
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return ch, deliveries, nil
}

// consume runs handlers until the channel closes or ctx ends; it returns
// after every handler it started has finished.
func (c *Consumer) consume(ctx context.Context, ch *amqp.Channel, deliveries <-chan amqp.Delivery) {
	sem := make(chan struct{}, c.opts.Concurrency)
	var wg sync.WaitGroup
	// waiting ends the backoff of messages waiting for their retry when the
	// consumer stops or the channel is gone (the broker has requeued them
	// already), so resubscribing is not held up by a 30s backoff.
	waiting, endWaiting := context.WithCancel(ctx)
	defer func() {
		endWaiting()
		wg.Wait()
		// Deliveries prefetched but not started go back to the queue.
		closeChannel(ch)
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case d, ok := <-deliveries:
			if !ok {
				return
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				// Not started: give it back for another consumer.
				_ = d.Nack(false, true)
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := c.handle(d)
				// A message waiting for its retry does not hold a handler
				// slot; the prefetch still bounds how many wait.
				<-sem
				if r.after == 0 {
					return
				}
				t := time.NewTimer(r.after)
				defer t.Stop()
				select {
				case <-t.C:
				case <-waiting.Done():
					// Stopping, or the channel is gone and the broker has
					// the message back already: no copy, or it would be there twice.
					_ = d.Nack(false, true)
					return
				}
				if r.copy {
					c.retryLater(d, r)
					return
				}
				_ = d.Nack(false, true)
			}()
		}
	}
}

// retry says what becomes of a delivery that handle did not settle (after
// > 0): after the delay it is either put back as a copy with its failed
// attempts counted (copy), or requeued by the broker.
type retry struct {
	after        time.Duration
	copy         bool
	retries      int64
	failingSince time.Time
}

// handle runs the handler for d and settles it, or says how and after what
// delay it is tried again.
func (c *Consumer) handle(d amqp.Delivery) retry {
	m := decode(d)
	// The handler gets its trace from the Trace middleware; this is for
	// the consumer's own log lines about the delivery.
	ctx := message.TraceContext(c.handlers, m)
	if err := malformed(d); err != nil {
		return c.deadLetter(ctx, d, m, ReasonMalformed, err)
	}
	err := c.handler(c.handlers, m)
	switch {
	case err == nil:
		if ackErr := d.Ack(false); ackErr != nil {
			c.logger.WarnContext(ctx, "ack failed; message will be redelivered", "error", ackErr)
		}
		return retry{}
	case message.IsPermanent(err):
		return c.deadLetter(ctx, d, m, ReasonPoison, err)
	case ctx.Err() != nil:
		// Stopped past the drain deadline: not the message's fault.
		_ = d.Nack(false, true)
		return retry{}
	}
	if c.conn.cfg.QueueType == "quorum" && m.DeliveryCount >= int64(c.conn.cfg.DeliveryLimit) {
		// Its deliveries kept ending without a verdict (it may be what kills
		// its consumer) and this is the last one the queue allows:
		// dead-letter it here, with the reason, rather than retry it.
		return c.deadLetter(ctx, d, m, ReasonDeliveryLimit, fmt.Errorf("delivered %d times: %w", m.DeliveryCount+1, err))
	}
	now := time.Now()
	failingSince := m.FailingSince
	if failingSince.IsZero() {
		failingSince = now
	}
	if now.Sub(failingSince) >= c.conn.cfg.RetryFor {
		return c.deadLetter(ctx, d, m, ReasonRetryExpired, fmt.Errorf("failing since %s: %w", failingSince.UTC().Format(time.RFC3339), err))
	}
	attempt := m.Retries + m.DeliveryCount
	c.logger.WarnContext(ctx, "message handling failed; will retry", "type", m.Type, "attempt", attempt+1, "error", err)
	// A failed attempt goes back as a copy, not through the broker's
	// requeue: a database or SMTP outage fails every attempt, and requeues
	// would use up the queue's delivery limit within minutes and
	// dead-letter good messages. The limit is left for messages whose
	// deliveries end without a verdict; retry_for bounds the attempts.
	return retry{after: c.backoff(attempt), copy: true, retries: m.Retries + 1, failingSince: failingSince}
}

// retryLater puts a copy of d back at the end of its queue and acks d once
// the copy is confirmed. Should the copy not be confirmed, the broker
// requeues d instead; should the ack fail after the copy was confirmed, the
// message exists twice with one id, which consumers deduplicate.
func (c *Consumer) retryLater(d amqp.Delivery, r retry) {
	pub := retryPublishing(d, r.retries, r.failingSince)
	if err := c.retry.send(c.handlers, "", c.conn.QueueName(c.opts.Queue), pub); err != nil {
		c.logger.WarnContext(trace.WithMessageID(c.handlers, d.MessageId), "putting a failed message back failed; the broker requeues it", "error", err)
		_ = d.Nack(false, true)
		return
	}
	if err := d.Ack(false); err != nil {
		c.logger.WarnContext(trace.WithMessageID(c.handlers, d.MessageId), "ack after putting a failed message back failed; it may be handled twice", "error", err)
	}
	c.conn.metrics.retried(c.opts.Queue)
}

// backoff is RetryBackoff doubled per earlier attempt, capped at 30s, with
// jitter so that a burst of failures does not come back as a burst.
func (c *Consumer) backoff(attempts int64) time.Duration {
	delay := min(c.opts.RetryBackoff<<min(attempts, 8), 30*time.Second)
	return delay/2 + rand.N(delay/2+1) //nolint:gosec // G404: jitter, not security
}

// malformed reports why a delivery cannot be a gdpr message at all.
func malformed(d amqp.Delivery) error {
	if d.MessageId == "" {
		return errors.New("missing message_id")
	}
	if d.Type == "" {
		return errors.New("missing type")
	}
	if !json.Valid(d.Body) {
		return errors.New("body is not JSON")
	}
	return nil
}

// deadLetter republishes the message to the dead-letter exchange with the
// reason, then acks it. If that publish is not confirmed the message is
// requeued after a backoff, so nothing is dropped.
func (c *Consumer) deadLetter(ctx context.Context, d amqp.Delivery, m message.Message, class string, reason error) retry {
	c.logger.WarnContext(ctx, "message dead-lettered", "type", m.Type, "reason", class, "error", reason.Error())
	pub := deadLetterPublishing(d, c.opts.Queue, class, reason)
	if err := c.dlx.send(context.WithoutCancel(ctx), c.dlx.exchange, d.RoutingKey, pub); err != nil {
		c.logger.ErrorContext(ctx, "dead-lettering failed; requeueing", "error", err)
		return retry{after: c.backoff(m.Retries + m.DeliveryCount)}
	}
	if err := d.Ack(false); err != nil {
		c.logger.WarnContext(ctx, "ack after dead-lettering failed; message will be redelivered", "error", err)
	}
	c.conn.metrics.deadLettered(c.opts.Queue, class)
	return retry{}
}
