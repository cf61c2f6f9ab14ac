package retention

import (
	"errors"
	"fmt"
	"time"
)

// Config is the retention section: how long gdpr keeps what it keeps
// (docs/privacy.md lists every place and which setting bounds it).
type Config struct {
	// ScrubAfter is how long after a request finished its personal data
	// (subject id, address, report) is removed; its PII-free record stays.
	ScrubAfter time.Duration `yaml:"scrub_after"`
	// RecordFor is how long after a request finished its PII-free record
	// (type, dates, outcome, attempts, each participant's confirmation) is
	// kept before it is deleted: 24 months, the CCPA request log (§7101).
	RecordFor time.Duration `yaml:"record_for"`
	// DeadLettersFor is how long a dead-lettered message (whose body may
	// hold a subject's id or address) stays in the dead-letter queue.
	DeadLettersFor time.Duration `yaml:"dead_letters_for"`
	// Interval is how often each worker sweeps.
	Interval time.Duration `yaml:"interval"`
	// Batch is the most items one step deletes in one transaction.
	Batch int `yaml:"batch"`
}

// DefaultConfig keeps personal data 30 days after a request finished, its
// record 24 months, dead letters 14 days.
func DefaultConfig() Config {
	return Config{
		ScrubAfter:     720 * time.Hour,
		RecordFor:      17520 * time.Hour,
		DeadLettersFor: 336 * time.Hour,
		Interval:       10 * time.Minute,
		Batch:          500,
	}
}

// Validate reports every bad setting, each named by its full path (retention.…).
func (c Config) Validate() error {
	var errs []error
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"scrub_after", c.ScrubAfter}, {"record_for", c.RecordFor}, {"dead_letters_for", c.DeadLettersFor}, {"interval", c.Interval}} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("retention.%s must be > 0, got %s", d.name, d.v))
		}
	}
	if c.ScrubAfter > 0 && c.RecordFor > 0 && c.RecordFor < c.ScrubAfter {
		errs = append(errs, fmt.Errorf("retention.record_for must be >= retention.scrub_after (%s), got %s", c.ScrubAfter, c.RecordFor))
	}
	if c.Batch < 1 {
		errs = append(errs, fmt.Errorf("retention.batch must be >= 1, got %d", c.Batch))
	}
	return errors.Join(errs...)
}
