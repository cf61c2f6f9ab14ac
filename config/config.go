// Package config holds the one configuration of every gdpr role: defaults that
// work against local services, an optional YAML file, GDPR_* environment
// variables and command-line flags, in increasing order of precedence.
package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/gdpr-oss/gdpr/modules/console"
)

// Config is the whole configuration. Each nested struct belongs to one module
// or role; its defaults and validation live in the file named after it.
type Config struct {
	Log       Log       `yaml:"log"`
	Postgres  Postgres  `yaml:"postgres"`
	AMQP      AMQP      `yaml:"amqp"`
	Redis     Redis     `yaml:"redis"`
	Lock      Lock      `yaml:"lock"`
	Shutdown  Shutdown  `yaml:"shutdown"`
	Serve     Serve     `yaml:"serve"`
	Worker    Worker    `yaml:"worker"`
	Report    Report    `yaml:"report"`
	Notify    Notify    `yaml:"notify"`
	Scheduler Scheduler `yaml:"scheduler"`
	Canceller Canceller `yaml:"canceller"`
	Telemetry Telemetry `yaml:"telemetry"`
	// Console configures the admin API's operators and the web console
	// (modules/console owns it).
	Console console.Config `yaml:"console"`
}

// Log configures the process logger.
type Log struct {
	// Format is json (default, for log shippers) or text.
	Format string `yaml:"format"`
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
}

// Postgres configures the service's own database.
type Postgres struct {
	DSN          string `yaml:"dsn" secret:"true"`
	MaxOpenConns int    `yaml:"max_open_conns"`
	// MigrateOnStart applies pending migrations when a role starts (on for `all`).
	MigrateOnStart bool `yaml:"migrate_on_start"`
}

