package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gdpr-oss/gdpr/modules/message"
)

// Publisher publishes persistent, mandatory messages with publisher confirms.
// Publish calls from many goroutines are pipelined: each waits only for its
// own confirm, not for the ones before it.
type Publisher struct {
	conn     *Conn
	exchange string
	chans    []*pubChannel
	next     atomic.Uint64
}

// NewPublisher returns a publisher to the main exchange.
func NewPublisher(conn *Conn) *Publisher {
	return newPublisher(conn, conn.Exchange())
}

func newPublisher(conn *Conn, exchange string) *Publisher {
	p := &Publisher{conn: conn, exchange: exchange}
	for range conn.cfg.PublishChannels {
		p.chans = append(p.chans, &pubChannel{conn: conn, turn: make(chan struct{}, 1)})
	}
	return p
}

// Publish sends m and waits for the broker's confirm, at most the configured
// confirm timeout. It returns nil only when the broker confirmed; ErrUnroutable,
// ErrNacked or ErrUnconfirmed otherwise.
func (p *Publisher) Publish(ctx context.Context, m message.Message) error {
	return p.PublishTo(ctx, p.exchange, m)
}

// PublishTo is Publish to a named exchange (used by the scheduler, whose
// messages name their own exchange). The exchange must exist: publishing to
// a missing one closes the channel and fails the other publishes in flight on it.
func (p *Publisher) PublishTo(ctx context.Context, exchange string, m message.Message) error {
	if err := p.send(ctx, exchange, m.Key(), encode(m)); err != nil {
		return fmt.Errorf("publishing %s %s: %w", m.Type, m.ID, err)
	}
	return nil
}

// send publishes pub, whose Headers map it takes over (and writes to).
func (p *Publisher) send(ctx context.Context, exchange, key string, pub amqp.Publishing) error {
	// The whole call, waiting for a connection included, is bounded by the
	// confirm timeout so that callers never pile up behind a broker outage.
	ctx, cancel := context.WithTimeout(ctx, p.conn.cfg.ConfirmTimeout)
	defer cancel()
	start := time.Now()
	pc := p.chans[p.next.Add(1)%uint64(len(p.chans))]
	if p.conn.blocked.Load() {
		return fmt.Errorf("%w: connection blocked by the broker", ErrUnconfirmed)
	}
	pend, err := pc.publish(ctx, exchange, key, pub)
	if err != nil {
		return err
	}
	select {
	case err = <-pend.done:
	case <-ctx.Done():
		pend.abandon()
		err = fmt.Errorf("%w: %w", ErrUnconfirmed, ctx.Err())
	}
	if err != nil {
		return err
	}
	p.conn.metrics.observeConfirm(time.Since(start))
	return nil
}

// Close releases the publisher's channels; pending publishes fail as unconfirmed.
func (p *Publisher) Close() error {
	for _, pc := range p.chans {
		pc.close()
	}
	return nil
}

// pending is one publish waiting for its confirm.
type pending struct {
	done     chan error // buffered 1, written once
	returned bool       // only touched by the channel's listener goroutine
	table    *confirmTable
	seq      uint64
}

func (p *pending) abandon() { p.table.remove(p.seq) }

// confirmTable maps the publish sequence numbers of one channel to their
// waiting publishes. Its lock is never held across I/O, so the listener that
// drains the library's confirm notifications can always make progress.
type confirmTable struct {
	mu      sync.Mutex
	pending map[uint64]*pending
	closed  bool
}

func (t *confirmTable) add(p *pending) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.pending[p.seq] = p
	return true
}

func (t *confirmTable) get(seq uint64) *pending {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.pending[seq]
}

func (t *confirmTable) take(seq uint64) *pending {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.pending[seq]
	delete(t.pending, seq)
	return p
}

func (t *confirmTable) remove(seq uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.pending, seq)
}

// failAll fails every waiting publish; later adds are refused.
func (t *confirmTable) failAll(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	for seq, p := range t.pending {
		p.done <- err
		delete(t.pending, seq)
	}
}

