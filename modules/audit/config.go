package audit

import "fmt"

// Config is audit's part of the telemetry section.
type Config struct {
	// AuditConcurrency is how many audit events are written at once.
	Concurrency int `yaml:"audit_concurrency"`
}

// DefaultConfig writes a few events at once.
func DefaultConfig() Config { return Config{Concurrency: 4} }

// Validate names the bad setting in full (telemetry.audit_concurrency).
func (c Config) Validate() error {
	if c.Concurrency < 1 {
		return fmt.Errorf("telemetry.audit_concurrency must be >= 1, got %d", c.Concurrency)
	}
	return nil
}
