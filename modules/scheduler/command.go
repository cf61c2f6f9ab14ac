package scheduler

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/inbox"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/trace"
)

// InboxConsumer is the consumer name under which commands are deduplicated.
const InboxConsumer = "scheduler"

// Queue is the queue of scheduler.schedule and scheduler.cancel commands
// (without the prefix).
const Queue = "scheduler"

// Bindings are the routing keys that reach Queue.
func Bindings() []string {
	return []string{event.TypeSchedulerSchedule, event.TypeSchedulerCancel}
}

// messageIDSpace derives the id of a scheduled message from the id of the
// command that scheduled it, so a re-sent command yields the same message.
const messageIDSpace = "0b6f0f57-4c47-4f0e-9f43-2a3f1f2d8c11"

// Commands handles scheduler.schedule and scheduler.cancel from the
// scheduler queue. Bad commands are poison: they are dead-lettered with the
// reason and nothing is stored.
type Commands struct {
	db        *gorm.DB
	store     *Store
	exchanges ExchangeChecker
	metrics   *Metrics
	logger    *slog.Logger
}

// NewCommands returns the handler; exchanges validates named exchanges and
// may be nil to accept any.
func NewCommands(db *gorm.DB, store *Store, exchanges ExchangeChecker, metrics *Metrics, logger *slog.Logger) *Commands {
	return &Commands{db: db, store: store, exchanges: exchanges, metrics: metrics, logger: logger}
}

// Handle is a bus.Handler.
func (c *Commands) Handle(ctx context.Context, m message.Message) error {
	switch m.Type {
	case event.TypeSchedulerSchedule:
		return c.schedule(ctx, m)
	case event.TypeSchedulerCancel:
		return c.cancel(ctx, m)
	default:
		return message.Permanent(fmt.Errorf("unknown message type %q on the scheduler queue", m.Type))
	}
}

func decodeStrict(m message.Message, v any) error {
	dec := json.NewDecoder(bytes.NewReader(m.Body))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decoding %s body: %w", m.Type, err)
	}
	return nil
}

func (c *Commands) schedule(ctx context.Context, m message.Message) error {
	if m.ID == "" {
		return message.Permanent(errors.New("message_id is missing"))
	}
	var cmd event.SchedulerSchedule
	if err := decodeStrict(m, &cmd); err != nil {
		return message.Permanent(err)
	}
	switch {
	case cmd.Key == "":
		return message.Permanent(errors.New("scheduler.schedule: key is missing"))
	case cmd.RoutingKey == "":
		return message.Permanent(errors.New("scheduler.schedule: routing_key is missing"))
	case cmd.DeliverAt.IsZero():
		return message.Permanent(errors.New("scheduler.schedule: deliver_at is missing"))
	case cmd.Body == nil:
		return message.Permanent(errors.New("scheduler.schedule: body is missing"))
	}
	if cmd.Exchange != "" && c.exchanges != nil {
		ok, err := c.exchanges.ExchangeExists(ctx, cmd.Exchange)
		if err != nil {
			return fmt.Errorf("checking exchange of %s: %w", cmd.Key, err)
		}
		if !ok {
			return message.Permanent(fmt.Errorf("scheduler.schedule: exchange %q does not exist", cmd.Exchange))
		}
	}
	typ := cmd.Type
	if typ == "" {
		typ = cmd.RoutingKey
	}
	out := message.Message{
		ID:            uuid.NewSHA1(uuid.MustParse(messageIDSpace), []byte(m.ID)).String(),
		Type:          typ,
		RoutingKey:    cmd.RoutingKey,
		CorrelationID: m.CorrelationID,
		CausationID:   m.ID,
		OccurredAt:    m.OccurredAt,
		Traceparent:   trace.Child(m.Traceparent),
		Headers:       cmd.Headers,
		Body:          cmd.Body,
	}
	fresh := false
	err := c.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var err error
		if fresh, err = inbox.Claim(ctx, tx, InboxConsumer, m.ID); err != nil || !fresh {
			return err
		}
		return c.store.Schedule(ctx, tx, Entry{Key: cmd.Key, DeliverAt: cmd.DeliverAt, Exchange: cmd.Exchange, Message: out})
	})
	if errors.Is(err, ErrInvalid) {
		return message.Permanent(err)
	}
	if err != nil {
		return err
	}
	if fresh {
		if c.metrics != nil {
			c.metrics.scheduled.Inc()
		}
		c.logger.DebugContext(ctx, "message scheduled", "key", cmd.Key, "scheduled_message_id", out.ID, "deliver_at", cmd.DeliverAt)
	}
	return nil
}

func (c *Commands) cancel(ctx context.Context, m message.Message) error {
	if m.ID == "" {
		return message.Permanent(errors.New("message_id is missing"))
	}
	var cmd event.SchedulerCancel
	if err := decodeStrict(m, &cmd); err != nil {
		return message.Permanent(err)
	}
	if cmd.Key == "" {
		return message.Permanent(errors.New("scheduler.cancel: key is missing"))
	}
	existed := false
	err := c.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		fresh, err := inbox.Claim(ctx, tx, InboxConsumer, m.ID)
		if err != nil || !fresh {
			return err
		}
		existed, err = c.store.Cancel(ctx, tx, cmd.Key)
		return err
	})
	if err != nil {
		return err
	}
	if existed && c.metrics != nil {
		c.metrics.cancelled.Inc()
	}
	c.logger.DebugContext(ctx, "scheduled message cancelled", "key", cmd.Key, "existed", existed)
	return nil
}
