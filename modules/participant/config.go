package participant

import (
	"context"
	"errors"
	"log/slog"

	"github.com/gdpr-oss/gdpr/modules/bus"
)

// Config is what a participant service needs to reach gdpr's broker: far
// less than gdpr's own configuration, whose every other setting is gdpr's
// business. The yaml tags let a service embed it in its own configuration.
type Config struct {
	// URL is the RabbitMQ URL, with credentials.
	URL string `yaml:"url"`
	// Prefix is gdpr's amqp.prefix: it names the exchange commands arrive on.
	Prefix string `yaml:"prefix"`
}

// DefaultConfig works against a local RabbitMQ and gdpr's default prefix.
func DefaultConfig() Config {
	def := bus.DefaultConfig()
	return Config{URL: def.URL, Prefix: def.Prefix}
}

// Validate names the setting that is missing.
func (c Config) Validate() error {
	var errs []error
	if c.URL == "" {
		errs = append(errs, errors.New("amqp.url must be set"))
	}
	if c.Prefix == "" {
		errs = append(errs, errors.New("amqp.prefix must be set"))
	}
	return errors.Join(errs...)
}

// Bus is the connection configuration: c's URL and prefix, bus defaults
// for the rest (publisher confirms, prefetch).
func (c Config) Bus() bus.Config {
	b := bus.DefaultConfig()
	b.URL, b.Prefix = c.URL, c.Prefix
	return b
}

// Dial validates c and connects to the broker (retrying until ctx ends);
// connName identifies the connection in RabbitMQ's management tools.
func Dial(ctx context.Context, c Config, connName string, logger *slog.Logger) (*bus.Conn, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return bus.Dial(ctx, c.Bus(), connName, bus.Topology{}, logger)
}
