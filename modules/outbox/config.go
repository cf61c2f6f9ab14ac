package outbox

import (
	"errors"
	"fmt"
	"time"

	"github.com/gdpr-oss/gdpr/modules/relay"
)

// Config tunes the outbox relay of every role that writes to the outbox
// (`outbox:` in the configuration file).
type Config struct {
	// Workers is how many claim-publish-commit loops the relay runs in one
	// process, so the broker is kept busy while another batch commits.
	Workers int `yaml:"workers"`
	// BatchSize is the most messages claimed in one transaction.
	BatchSize int `yaml:"batch_size"`
	// MaxIdle caps the sleep between looks at the table; a write wakes the
	// relay sooner through NOTIFY.
	MaxIdle time.Duration `yaml:"max_idle"`
	// Retention is how long the history of published messages is kept.
	Retention time.Duration `yaml:"retention"`
	// PruneInterval is how often history older than Retention is deleted.
	PruneInterval time.Duration `yaml:"prune_interval"`
	// MetricsInterval is how often the pending gauges are read from PostgreSQL.
	MetricsInterval time.Duration `yaml:"metrics_interval"`
	// RetryBackoff is the first delay before a message the broker refused
	// (unroutable, nacked) is tried again; it doubles per attempt up to 10 minutes.
	RetryBackoff time.Duration `yaml:"retry_backoff"`
}

// DefaultConfig is the outbox relay's configuration when nothing is set.
// It is the relay's defaults but for Workers: every role runs an outbox
// relay, and two loops keep the broker busy for what one role writes.
func DefaultConfig() Config {
	d := relay.DefaultOptions()
	return Config{
		Workers:         2,
		BatchSize:       d.BatchSize,
		MaxIdle:         d.MaxIdle,
		Retention:       d.Retention,
		PruneInterval:   d.PruneInterval,
		MetricsInterval: d.MetricsInterval,
		RetryBackoff:    d.RetryBackoff,
	}
}

// Validate names the first setting that is out of range.
func (c Config) Validate() error {
	bad := func(setting, format string, args ...any) error {
		return errors.New("outbox." + setting + " " + fmt.Sprintf(format, args...))
	}
	switch {
	case c.Workers < 1:
		return bad("workers", "must be >= 1, got %d", c.Workers)
	case c.BatchSize < 1:
		return bad("batch_size", "must be >= 1, got %d", c.BatchSize)
	case c.MaxIdle <= 0:
		return bad("max_idle", "must be > 0, got %s", c.MaxIdle)
	case c.Retention <= 0:
		return bad("retention", "must be > 0, got %s", c.Retention)
	case c.PruneInterval <= 0:
		return bad("prune_interval", "must be > 0, got %s", c.PruneInterval)
	case c.MetricsInterval <= 0:
		return bad("metrics_interval", "must be > 0, got %s", c.MetricsInterval)
	case c.RetryBackoff <= 0:
		return bad("retry_backoff", "must be > 0, got %s", c.RetryBackoff)
	}
	return nil
}
