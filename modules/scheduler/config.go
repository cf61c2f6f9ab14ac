package scheduler

import (
	"errors"
	"fmt"
	"time"

	"github.com/gdpr-oss/gdpr/modules/relay"
)

// Config is the scheduler section: the delayed-message role.
type Config struct {
	AdminAddr string `yaml:"admin_addr"`
	// BatchSize is the most due messages claimed in one transaction.
	BatchSize int `yaml:"batch_size"`
	// Workers is how many claim-publish-commit loops run at once in one
	// process, so the broker is kept busy while another batch commits.
	Workers int `yaml:"workers"`
	// MaxIdle caps the sleep between looks at the table.
	MaxIdle time.Duration `yaml:"max_idle"`
	// Retention is how long sent messages are kept before pruning.
	Retention time.Duration `yaml:"retention"`
	// PruneInterval is how often sent messages older than Retention are deleted.
	PruneInterval time.Duration `yaml:"prune_interval"`
	// MetricsInterval is how often the pending and overdue gauges are read
	// from PostgreSQL.
	MetricsInterval time.Duration `yaml:"metrics_interval"`
	// RetryBackoff is the first delay before a message the broker refused
	// (unroutable, nacked, missing exchange) is tried again; it doubles per
	// attempt up to 10 minutes.
	RetryBackoff time.Duration `yaml:"retry_backoff"`
	// CommandConcurrency is how many scheduler.schedule/cancel commands are
	// handled at once.
	CommandConcurrency int `yaml:"command_concurrency"`
}

// DefaultConfig is the scheduler's defaults: the relay's tuning
// (relay.DefaultOptions) and the scheduler's own settings; NewDispatcher
// fills zero DispatcherOptions from it too.
func DefaultConfig() Config {
	d := relay.DefaultOptions()
	return Config{
		AdminAddr:          "127.0.0.1:9092",
		BatchSize:          d.BatchSize,
		Workers:            d.Workers,
		MaxIdle:            d.MaxIdle,
		Retention:          d.Retention,
		PruneInterval:      d.PruneInterval,
		MetricsInterval:    d.MetricsInterval,
		RetryBackoff:       d.RetryBackoff,
		CommandConcurrency: 4,
	}
}

// Validate names the first bad setting in full (scheduler.…).
func (s Config) Validate() error {
	switch {
	case s.AdminAddr == "":
		return errors.New("scheduler.admin_addr must be set")
	case s.BatchSize < 1:
		return fmt.Errorf("scheduler.batch_size must be >= 1, got %d", s.BatchSize)
	case s.Workers < 1:
		return fmt.Errorf("scheduler.workers must be >= 1, got %d", s.Workers)
	case s.MaxIdle <= 0:
		return fmt.Errorf("scheduler.max_idle must be > 0, got %s", s.MaxIdle)
	case s.Retention <= 0:
		return fmt.Errorf("scheduler.retention must be > 0, got %s", s.Retention)
	case s.PruneInterval <= 0:
		return fmt.Errorf("scheduler.prune_interval must be > 0, got %s", s.PruneInterval)
	case s.MetricsInterval <= 0:
		return fmt.Errorf("scheduler.metrics_interval must be > 0, got %s", s.MetricsInterval)
	case s.RetryBackoff <= 0:
		return fmt.Errorf("scheduler.retry_backoff must be > 0, got %s", s.RetryBackoff)
	case s.CommandConcurrency < 1:
		return fmt.Errorf("scheduler.command_concurrency must be >= 1, got %d", s.CommandConcurrency)
	}
	return nil
}

// withDefaults fills the zero options from DefaultConfig(), the one place
// the scheduler's defaults are written.
func withDefaults(o DispatcherOptions) DispatcherOptions {
	def := DefaultConfig()
	if o.BatchSize < 1 {
		o.BatchSize = def.BatchSize
	}
	if o.Workers < 1 {
		o.Workers = def.Workers
	}
	if o.MaxIdle <= 0 {
		o.MaxIdle = def.MaxIdle
	}
	if o.Retention <= 0 {
		o.Retention = def.Retention
	}
	if o.PruneInterval <= 0 {
		o.PruneInterval = def.PruneInterval
	}
	if o.MetricsInterval <= 0 {
		o.MetricsInterval = def.MetricsInterval
	}
	if o.RetryBackoff <= 0 {
		o.RetryBackoff = def.RetryBackoff
	}
	return o
}
