package audit

import "fmt"

// Config is audit's part of the telemetry section.
type Config struct {
	// AuditConcurrency is how many audit messages are handled at once; the
	// events of those handled together share one INSERT and one commit.
	Concurrency int `yaml:"audit_concurrency"`
}

// DefaultConfig batches up to 32 events in one INSERT.
func DefaultConfig() Config { return Config{Concurrency: 32} }

// Validate names the bad setting in full (telemetry.audit_concurrency).
func (c Config) Validate() error {
	if c.Concurrency < 1 {
		return fmt.Errorf("telemetry.audit_concurrency must be >= 1, got %d", c.Concurrency)
	}
	return nil
}
