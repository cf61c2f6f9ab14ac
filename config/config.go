// Package config holds the one configuration of every gdpr role: defaults that
// work against local services, an optional YAML file, GDPR_* environment
// variables and command-line flags, in increasing order of precedence.
package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/gdpr-oss/gdpr/modules/api"
	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/console"
	"github.com/gdpr-oss/gdpr/modules/db"
	"github.com/gdpr-oss/gdpr/modules/erasure"
	"github.com/gdpr-oss/gdpr/modules/expand"
	"github.com/gdpr-oss/gdpr/modules/lock"
	"github.com/gdpr-oss/gdpr/modules/notify"
	"github.com/gdpr-oss/gdpr/modules/outbox"
	"github.com/gdpr-oss/gdpr/modules/report"
	"github.com/gdpr-oss/gdpr/modules/requests"
	"github.com/gdpr-oss/gdpr/modules/retention"
	"github.com/gdpr-oss/gdpr/modules/scheduler"
	"github.com/gdpr-oss/gdpr/modules/selfservice"
)

// Config is the whole configuration. Each nested struct but log and shutdown
// is a module's own Config, with its defaults and Validate in that module;
// config composes them and checks what spans sections.
type Config struct {
	Log       Log                   `yaml:"log"`
	Postgres  db.Config             `yaml:"postgres"`
	AMQP      bus.Config            `yaml:"amqp"`
	Redis     lock.RedisConfig      `yaml:"redis"`
	Lock      lock.Config           `yaml:"lock"`
	Shutdown  Shutdown              `yaml:"shutdown"`
	Serve     api.Config            `yaml:"serve"`
	Worker    requests.WorkerConfig `yaml:"worker"`
	Report    report.Config         `yaml:"report"`
	Notify    notify.Config         `yaml:"notify"`
	Outbox    outbox.Config         `yaml:"outbox"`
	Scheduler scheduler.Config      `yaml:"scheduler"`
	Canceller erasure.Config        `yaml:"canceller"`
	Telemetry Telemetry             `yaml:"telemetry"`
	Retention retention.Config      `yaml:"retention"`
	// Privacy is modules/selfservice's: the self-service page.
	Privacy selfservice.Config `yaml:"privacy"`
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
		Redis:     lock.DefaultRedisConfig(),
		Lock:      lock.DefaultConfig(),
		Shutdown:  Shutdown{DrainTimeout: 20 * time.Second},
		Serve:     api.DefaultConfig(),
		Worker:    requests.DefaultWorkerConfig(),
		Report:    report.DefaultConfig(),
		Notify:    notify.DefaultConfig(),
		Outbox:    outbox.DefaultConfig(),
		Scheduler: scheduler.DefaultConfig(),
		Canceller: erasure.DefaultConfig(),
		Telemetry: defaultTelemetry(),
		Retention: retention.DefaultConfig(),
		Privacy:   selfservice.DefaultConfig(),
		Console:   console.DefaultConfig(),
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
	errs = append(errs, section(c.Redis.Validate())...)
	errs = append(errs, section(c.Lock.Validate())...)
	if c.Shutdown.DrainTimeout <= 0 {
		add(invalid("shutdown.drain_timeout", "must be > 0, got %s", c.Shutdown.DrainTimeout))
	}
	errs = append(errs, section(c.Serve.Validate())...)
	errs = append(errs, section(c.Worker.Validate())...)
	errs = append(errs, section(c.Report.Validate())...)
	errs = append(errs, section(c.Notify.Validate())...)
	errs = append(errs, section(c.Outbox.Validate())...)
	errs = append(errs, section(c.Scheduler.Validate())...)
	errs = append(errs, section(c.Canceller.Validate())...)
	errs = append(errs, section(c.Telemetry.validate())...)
	errs = append(errs, section(c.Privacy.Validate())...)
	errs = append(errs, section(c.Console.Validate())...)
	add(c.undeclaredIdentifier())
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

// undeclaredIdentifier names the first {identifier.<name>} or
// @identifier.<name> of the sources and participants that serve.identifiers
// does not declare: no request could ever fill it.
func (c Config) undeclaredIdentifier() error {
	check := func(setting string, names []string) error {
		for _, n := range names {
			if !slices.Contains(c.Serve.Identifiers, n) {
				return invalid(setting, "uses identifier.%s, which serve.identifiers does not declare", n)
			}
		}
		return nil
	}
	fromTemplate := func(tmpl string) []string {
		var out []string
		for _, p := range expand.IdentifierPlaceholders(tmpl) {
			out = append(out, strings.TrimPrefix(p, "identifier."))
		}
		return out
	}
	for i, s := range c.Report.Sources {
		// How a field names identifiers depends on the source's kind:
		// modules/source says, so a new kind changes nothing here.
		for _, f := range s.Identifiers() {
			if err := check(fmt.Sprintf("report.sources[%d].%s", i, f.Field), f.Names); err != nil {
				return err
			}
		}
	}
	for i, p := range c.Canceller.Participants {
		if err := check(fmt.Sprintf("canceller.participants[%d].url", i), fromTemplate(p.URL)); err != nil {
			return err
		}
	}
	return nil
}
