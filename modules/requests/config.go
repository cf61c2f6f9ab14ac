package requests

import (
	"errors"
	"fmt"
	"time"
)

// WorkerConfig is the worker section: the requests manager role. (Config
// is the Manager's own tuning, which the role builds from it.)
type WorkerConfig struct {
	AdminAddr string `yaml:"admin_addr"`
	// Concurrency is the number of workers processing requests in this process.
	Concurrency int `yaml:"concurrency"`
	// ReceiveConcurrency is how many messages of the worker.requests queue
	// (submissions, finished erasures) are stored at once; each is one short
	// transaction, so a few suffice however many workers build reports.
	ReceiveConcurrency int `yaml:"receive_concurrency"`
	// PollInterval is how often one idle worker of the pool looks for due
	// requests stored by other processes and retries that became due (it
	// wakes the others when it finds one).
	PollInterval time.Duration `yaml:"poll_interval"`
	// MaxAttempts is how often a request is tried before it is failed.
	MaxAttempts int `yaml:"max_attempts"`
	// BackoffBase and BackoffMax shape the exponential backoff with full jitter.
	BackoffBase time.Duration `yaml:"backoff_base"`
	BackoffMax  time.Duration `yaml:"backoff_max"`
	// ErasureWait is how long an erasure waits before looking again when an
	// access report for the same subject is still being built.
	ErasureWait time.Duration `yaml:"erasure_wait"`
	// SweepInterval is how often abandoned temporary report files are removed;
	// SweepAge is how old such a file must be.
	SweepInterval time.Duration `yaml:"sweep_interval"`
	SweepAge      time.Duration `yaml:"sweep_age"`
}

// DefaultWorkerConfig is the worker role's configuration when nothing is set.
func DefaultWorkerConfig() WorkerConfig {
	return WorkerConfig{
		AdminAddr:          "127.0.0.1:9091",
		Concurrency:        8,
		ReceiveConcurrency: 8,
		PollInterval:       time.Second,
		MaxAttempts:        5,
		BackoffBase:        2 * time.Second,
		BackoffMax:         10 * time.Minute,
		ErasureWait:        5 * time.Second,
		SweepInterval:      10 * time.Minute,
		SweepAge:           time.Hour,
	}
}

// Validate names the first bad setting in full (worker.…).
func (w WorkerConfig) Validate() error {
	switch {
	case w.AdminAddr == "":
		return errors.New("worker.admin_addr must be set")
	case w.Concurrency < 1:
		return fmt.Errorf("worker.concurrency must be >= 1, got %d", w.Concurrency)
	case w.ReceiveConcurrency < 1:
		return fmt.Errorf("worker.receive_concurrency must be >= 1, got %d", w.ReceiveConcurrency)
	case w.PollInterval <= 0:
		return fmt.Errorf("worker.poll_interval must be > 0, got %s", w.PollInterval)
	case w.MaxAttempts < 1:
		return fmt.Errorf("worker.max_attempts must be >= 1, got %d", w.MaxAttempts)
	case w.BackoffBase <= 0:
		return fmt.Errorf("worker.backoff_base must be > 0, got %s", w.BackoffBase)
	case w.BackoffMax < w.BackoffBase:
		return fmt.Errorf("worker.backoff_max must be >= worker.backoff_base, got %s", w.BackoffMax)
	case w.ErasureWait <= 0:
		return fmt.Errorf("worker.erasure_wait must be > 0, got %s", w.ErasureWait)
	case w.SweepInterval <= 0:
		return fmt.Errorf("worker.sweep_interval must be > 0, got %s", w.SweepInterval)
	case w.SweepAge <= 0:
		return fmt.Errorf("worker.sweep_age must be > 0, got %s", w.SweepAge)
	}
	return nil
}
