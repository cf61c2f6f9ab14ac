package gauge

import (
	"errors"
	"fmt"
	"time"
)

// Config is gauge's part of the telemetry section.
type Config struct {
	// GaugeInterval is how often the request gauges are refreshed from PostgreSQL.
	Interval time.Duration `yaml:"gauge_interval"`
	// NearDeadline is removed: the near-deadline gauge follows console.near_deadline (gdpr, ccpa, lgpd), the console's per-regulation windows. Setting it is a configuration error naming those.
	NearDeadline time.Duration `yaml:"near_deadline"`
}

// DefaultConfig refreshes every 15s.
func DefaultConfig() Config {
	return Config{Interval: 15 * time.Second}
}

// ErrNearDeadlineRemoved marks a configuration still setting
// telemetry.near_deadline: one window for every regulation disagreed with
// the console's, so the gauge now reads console.near_deadline. Refusing it
// (rather than aliasing it) keeps one source of truth: a single duration
// cannot say which regulation's window it meant.
var ErrNearDeadlineRemoved = errors.New("telemetry.near_deadline is removed: set console.near_deadline.gdpr, console.near_deadline.ccpa and console.near_deadline.lgpd instead (the gauge and alert follow each request's regulation)")

// Validate names the first bad setting in full (telemetry.…).
func (c Config) Validate() error {
	switch {
	case c.Interval <= 0:
		return fmt.Errorf("telemetry.gauge_interval must be > 0, got %s", c.Interval)
	case c.NearDeadline != 0:
		return ErrNearDeadlineRemoved
	}
	return nil
}
