package reconcile

import (
	"fmt"
	"time"
)

// Config is reconcile's part of the telemetry section: the periodic in-sync check.
type Config struct {
	// ReconcileInterval is how often the worker role runs the in-sync check
	// and exports gdpr_out_of_sync; 0 disables it.
	Interval time.Duration `yaml:"reconcile_interval"`
	// ReconcileWindow is how far back the periodic in-sync check looks.
	Window time.Duration `yaml:"reconcile_window"`
	// StuckAfter is how long a request may sit between two stages before it
	// counts as out of sync (requests legitimately in progress stay below it).
	StuckAfter time.Duration `yaml:"stuck_after"`
}

// DefaultConfig checks the last day every minute.
func DefaultConfig() Config {
	return Config{Interval: time.Minute, Window: 24 * time.Hour, StuckAfter: 15 * time.Minute}
}

// Options are the check's options for these settings.
func (c Config) Options() Options { return Options{Since: c.Window, StuckAfter: c.StuckAfter} }

// Validate names the first bad setting in full (telemetry.…).
func (c Config) Validate() error {
	switch {
	case c.Interval < 0:
		return fmt.Errorf("telemetry.reconcile_interval must be >= 0 (0 disables it), got %s", c.Interval)
	case c.Window <= 0:
		return fmt.Errorf("telemetry.reconcile_window must be > 0, got %s", c.Window)
	case c.StuckAfter <= 0:
		return fmt.Errorf("telemetry.stuck_after must be > 0, got %s", c.StuckAfter)
	}
	return nil
}
