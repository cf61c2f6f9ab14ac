// Package bus moves gdpr messages over RabbitMQ: one self-healing connection,
// a confirm-mode publisher and consumers with manual acknowledgement.
package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Errors callers test with errors.Is.
var (
	// ErrUnroutable means the broker returned a mandatory message: no queue is bound for it.
	ErrUnroutable = errors.New("bus: message unroutable")
	// ErrNacked means the broker refused the message.
	ErrNacked = errors.New("bus: message nacked by broker")
	// ErrUnconfirmed means no confirm arrived in time or the channel closed first:
	// the message may or may not be stored, so retry and let consumers deduplicate.
	ErrUnconfirmed = errors.New("bus: publish outcome unknown")
	// ErrNotConnected means no broker connection could be had before the deadline.
	ErrNotConnected = errors.New("bus: not connected")
	// ErrClosed means the connection was closed by the caller.
	ErrClosed = errors.New("bus: closed")
)

// Queue is one durable queue and the routing keys bound to it.
type Queue struct {
	// Name is the queue's name without the configured prefix.
	Name     string
	Bindings []string
	// Shared marks a queue that other services declare too (a participant's,
	// from any AMQP client, after docs/protocol.md): it is declared with the
	// documented arguments only, without a delivery limit, and an existing
	// delivery limit, whoever set it, is accepted as it is.
	Shared bool
}

// Topology is what every role declares on each (re)connect, so a message
// for a role that is not running waits in its queue instead of being unroutable.
type Topology struct {
	Queues []Queue
}

// Conn is a RabbitMQ connection that redials after a loss and re-declares the
// topology each time.
type Conn struct {
	cfg      Config
	name     string
	topology Topology
	logger   *slog.Logger
	metrics  *Metrics

	// blocked is set while the broker refuses to read publishes (resource
	// alarm): a publish then fails at once instead of blocking in a socket write.
	blocked atomic.Bool

	mu        sync.Mutex
	conn      *amqp.Connection
	connected chan struct{} // closed while conn is usable; replaced on loss
	closed    bool
	// refused holds the declarations the broker refused on the current
	// connection (a queue that exists with other arguments); Check reports
	// them until a re-declaration succeeds.
	refused error

	stop chan struct{}
	done chan struct{}
}

// Option adjusts a Conn at Dial.
type Option func(*Conn)

// WithMetrics records publish confirm latency and dead letters of everything
// using the connection in m (nil: no metrics).
func WithMetrics(m *Metrics) Option {
	return func(c *Conn) { c.metrics = m }
}

