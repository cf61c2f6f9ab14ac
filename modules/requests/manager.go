// Package requests is the requests manager: it stores submitted data subject
// requests, runs the workers that build access reports and hand erasures on,
// and retries failures with backoff. PostgreSQL is the source of truth; the
// Redis lock only saves duplicate work (docs/architecture.md, invariant 3).
package requests

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/lifecycle"
	"github.com/gdpr-oss/gdpr/modules/lock"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/notify"
)

// Consumer is the inbox name of the requests manager's queue consumer.
const Consumer = "worker.requests"

// Queue is the queue the requests manager consumes (without the prefix).
const Queue = "worker.requests"

// Bindings are the routing keys that reach Queue.
func Bindings() []string {
	return []string{event.TypeRequestSubmitted, event.TypeErasureFinished}
}

// Error classes recorded for failures the manager detects itself.
const (
	ClassAbandoned = "abandoned" // the worker holding the request died
)

// Report is what a successful build produced.
type Report struct {
	ID     string
	Bytes  int64
	SHA256 string
	Rows   int64
	// Contents is what the report holds, per source (reports.contents).
	Contents []ReportSource
}

// Builder builds, deletes and sweeps access reports. Build is all or
// nothing and writes a report whose id is the same for every build of one
// request, so a rebuild replaces rather than adds.
type Builder interface {
	Build(ctx context.Context, requestID string, subject event.Subject) (Report, error)
	// Delete removes the report of requestID, if any; deleting nothing is not an error.
	Delete(ctx context.Context, requestID string) error
	// Sweep removes temporary files older than olderThan left by crashed builds.
	Sweep(ctx context.Context, olderThan time.Duration) error
	// ErrorClass names err's kind without personal data (metric label, history).
	ErrorClass(err error) string
}

// Outbox enqueues a message inside the caller's transaction, or as a
// member of the caller's statement (outbox.Store.EnqueueSQL).
type Outbox interface {
	Enqueue(ctx context.Context, tx *gorm.DB, m message.Message) error
	EnqueueSQL(m message.Message, guard string) (string, []any, error)
}

// DeletedEmails tells, inside the caller's transaction, whether the
// "deleted" email of an erasure is recorded as sent or skipped. The
// notifier owns that record (notify.Store).
type DeletedEmails interface {
	DeletedEmailRecorded(ctx context.Context, tx *gorm.DB, requestID string) (bool, error)
}

// Locker obtains the Redis mutex for a request.
type Locker interface {
	Obtain(ctx context.Context, key string, ttl time.Duration) (*lock.Lease, error)
}

// Config tunes the manager.
type Config struct {
	Concurrency  int
	PollInterval time.Duration
	MaxAttempts  int
	BackoffBase  time.Duration
	BackoffMax   time.Duration
	// LeaseTTL is the Redis lock's and the PostgreSQL lease's lifetime;
	// both are renewed every LeaseTTL/3 while a worker works.
	LeaseTTL      time.Duration
	ErasureWait   time.Duration
	SweepInterval time.Duration
	SweepAge      time.Duration
}

// Manager stores requests and processes them. It is a Component: Start runs
// the worker pool, Stop drains it.
type Manager struct {
	db      *gorm.DB
	outbox  Outbox
	locker  Locker
	builder Builder
	cfg     Config
	logger  *slog.Logger
	fence   lock.Fence
	emails  DeletedEmails
	store   *Store
	metrics metrics
	wake    chan struct{}
	// polling is held by the one idle worker that looks for due requests
	// every PollInterval; the other idle workers wait for a wake-up only, so
	// an idle pool costs one query per interval, not one per worker.
	polling atomic.Bool

	life lifecycle.Runner
}

type metrics struct {
	received   *prometheus.CounterVec
	retries    *prometheus.CounterVec
	failures   *prometheus.CounterVec
	contention *prometheus.CounterVec
}

