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

	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/db"
	"github.com/gdpr-oss/gdpr/modules/outbox"
	"github.com/gdpr-oss/gdpr/modules/retention"
)

// Config is the whole configuration. Each nested struct belongs to one module
// or role; its defaults and validation live in the file named after it.
type Config struct {
	Log       Log              `yaml:"log"`
	Postgres  db.Config        `yaml:"postgres"`
	AMQP      bus.Config       `yaml:"amqp"`
	Redis     Redis            `yaml:"redis"`
	Lock      Lock             `yaml:"lock"`
	Shutdown  Shutdown         `yaml:"shutdown"`
	Serve     Serve            `yaml:"serve"`
	Worker    Worker           `yaml:"worker"`
	Report    Report           `yaml:"report"`
	Notify    Notify           `yaml:"notify"`
	Outbox    outbox.Config    `yaml:"outbox"`
	Scheduler Scheduler        `yaml:"scheduler"`
	Canceller Canceller        `yaml:"canceller"`
	Telemetry Telemetry        `yaml:"telemetry"`
	Retention retention.Config `yaml:"retention"`
}

// Log configures the process logger.
type Log struct {
	// Format is json (default, for log shippers) or text.
	Format string `yaml:"format"`
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
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
		Log:       Log{Format: "json", Level: "info"},
		Postgres:  db.DefaultConfig(),
		AMQP:      bus.DefaultConfig(),
		Redis:     Redis{Addr: "127.0.0.1:6379", Prefix: "gdpr:"},
		Lock:      Lock{TTL: 30 * time.Second},
		Shutdown:  Shutdown{DrainTimeout: 20 * time.Second},
		Serve:     defaultServe(),
		Worker:    defaultWorker(),
		Report:    defaultReport(),
		Notify:    defaultNotify(),
		Outbox:    outbox.DefaultConfig(),
		Scheduler: defaultScheduler(),
		Canceller: defaultCanceller(),
		Telemetry: defaultTelemetry(),
		Retention: retention.DefaultConfig(),
	}
}

// ErrInvalid marks a configuration that failed validation.
var ErrInvalid = errors.New("config")

func invalid(setting, format string, args ...any) error {
	return fmt.Errorf("%w: %s %s", ErrInvalid, setting, fmt.Sprintf(format, args...))
}

// section marks each error a module's Validate returned (one, or several
// joined) as ErrInvalid, so each is reported on its own line as
// "config: <setting> ...".
func section(err error) []error {
	if err == nil {
		return nil
	}
	all := []error{err}
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		all = joined.Unwrap()
	}
	out := make([]error, len(all))
	for i, e := range all {
		out[i] = fmt.Errorf("%w: %w", ErrInvalid, e)
	}
	return out
}

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
	errs = append(errs, section(c.Postgres.Validate())...)
	errs = append(errs, section(c.AMQP.Validate())...)
	errs = append(errs, section(c.Retention.Validate())...)
	if c.Report.Retention < c.Serve.DownloadTTL {
		add(invalid("report.retention", "must be >= serve.download_ttl (%s): a report must outlive its link, got %s", c.Serve.DownloadTTL, c.Report.Retention))
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
	if err := c.Outbox.Validate(); err != nil {
		add(fmt.Errorf("%w: %w", ErrInvalid, err))
	}
	add(c.Scheduler.validate())
	add(c.Canceller.validate())
	add(c.Telemetry.validate())
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