// Dial connects (retrying until ctx ends) and keeps the connection alive in
// the background until Close. name identifies the connection in the broker's
// management tools.
func Dial(ctx context.Context, cfg Config, name string, topology Topology, logger *slog.Logger, opts ...Option) (*Conn, error) {
	c := &Conn{
		cfg:       cfg,
		name:      name,
		topology:  topology,
		logger:    logger,
		connected: make(chan struct{}),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	for _, o := range opts {
		o(c)
	}
	first, err := c.dialWithRetry(ctx)
	if err != nil {
		return nil, err
	}
	c.setConn(first)
	go c.supervise(first) //nolint:gosec // G118: the supervisor lives as long as the connection, not the dial's ctx
	return c, nil
}

// Exchange is the name of the topic exchange for events and commands.
func (c *Conn) Exchange() string { return c.cfg.Prefix }

// DeadLetterExchange is where unprocessable messages go.
func (c *Conn) DeadLetterExchange() string { return c.cfg.Prefix + ".dlx" }

// DeadLetterQueue holds unprocessable messages with their reasons.
func (c *Conn) DeadLetterQueue() string { return c.cfg.Prefix + ".dead-letter" }

// QueueName returns the full name of a topology queue.
func (c *Conn) QueueName(name string) string { return c.cfg.Prefix + "." + name }

// Config returns the AMQP settings the connection was made with.
func (c *Conn) Config() Config { return c.cfg }

func (c *Conn) dialWithRetry(ctx context.Context) (*amqp.Connection, error) {
	backoff := 100 * time.Millisecond
	for {
		conn, err := c.dialOnce()
		if err == nil {
			return conn, nil
		}
		c.logger.WarnContext(ctx, "amqp dial failed", "connection", c.name, "error", err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: dialing amqp: %w", ErrNotConnected, err)
		case <-c.stop:
			return nil, ErrClosed
		case <-time.After(backoff + rand.N(backoff/2)): //nolint:gosec // G404: jitter, not security
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (c *Conn) dialOnce() (*amqp.Connection, error) {
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(c.name)
	conn, err := amqp.DialConfig(c.cfg.URL, amqp.Config{
		Heartbeat:  10 * time.Second,
		Properties: props,
		Dial:       amqp.DefaultDial(5 * time.Second),
	})
	if err != nil {
		return nil, err
	}
	refused, err := c.declare(conn)
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("declaring topology: %w", err)
	}
	c.setRefused(refused)
	return conn, nil
}

// declare declares the exchanges and every topology queue. A queue that
// exists with other arguments does not stop the others or the connection:
// it is still bound, and returned in refused (Check reports it, and the
// supervisor declares it again until the broker accepts).
func (c *Conn) declare(conn *amqp.Connection) (refused, err error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, err
	}
	defer func() {
		if ch != nil {
			_ = ch.Close()
		}
	}()
	if err := ch.ExchangeDeclare(c.Exchange(), "topic", true, false, false, false, nil); err != nil {
		return nil, fmt.Errorf("exchange %s: %w", c.Exchange(), err)
	}
	if err := ch.ExchangeDeclare(c.DeadLetterExchange(), "fanout", true, false, false, false, nil); err != nil {
		return nil, fmt.Errorf("exchange %s: %w", c.DeadLetterExchange(), err)
	}
	if _, err := ch.QueueDeclare(c.DeadLetterQueue(), true, false, false, false, c.queueArgs(false, false)); err != nil {
		return nil, fmt.Errorf("queue %s: %w", c.DeadLetterQueue(), mismatch(c.DeadLetterQueue(), c.queueArgs(false, false), err))
	}
	if err := ch.QueueBind(c.DeadLetterQueue(), "", c.DeadLetterExchange(), false, nil); err != nil {
		return nil, fmt.Errorf("binding %s: %w", c.DeadLetterQueue(), err)
	}
	var refusals []error
	for _, q := range c.topology.Queues {
		var qerr error
		ch, qerr = c.ensureQueue(ch, conn.Channel, q)
		var m *MismatchError
		switch {
		case qerr == nil:
		case errors.As(qerr, &m):
			c.logger.Error("amqp queue declaration refused", "connection", c.name, "queue", m.Queue,
				"argument", m.Argument, "detail", m.Detail, "fix", m.Fix())
			refusals = append(refusals, qerr)
		default:
			return nil, qerr
		}
	}
	return errors.Join(refusals...), nil
}

// DeclareQueue declares an extra queue (e.g. a participant's) on the
// current connection. A queue that exists with other arguments is bound all
// the same and reported as a *MismatchError (errors.Is ErrQueueMismatch).
func (c *Conn) DeclareQueue(ctx context.Context, q Queue) error {
	ch, err := c.Channel(ctx)
	if err != nil {
		return err
	}
	ch, err = c.ensureQueue(ch, func() (*amqp.Channel, error) { return c.Channel(ctx) }, q)
	if ch != nil {
		_ = ch.Close()
	}
	return err
}

// ensureQueue declares q on ch and binds it. The broker closes a channel
// whose declaration it refused, so it then binds on a channel from reopen,
// and returns the channel to go on with (nil when none could be opened).
func (c *Conn) ensureQueue(ch *amqp.Channel, reopen func() (*amqp.Channel, error), q Queue) (*amqp.Channel, error) {
	name := c.QueueName(q.Name)
	args := c.queueArgs(true, q.Shared)
	_, err := ch.QueueDeclare(name, true, false, false, false, args)
	var refused *MismatchError
	if err != nil {
		err = mismatch(name, args, err)
		if !errors.As(err, &refused) {
			return ch, fmt.Errorf("queue %s: %w", name, err)
		}
		if ch, err = reopen(); err != nil {
			return nil, fmt.Errorf("queue %s: reopening channel: %w", name, err)
		}
		if limit, ok := refused.currentLimit(); ok && q.Shared && refused.Argument == argDeliveryLimit {
			// Not part of the shared queue's contract: an earlier gdpr
			// version, or the participant, set one; either way is fine.
			// Declaring again with it checks the arguments that are.
			c.logger.Info("delivery limit of a shared queue kept as found", "connection", c.name, "queue", name, "delivery_limit", limit)
			args[argDeliveryLimit] = limit
			refused = nil
			if _, err := ch.QueueDeclare(name, true, false, false, false, args); err != nil {
				err = mismatch(name, c.queueArgs(true, true), err)
				if !errors.As(err, &refused) {
					return ch, fmt.Errorf("queue %s: %w", name, err)
				}
				if ch, err = reopen(); err != nil {
					return nil, fmt.Errorf("queue %s: reopening channel: %w", name, err)
				}
			}
		}
	}
	for _, key := range q.Bindings {
		if err := ch.QueueBind(name, key, c.Exchange(), false, nil); err != nil {
			return ch, fmt.Errorf("binding %s to %s: %w", name, key, err)
		}
	}
	if refused != nil {
		return ch, refused
	}
	return ch, nil
}

// queueArgs returns the declare arguments of a work queue (withDeadLetter)
// or of the dead-letter queue itself. On a quorum queue the broker enforces
// the delivery limit too, as a backstop for a message that kills its
// consumer before the consumer can count it; a shared queue has none (see
// Queue.Shared).
func (c *Conn) queueArgs(withDeadLetter, shared bool) amqp.Table {
	args := amqp.Table{}
	if c.cfg.QueueType == "quorum" {
		args[amqp.QueueTypeArg] = amqp.QueueTypeQuorum
		if withDeadLetter && !shared {
			args[argDeliveryLimit] = int64(c.cfg.DeliveryLimit)
		}
	}
	if withDeadLetter {
		args["x-dead-letter-exchange"] = c.DeadLetterExchange()
	}
	return args
}

func (c *Conn) setRefused(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.refused = err
}

func (c *Conn) setConn(conn *amqp.Connection) {
	c.blocked.Store(false)
	blockings := conn.NotifyBlocked(make(chan amqp.Blocking, 1))
	go func() {
		// Closed by the library when the connection shuts down.
		for b := range blockings {
			c.blocked.Store(b.Active)
			if b.Active {
				c.logger.Warn("amqp connection blocked by broker", "connection", c.name, "reason", b.Reason)
			} else {
				c.logger.Info("amqp connection unblocked", "connection", c.name)
			}
		}
	}()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conn = conn
	close(c.connected)
}

func (c *Conn) supervise(conn *amqp.Connection) {
	defer close(c.done)
	for {
		closed := conn.NotifyClose(make(chan *amqp.Error, 1))
		if c.waitOrRedeclare(conn, closed) {
			// Bounded: a stalled broker would otherwise keep Close waiting
			// for its close-ok until the heartbeat gives up.
			_ = conn.CloseDeadline(time.Now().Add(2 * time.Second))
			return
		}
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case <-c.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		next, err := c.dialWithRetry(ctx)
		cancel()
		if err != nil {
			return // only on Close
		}
		c.setConn(next)
		c.logger.Info("amqp connection restored", "connection", c.name)
		conn = next
	}
}

// waitOrRedeclare waits until Close (true) or the loss of conn (false).
// Meanwhile it declares the topology again, with a growing pause, for as
// long as the broker refuses part of it, so that deleting a queue declared
// with other arguments is enough to become ready.
func (c *Conn) waitOrRedeclare(conn *amqp.Connection, closed <-chan *amqp.Error) (stopped bool) {
	pause := time.Second
	for {
		c.mu.Lock()
		refused := c.refused
		c.mu.Unlock()
		var again <-chan time.Time
		if refused != nil {
			again = time.After(pause)
			pause = min(pause*2, 30*time.Second)
		}
		select {
		case <-c.stop:
			return true
		case amqpErr := <-closed:
			c.mu.Lock()
			c.conn = nil
			c.connected = make(chan struct{})
			c.mu.Unlock()
			c.logger.Warn("amqp connection lost", "connection", c.name, "error", amqpErr)
			return false
		case <-again:
			if refused, err := c.declare(conn); err == nil {
				c.setRefused(refused)
				if refused == nil {
					c.logger.Info("amqp topology declared after a refusal", "connection", c.name)
				}
			}
		}
	}
}

// connection waits until a connection is usable or ctx ends.
func (c *Conn) connection(ctx context.Context) (*amqp.Connection, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, ErrClosed
		}
		conn, wait := c.conn, c.connected
		c.mu.Unlock()
		if conn != nil && !conn.IsClosed() {
			return conn, nil
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w", ErrNotConnected, ctx.Err())
		case <-c.stop:
			return nil, ErrClosed
		}
		if conn != nil && conn.IsClosed() {
			// The supervisor has not noticed the loss yet; give it a moment.
			select {
			case <-time.After(20 * time.Millisecond):
			case <-ctx.Done():
				return nil, fmt.Errorf("%w: %w", ErrNotConnected, ctx.Err())
			}
		}
	}
}

