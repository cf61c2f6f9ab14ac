package bus

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

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
		p.chans = append(p.chans, &pubChannel{conn: conn})
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
// messages name their own exchange).
func (p *Publisher) PublishTo(ctx context.Context, exchange string, m message.Message) error {
	ctx, cancel := context.WithTimeout(ctx, p.conn.cfg.ConfirmTimeout)
	defer cancel()
	pc := p.chans[p.next.Add(1)%uint64(len(p.chans))]
	wait, err := pc.publish(ctx, exchange, m)
	if err != nil {
		return fmt.Errorf("publishing %s %s: %w", m.Type, m.ID, err)
	}
	if err := wait(ctx); err != nil {
		return fmt.Errorf("publishing %s %s: %w", m.Type, m.ID, err)
	}
	return nil
}

// Close releases the publisher's channels; pending publishes fail as unconfirmed.
func (p *Publisher) Close() error {
	for _, pc := range p.chans {
		pc.close()
	}
	return nil
}

type pending struct {
	done     chan error
	returned bool
}

// pubChannel is one confirm-mode channel, reopened lazily after a loss.
type pubChannel struct {
	conn *Conn

	mu      sync.Mutex
	ch      *amqp.Channel
	pending map[uint64]*pending
}

func (pc *pubChannel) publish(ctx context.Context, exchange string, m message.Message) (func(context.Context) error, error) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.ch == nil || pc.ch.IsClosed() {
		if err := pc.open(ctx); err != nil {
			return nil, err
		}
	}
	seq := pc.ch.GetNextPublishSeqNo()
	pub := encode(m)
	// Returns carry headers but no delivery tag; the sequence number ties a
	// return to its confirm.
	pub.Headers[headerPublishSeq] = int64(seq)
	p := &pending{done: make(chan error, 1)}
	pc.pending[seq] = p
	if err := pc.ch.PublishWithContext(ctx, exchange, m.Key(), true, false, pub); err != nil {
		delete(pc.pending, seq)
		return nil, fmt.Errorf("%w: %w", ErrUnconfirmed, err)
	}
	ch := pc.ch
	return func(ctx context.Context) error {
		select {
		case err := <-p.done:
			return err
		case <-ctx.Done():
			pc.mu.Lock()
			if pc.ch == ch {
				delete(pc.pending, seq)
			}
			pc.mu.Unlock()
			return fmt.Errorf("%w: %w", ErrUnconfirmed, ctx.Err())
		}
	}, nil
}

// open must be called with pc.mu held.
func (pc *pubChannel) open(ctx context.Context) error {
	ch, err := pc.conn.Channel(ctx)
	if err != nil {
		return err
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return fmt.Errorf("enabling confirms: %w", err)
	}
	pc.ch = ch
	pc.pending = map[uint64]*pending{}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 1024))
	// Unbuffered on purpose: the library blocks its reader until a return is
	// taken, so a return is always seen before the confirm that follows it.
	returns := ch.NotifyReturn(make(chan amqp.Return))
	go pc.listen(ch, pc.pending, confirms, returns)
	return nil
}

func (pc *pubChannel) listen(ch *amqp.Channel, table map[uint64]*pending, confirms <-chan amqp.Confirmation, returns <-chan amqp.Return) {
	for {
		select {
		case r, ok := <-returns:
			if !ok {
				returns = nil
				continue
			}
			seq, _ := r.Headers[headerPublishSeq].(int64)
			pc.mu.Lock()
			if p := table[uint64(seq)]; p != nil {
				p.returned = true
			}
			pc.mu.Unlock()
		case c, ok := <-confirms:
			if !ok {
				pc.failAll(ch, table)
				return
			}
			pc.mu.Lock()
			p := table[c.DeliveryTag]
			delete(table, c.DeliveryTag)
			pc.mu.Unlock()
			if p == nil {
				continue
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

func (pc *pubChannel) failAll(ch *amqp.Channel, table map[uint64]*pending) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	for seq, p := range table {
		p.done <- fmt.Errorf("%w: channel closed before confirm", ErrUnconfirmed)
		delete(table, seq)
	}
	if pc.ch == ch {
		pc.ch = nil
	}
}

func (pc *pubChannel) close() {
	pc.mu.Lock()
	ch := pc.ch
	pc.mu.Unlock()
	if ch != nil {
		_ = ch.Close()
	}
}