// New returns a manager; nothing runs until Start.
func New(db *gorm.DB, outbox Outbox, locker Locker, builder Builder, cfg Config, logger *slog.Logger, reg prometheus.Registerer) *Manager {
	if cfg.Concurrency < 1 {
		cfg.Concurrency = 1
	}
	m := &Manager{
		db: db, outbox: outbox, locker: locker, builder: builder, cfg: cfg,
		logger: logger.With("component", "requests"),
		fence:  lock.Fence{Table: "requests"},
		// The notifier's record lives in the same database; its store
		// needs nothing but the caller's transaction.
		emails: notify.NewStore(db),
		store:  NewStore(db, builder),
		wake:   make(chan struct{}, cfg.Concurrency),
		metrics: metrics{
			received: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "gdpr_requests_received_total", Help: "Requests stored by the requests manager.",
			}, []string{"type"}),
			retries: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "gdpr_retries_total", Help: "Failed attempts that will be retried.",
			}, []string{"stage", "error_class"}),
			failures: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "gdpr_failures_total", Help: "Requests failed after their last attempt.",
			}, []string{"stage", "error_class"}),
			contention: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "gdpr_lock_contention_total", Help: "Locks found held by someone else.",
			}, []string{"lock"}),
		},
	}
	if reg != nil {
		mt := &m.metrics
		mt.received = register(reg, mt.received)
		mt.retries = register(reg, mt.retries)
		mt.failures = register(reg, mt.failures)
		mt.contention = register(reg, mt.contention)
	}
	return m
}

// register registers c on reg, or returns the identical collector another
// module of the same process registered already (several roles share
// metric names such as gdpr_retries_total in `gdpr all`).
func register[T prometheus.Collector](reg prometheus.Registerer, c T) T {
	if err := reg.Register(c); err != nil {
		var already prometheus.AlreadyRegisteredError
		if errors.As(err, &already) {
			if existing, ok := already.ExistingCollector.(T); ok {
				return existing
			}
		}
		panic(err)
	}
	return c
}

// Store is the manager's data lifecycle API (report deletion, scrubbing,
// record deletion) for the retention sweeper and the download.
func (m *Manager) Store() *Store { return m.store }

// Name identifies the component in logs.
func (m *Manager) Name() string { return "requests manager" }

// Start runs the worker pool and the sweeper.
func (m *Manager) Start(ctx context.Context) error {
	runCtx, _, err := m.life.Begin(ctx)
	if err != nil {
		return fmt.Errorf("starting %s: %w", m.Name(), err)
	}
	for i := 0; i < m.cfg.Concurrency; i++ {
		m.life.Go(func() { m.loop(runCtx) })
	}
	m.life.Go(func() { m.sweepLoop(runCtx) })
	return nil
}

// Stop cancels the workers; a request being worked on goes back to
// `received` without counting as an attempt. It returns once every worker
// has returned, even past ctx's end.
func (m *Manager) Stop(ctx context.Context) error { return m.life.Stop(ctx, nil) }

// Failed receives a failure of the manager after Start (a panicking worker).
func (m *Manager) Failed() <-chan error { return m.life.Failed() }

// Running is how many of the manager's goroutines have not returned yet.
func (m *Manager) Running() int { return m.life.Running() }

// Wake tells idle workers that a request may be due.
func (m *Manager) Wake() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

func (m *Manager) loop(ctx context.Context) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for ctx.Err() == nil {
		worked, err := m.ProcessOne(ctx)
		if err != nil && ctx.Err() == nil {
			m.logger.WarnContext(ctx, "processing a request failed", "error", err)
		}
		if worked && err == nil {
			// There may be more: another idle worker looks too, so a backlog
			// found by the poller spreads over the pool.
			m.Wake()
			continue
		}
		if !m.polling.CompareAndSwap(false, true) {
			select {
			case <-ctx.Done():
				return
			case <-m.wake:
			}
			continue
		}
		timer.Reset(m.cfg.PollInterval)
		select {
		case <-ctx.Done():
		case <-m.wake:
		case <-timer.C:
		}
		m.polling.Store(false)
	}
}

func (m *Manager) sweepLoop(ctx context.Context) {
	if m.cfg.SweepInterval <= 0 {
		return
	}
	t := time.NewTicker(m.cfg.SweepInterval)
	defer t.Stop()
	for {
		if err := m.builder.Sweep(ctx, m.cfg.SweepAge); err != nil && ctx.Err() == nil {
			m.logger.WarnContext(ctx, "sweeping report storage failed", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
