package gauge

import (
	"fmt"
	"time"
)

// Config is gauge's part of the telemetry section.
type Config struct {
	// GaugeInterval is how often the request gauges are refreshed from PostgreSQL.
	Interval time.Duration `yaml:"gauge_interval"`
	// NearDeadline is how close to due_at an open request counts as near its deadline.
	NearDeadline time.Duration `yaml:"near_deadline"`
}

// DefaultConfig refreshes every 15s and warns five days before a deadline.
func DefaultConfig() Config {
	return Config{Interval: 15 * time.Second, NearDeadline: 5 * 24 * time.Hour}
}

// Validate names the first bad setting in full (telemetry.…).
func (c Config) Validate() error {
	switch {
	case c.Interval <= 0:
		return fmt.Errorf("telemetry.gauge_interval must be > 0, got %s", c.Interval)
	case c.NearDeadline <= 0:
		return fmt.Errorf("telemetry.near_deadline must be > 0, got %s", c.NearDeadline)
	}
	return nil
}
