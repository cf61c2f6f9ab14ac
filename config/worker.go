package config

import "time"

// Worker configures the requests manager role.
type Worker struct {
	AdminAddr string `yaml:"admin_addr"`
	// Concurrency is the number of workers processing requests in this process.
	Concurrency int `yaml:"concurrency"`
	// ReceiveConcurrency is how many messages of the worker.requests queue
	// (submissions, finished erasures) are stored at once; each is one short
	// transaction, so a few suffice however many workers build reports.
	ReceiveConcurrency int `yaml:"receive_concurrency"`
	// PollInterval is the longest a worker idles before looking for due
	// requests stored by other processes and retries that became due.
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

func defaultWorker() Worker {
	return Worker{
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

func (w Worker) validate() error {
	switch {
	case w.AdminAddr == "":
		return invalid("worker.admin_addr", "must be set")
	case w.Concurrency < 1:
		return invalid("worker.concurrency", "must be >= 1, got %d", w.Concurrency)
	case w.ReceiveConcurrency < 1:
		return invalid("worker.receive_concurrency", "must be >= 1, got %d", w.ReceiveConcurrency)
	case w.PollInterval <= 0:
		return invalid("worker.poll_interval", "must be > 0, got %s", w.PollInterval)
	case w.MaxAttempts < 1:
		return invalid("worker.max_attempts", "must be >= 1, got %d", w.MaxAttempts)
	case w.BackoffBase <= 0:
		return invalid("worker.backoff_base", "must be > 0, got %s", w.BackoffBase)
	case w.BackoffMax < w.BackoffBase:
		return invalid("worker.backoff_max", "must be >= worker.backoff_base, got %s", w.BackoffMax)
	case w.ErasureWait <= 0:
		return invalid("worker.erasure_wait", "must be > 0, got %s", w.ErasureWait)
	case w.SweepInterval <= 0:
		return invalid("worker.sweep_interval", "must be > 0, got %s", w.SweepInterval)
	case w.SweepAge <= 0:
		return invalid("worker.sweep_age", "must be > 0, got %s", w.SweepAge)
	}
	return nil
}