// AMQP configures the RabbitMQ connection and topology names.
type AMQP struct {
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

// Redis configures the Redis client used for locks.
type Redis struct {
	Addr     string `yaml:"addr"`
	Password string `yaml:"password" secret:"true"`
	DB       int    `yaml:"db"`
	// Prefix is prepended to every key this service writes.
	Prefix string `yaml:"prefix"`
}

// Lock configures distributed locks and PostgreSQL leases.
type Lock struct {
	TTL time.Duration `yaml:"ttl"`
}

// Shutdown bounds the drain after SIGTERM/SIGINT.
type Shutdown struct {
	DrainTimeout time.Duration `yaml:"drain_timeout"`
}

// Default returns a configuration that works against the local services.
func Default() Config {
	return Config{
		Log: Log{Format: "json", Level: "info"},
		Postgres: Postgres{
			DSN:          "postgres://root@127.0.0.1:5432/gdpr?sslmode=disable",
			MaxOpenConns: 20,
		},
		AMQP: AMQP{ //nolint:gosec // G101: RabbitMQ's well-known local default account, not a secret
			URL:             "amqp://guest:guest@127.0.0.1:5672/",
			Prefix:          "gdpr",
			Prefetch:        64,
			ConfirmTimeout:  5 * time.Second,
			PublishChannels: 4,
			DeliveryLimit:   20,
			RetryFor:        72 * time.Hour,
			QueueType:       "quorum",
		},
		Redis:     Redis{Addr: "127.0.0.1:6379", Prefix: "gdpr:"},
		Lock:      Lock{TTL: 30 * time.Second},
		Shutdown:  Shutdown{DrainTimeout: 20 * time.Second},
		Serve:     defaultServe(),
		Worker:    defaultWorker(),
		Report:    defaultReport(),
		Notify:    defaultNotify(),
		Scheduler: defaultScheduler(),
		Canceller: defaultCanceller(),
		Telemetry: defaultTelemetry(),
		Console:   console.DefaultConfig(),
	}
}

// ErrInvalid marks a configuration that failed validation.
var ErrInvalid = errors.New("config")

func invalid(setting, format string, args ...any) error {
	return fmt.Errorf("%w: %s %s", ErrInvalid, setting, fmt.Sprintf(format, args...))
}

// moduleInvalid is a module's own validation error (its Config.Validate
// names the setting): it counts as ErrInvalid, exit status 2.
type moduleInvalid struct{ error }

func (e moduleInvalid) Is(target error) bool { return target == ErrInvalid }
func (e moduleInvalid) Unwrap() error        { return e.error }

// Validate reports every bad setting, each naming its dotted path.
func (c Config) Validate() error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	switch c.Log.Format {
	case "json", "text":
	default:
		add(invalid("log.format", "must be json or text, got %q", c.Log.Format))
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add(invalid("log.level", "must be debug, info, warn or error, got %q", c.Log.Level))
	}
	if c.Postgres.DSN == "" {
		add(invalid("postgres.dsn", "must be set"))
	}
	if c.Postgres.MaxOpenConns < 1 {
		add(invalid("postgres.max_open_conns", "must be >= 1, got %d", c.Postgres.MaxOpenConns))
	}
	if c.AMQP.URL == "" {
		add(invalid("amqp.url", "must be set"))
	}
	if c.AMQP.Prefix == "" {
		add(invalid("amqp.prefix", "must be set"))
	}
	if c.AMQP.Prefetch < 1 {
		add(invalid("amqp.prefetch", "must be >= 1, got %d", c.AMQP.Prefetch))
	}
	if c.AMQP.ConfirmTimeout <= 0 {
		add(invalid("amqp.confirm_timeout", "must be > 0, got %s", c.AMQP.ConfirmTimeout))
	}
	if c.AMQP.PublishChannels < 1 {
		add(invalid("amqp.publish_channels", "must be >= 1, got %d", c.AMQP.PublishChannels))
	}
	if c.AMQP.DeliveryLimit < 1 {
		add(invalid("amqp.delivery_limit", "must be >= 1, got %d", c.AMQP.DeliveryLimit))
	}
	if c.AMQP.RetryFor <= 0 {
		add(invalid("amqp.retry_for", "must be > 0, got %s", c.AMQP.RetryFor))
	}
	switch c.AMQP.QueueType {
	case "quorum", "classic":
	default:
		add(invalid("amqp.queue_type", "must be quorum or classic, got %q", c.AMQP.QueueType))
	}
	if c.Redis.Addr == "" {
		add(invalid("redis.addr", "must be set"))
	}
	if c.Lock.TTL < time.Second {
		add(invalid("lock.ttl", "must be >= 1s, got %s", c.Lock.TTL))
	}
	if c.Shutdown.DrainTimeout <= 0 {
		add(invalid("shutdown.drain_timeout", "must be > 0, got %s", c.Shutdown.DrainTimeout))
	}
	add(c.Serve.validate())
	add(c.Worker.validate())
	add(c.Report.validate())
	add(c.Notify.validate())
	add(c.Scheduler.validate())
	add(c.Canceller.validate())
	add(c.Telemetry.validate())
	if err := c.Console.Validate(); err != nil {
		add(moduleInvalid{err})
	}
	return errors.Join(errs...)
}

// LoadFile overlays the YAML file at path onto c. Unknown keys are an error,
// so a typo in a setting name does not pass silently.
func (c *Config) LoadFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%w: reading config file: %w", ErrInvalid, err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	// An empty file (or one with only comments) changes nothing.
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: parsing config file %s: %w", ErrInvalid, path, err)
	}
	return nil
}

// Load builds the effective configuration: base (usually Default()), then
// the file (if path is not empty), then the environment. Flags are applied
// by the caller with Set, then Validate.
func Load(base Config, path string, environ []string) (Config, error) {
	c := base
	if path != "" {
		if err := c.LoadFile(path); err != nil {
			return c, err
		}
	}
	if err := c.ApplyEnv(environ); err != nil {
		return c, err
	}
	return c, nil
}