// Channel opens a channel on the current connection, waiting for a
// reconnect while ctx allows.
func (c *Conn) Channel(ctx context.Context) (*amqp.Channel, error) {
	return c.openChannel(ctx, nil)
}

// openChannel opens a channel and runs setup on it (confirm mode, prefetch,
// consume: synchronous calls to the broker). The library's calls do not take
// a context and wait as long as the connection lives, so they run aside:
// when ctx ends first the caller gets ErrNotConnected, and the channel, if
// it comes, is closed.
func (c *Conn) openChannel(ctx context.Context, setup func(*amqp.Channel) error) (*amqp.Channel, error) {
	type result struct {
		ch  *amqp.Channel
		err error
	}
	for {
		conn, err := c.connection(ctx)
		if err != nil {
			return nil, err
		}
		res := make(chan result, 1)
		go func() {
			ch, err := conn.Channel()
			if err == nil && setup != nil {
				if err = setup(ch); err != nil {
					_ = ch.Close()
				}
			}
			res <- result{ch, err}
		}()
		var r result
		select {
		case r = <-res:
		case <-ctx.Done():
			go func() {
				if late := <-res; late.err == nil {
					_ = late.ch.Close()
				}
			}()
			return nil, fmt.Errorf("%w: opening channel: %w", ErrNotConnected, ctx.Err())
		}
		if r.err == nil {
			return r.ch, nil
		}
		if !conn.IsClosed() {
			return nil, fmt.Errorf("opening channel: %w", r.err)
		}
		// The connection died under us; wait for the next one.
	}
}

// closeChannel closes ch, waiting a bounded time for the broker's answer.
func closeChannel(ch *amqp.Channel) {
	done := make(chan struct{})
	go func() {
		_ = ch.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
	}
}

// Check reports whether the broker connection is usable, for readiness probes.
func (c *Conn) Check(ctx context.Context) error {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn == nil || conn.IsClosed() {
		return ErrNotConnected
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.refused
}

// Close stops reconnecting and closes the connection.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	close(c.stop)
	<-c.done
	return nil
}
