package bus

import (
	"errors"
	"fmt"
	"time"
)

// Config is the amqp section: the RabbitMQ connection and topology names.
type Config struct {
	URL string `yaml:"url" secret:"true"`
	// Prefix names the exchanges and queues ("gdpr" → exchange "gdpr", queue
	// "gdpr.worker.requests"), so several installs or tests share one vhost.
	Prefix string `yaml:"prefix"`
	// Prefetch bounds unacknowledged deliveries per consumer.
	Prefetch int `yaml:"prefetch"`
	// ConfirmTimeout bounds the wait for a publisher confirm.
	ConfirmTimeout time.Duration `yaml:"confirm_timeout"`
	// PublishChannels is the number of confirm-mode channels publishes are spread over.
	PublishChannels int `yaml:"publish_channels"`
	// DeliveryLimit dead-letters a message whose deliveries ended this many
	// times without a verdict (its consumer crashed or lost its channel).
	DeliveryLimit int `yaml:"delivery_limit"`
	// RetryFor is how long a message whose handler keeps failing (a database
	// or SMTP server down) is retried before it is dead-lettered.
	RetryFor time.Duration `yaml:"retry_for"`
	// QueueType is quorum (default) or classic.
	QueueType string `yaml:"queue_type"`
}

// DefaultConfig works against a local RabbitMQ with its default account.
func DefaultConfig() Config {
	return Config{ //nolint:gosec // G101: RabbitMQ's well-known local default account, not a secret
		URL:             "amqp://guest:guest@127.0.0.1:5672/",
		Prefix:          "gdpr",
		Prefetch:        64,
		ConfirmTimeout:  5 * time.Second,
		PublishChannels: 4,
		DeliveryLimit:   20,
		RetryFor:        72 * time.Hour,
		QueueType:       "quorum",
	}
}

// Validate reports every bad setting, each named by its full path (amqp.…).
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.URL == "" {
		bad("amqp.url must be set")
	}
	if c.Prefix == "" {
		bad("amqp.prefix must be set")
	}
	if c.Prefetch < 1 {
		bad("amqp.prefetch must be >= 1, got %d", c.Prefetch)
	}
	if c.ConfirmTimeout <= 0 {
		bad("amqp.confirm_timeout must be > 0, got %s", c.ConfirmTimeout)
	}
	if c.PublishChannels < 1 {
		bad("amqp.publish_channels must be >= 1, got %d", c.PublishChannels)
	}
	if c.DeliveryLimit < 1 {
		bad("amqp.delivery_limit must be >= 1, got %d", c.DeliveryLimit)
	}
	if c.RetryFor <= 0 {
		bad("amqp.retry_for must be > 0, got %s", c.RetryFor)
	}
	switch c.QueueType {
	case "quorum", "classic":
	default:
		bad("amqp.queue_type must be quorum or classic, got %q", c.QueueType)
	}
	return errors.Join(errs...)
}