// pubChannel is one confirm-mode channel, reopened lazily after a loss.
type pubChannel struct {
	conn *Conn
	// turn is a one-slot semaphore serialising publishes on the channel (the
	// sequence number must match the publish order); unlike a mutex a
	// waiter gives up when its context ends.
	turn  chan struct{}
	ch    *amqp.Channel // guarded by turn
	table *confirmTable // guarded by turn
}

func (pc *pubChannel) publish(ctx context.Context, exchange, key string, pub amqp.Publishing) (*pending, error) {
	select {
	case pc.turn <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: waiting for a publish channel: %w", ErrUnconfirmed, ctx.Err())
	}
	defer func() { <-pc.turn }()
	if pc.ch == nil || pc.ch.IsClosed() {
		if err := pc.open(ctx); err != nil {
			return nil, err
		}
	}
	p := &pending{done: make(chan error, 1), table: pc.table, seq: pc.ch.GetNextPublishSeqNo()}
	// Returns carry headers but no delivery tag; the sequence number ties a
	// return to its confirm.
	pub.Headers[headerPublishSeq] = int64(p.seq) //nolint:gosec // G115: a channel's publish count never reaches 2^63
	if !pc.table.add(p) {
		return nil, fmt.Errorf("%w: channel closed", ErrUnconfirmed)
	}
	if err := pc.ch.PublishWithContext(ctx, exchange, key, true, false, pub); err != nil {
		pc.table.remove(p.seq)
		return nil, fmt.Errorf("%w: %w", ErrUnconfirmed, err)
	}
	return p, nil
}

// open must be called holding turn.
func (pc *pubChannel) open(ctx context.Context) error {
	ch, err := pc.conn.openChannel(ctx, func(ch *amqp.Channel) error {
		if err := ch.Confirm(false); err != nil {
			return fmt.Errorf("enabling confirms: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	table := &confirmTable{pending: map[uint64]*pending{}}
	// The buffer only smooths bursts: the listener never blocks for long
	// because it takes no lock held across I/O.
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 256))
	// Unbuffered on purpose: the library's reader blocks until the listener
	// takes a return, and the broker sends a message's return before its
	// confirm, so the listener always marks a publish returned before it
	// sees that publish's confirm.
	returns := ch.NotifyReturn(make(chan amqp.Return))
	go listen(table, confirms, returns)
	pc.ch, pc.table = ch, table
	return nil
}

func listen(table *confirmTable, confirms <-chan amqp.Confirmation, returns <-chan amqp.Return) {
	for {
		select {
		case r, ok := <-returns:
			if !ok {
				returns = nil
				continue
			}
			seq, _ := r.Headers[headerPublishSeq].(int64)
			if p := table.get(uint64(seq)); p != nil { //nolint:gosec // G115: written from a uint64 sequence number above
				p.returned = true
			}
		case c, ok := <-confirms:
			if !ok {
				table.failAll(fmt.Errorf("%w: channel closed before confirm", ErrUnconfirmed))
				return
			}
			p := table.take(c.DeliveryTag)
			if p == nil {
				continue // its publisher gave up waiting
			}
			switch {
			case p.returned:
				p.done <- ErrUnroutable
			case !c.Ack:
				p.done <- ErrNacked
			default:
				p.done <- nil
			}
		}
	}
}

func (pc *pubChannel) close() {
	pc.turn <- struct{}{}
	ch := pc.ch
	pc.ch = nil
	<-pc.turn
	if ch != nil {
		closeChannel(ch)
	}
}

// IsRefused reports whether a publish failed because the broker refused
// this message (unroutable or nacked), as opposed to an unknown outcome
// (connection lost, confirm timed out): a refused message is refused
// again if re-sent at once, so its sender backs off for it alone.
func IsRefused(err error) bool {
	return errors.Is(err, ErrUnroutable) || errors.Is(err, ErrNacked)
}
