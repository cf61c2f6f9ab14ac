package config

import "time"

// Scheduler configures the delayed-message role.
type Scheduler struct {
	AdminAddr string `yaml:"admin_addr"`
	// BatchSize is the most due messages claimed in one transaction.
	BatchSize int `yaml:"batch_size"`
	// MaxIdle caps the sleep between looks at the table.
	MaxIdle time.Duration `yaml:"max_idle"`
	// Retention is how long sent messages are kept before pruning.
	Retention time.Duration `yaml:"retention"`
}

func defaultScheduler() Scheduler {
	return Scheduler{
		AdminAddr: "127.0.0.1:9092",
		BatchSize: 500,
		MaxIdle:   5 * time.Second,
		Retention: 7 * 24 * time.Hour,
	}
}

func (s Scheduler) validate() error {
	switch {
	case s.AdminAddr == "":
		return invalid("scheduler.admin_addr", "must be set")
	case s.BatchSize < 1:
		return invalid("scheduler.batch_size", "must be >= 1, got %d", s.BatchSize)
	case s.MaxIdle <= 0:
		return invalid("scheduler.max_idle", "must be > 0, got %s", s.MaxIdle)
	case s.Retention <= 0:
		return invalid("scheduler.retention", "must be > 0, got %s", s.Retention)
	}
	return nil
}
