package erasure

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/message"
)

// QueueCanceller is the canceller's queue (topology name, without prefix).
const QueueCanceller = "canceller"

// Bindings are the routing keys the canceller's queue needs, its own timer
// messages among them.
func Bindings() []string {
	return []string{event.TypeErasureRequested, event.TypeErasureConfirmed, TypeTimer}
}

// Handle routes one message to the canceller. Its bad-input errors are
// marked permanent (the bus dead-letters the message with the reason);
// anything else is retried.
func (c *Canceller) Handle(ctx context.Context, m message.Message) error {
	return message.PermanentOn(ErrInvalid, ErrUnknownRequest, ErrUnknownParty)(c.route)(ctx, m)
}

func (c *Canceller) route(ctx context.Context, m message.Message) error {
	switch m.Type {
	case event.TypeErasureRequested:
		return c.HandleRequested(ctx, m)
	case event.TypeErasureConfirmed:
		return c.HandleConfirmed(ctx, m)
	case TypeTimer:
		return c.HandleTimer(ctx, m)
	default:
		return message.Permanent(fmt.Errorf("canceller does not handle message type %q", m.Type))
	}
}

// Component consumes the canceller's queue. The queue and its bindings are
// part of the topology every role declares on connect (app/modules.go
// takes them from QueueCanceller and Bindings).
type Component struct {
	consumer *bus.Consumer
}

// NewComponent returns the canceller's consumer with concurrency handlers.
func NewComponent(conn *bus.Conn, c *Canceller, concurrency int, logger *slog.Logger) *Component {
	return &Component{
		consumer: bus.NewConsumer(conn, bus.ConsumerOptions{Queue: QueueCanceller, Concurrency: concurrency}, c.Handle, logger),
	}
}

// Name identifies the component in logs.
func (k *Component) Name() string { return "canceller" }

// Start consumes.
func (k *Component) Start(ctx context.Context) error { return k.consumer.Start(ctx) }

// Stop drains in-flight messages until ctx ends and returns once every
// handler has.
func (k *Component) Stop(ctx context.Context) error { return k.consumer.Stop(ctx) }

// Failed receives a failure of the consumer after Start.
func (k *Component) Failed() <-chan error { return k.consumer.Failed() }

// Running is how many of the consumer's goroutines have not returned yet.
func (k *Component) Running() int { return k.consumer.Running() }
