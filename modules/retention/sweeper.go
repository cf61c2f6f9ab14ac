// Package retention is gdpr's own data lifecycle: the sweeper that, in the
// worker role, deletes what gdpr no longer needs when its lifetime in
// docs/privacy.md ends: expired reports, the personal data of finished
// requests, their PII-free record after retention.record_for, and old dead
// letters. It owns no table: each step is the owning module's store API.
package retention

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gdpr-oss/gdpr/modules/lifecycle"
)

// Kinds of what a step deletes (the kind label of gdpr_retention_deleted_total).
const (
	KindReportFile    = "report_file"    // a file whose deletion was recorded but not done (crash)
	KindReport        = "report"         // a report past report.retention
	KindPersonalData  = "personal_data"  // a finished request's subject, past retention.scrub_after
	KindRequestRecord = "request_record" // a request's PII-free record, past retention.record_for
	KindNotification  = "notification"   // the record of an email of a deleted request
	KindErasureRecord = "erasure_record" // the canceller's record of an erasure, past retention.record_for
	KindDeadLetter    = "dead_letter"    // a dead letter past retention.dead_letters_for, or of an erased request
)

// Step deletes one kind of item. Run deletes (or, with dryRun, lists) at
// most limit items due at now and returns their ids. It must be safe to
// run in several processes at once (each item deleted by one of them) and
// leave nothing half-done when the process dies in it.
type Step struct {
	Kind string
	Run  func(ctx context.Context, now time.Time, limit int, dryRun bool) ([]string, error)
}

// Item is one thing a sweep deleted, or a dry run would.
type Item struct {
	Kind string
	ID   string
}

// maxBatches bounds one sweep of one step, so a backlog is worked off over
// several intervals instead of holding a worker for hours.
const maxBatches = 100

// Sweeper runs the steps every Config.Interval. It is a Component.
type Sweeper struct {
	cfg     Config
	steps   []Step
	now     func() time.Time
	logger  *slog.Logger
	deleted *prometheus.CounterVec
	life    lifecycle.Runner
}

// Option configures a Sweeper.
type Option func(*Sweeper)

// WithClock replaces time.Now (tests move the clock instead of waiting).
func WithClock(now func() time.Time) Option { return func(s *Sweeper) { s.now = now } }

// New returns a sweeper over steps, run in their order; nothing runs until
// Start. Its metric is registered on reg when reg is not nil.
func New(cfg Config, steps []Step, logger *slog.Logger, reg prometheus.Registerer, opts ...Option) (*Sweeper, error) {
	s := &Sweeper{
		cfg: cfg, steps: steps, now: time.Now,
		logger: logger.With("component", "retention"),
		deleted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gdpr_retention_deleted_total",
			Help: "Items the retention sweeper deleted, by kind (docs/privacy.md).",
		}, []string{"kind"}),
	}
	for _, o := range opts {
		o(s)
	}
	for _, st := range steps {
		s.deleted.WithLabelValues(st.Kind)
	}
	if reg != nil {
		if err := reg.Register(s.deleted); err != nil {
			return nil, fmt.Errorf("registering retention metrics: %w", err)
		}
	}
	return s, nil
}

// Sweep runs every step until nothing is due (at most maxBatches batches of
// Config.Batch each) and returns how many items of each kind it deleted.
// A failing step is logged and the others still run; the error joins every
// step's failure.
func (s *Sweeper) Sweep(ctx context.Context) (map[string]int, error) {
	now := s.now()
	counts := map[string]int{}
	var errs []error
	for _, st := range s.steps {
		for range maxBatches {
			ids, err := st.Run(ctx, now, s.cfg.Batch, false)
			counts[st.Kind] += len(ids)
			s.deleted.WithLabelValues(st.Kind).Add(float64(len(ids)))
			if err != nil {
				if ctx.Err() == nil {
					s.logger.WarnContext(ctx, "retention step failed", "kind", st.Kind, "error", err)
				}
				errs = append(errs, fmt.Errorf("retention %s: %w", st.Kind, err))
				break
			}
			if len(ids) < s.cfg.Batch {
				break
			}
		}
		if ctx.Err() != nil {
			break
		}
	}
	for kind, n := range counts {
		if n > 0 {
			s.logger.InfoContext(ctx, "retention deleted", "kind", kind, "count", n)
		}
	}
	return counts, errors.Join(errs...)
}

// DryRun lists up to limit items of each step that a sweep now would
// delete, and deletes nothing.
func (s *Sweeper) DryRun(ctx context.Context, limit int) ([]Item, error) {
	now := s.now()
	var out []Item
	for _, st := range s.steps {
		ids, err := st.Run(ctx, now, limit, true)
		if err != nil {
			return out, fmt.Errorf("retention %s: %w", st.Kind, err)
		}
		for _, id := range ids {
			out = append(out, Item{Kind: st.Kind, ID: id})
		}
	}
	return out, nil
}

// Name identifies the component in logs.
func (s *Sweeper) Name() string { return "retention sweeper" }

// Start sweeps at once and then every Config.Interval.
func (s *Sweeper) Start(ctx context.Context) error {
	run, _, err := s.life.Begin(ctx)
	if err != nil {
		return fmt.Errorf("starting %s: %w", s.Name(), err)
	}
	s.life.Go(func() {
		t := time.NewTicker(s.cfg.Interval)
		defer t.Stop()
		for {
			// Failures are logged per step; the next interval tries again.
			_, _ = s.Sweep(run)
			select {
			case <-run.Done():
				return
			case <-t.C:
			}
		}
	})
	return nil
}

// Stop ends the loop; a batch in flight finishes or is rolled back.
func (s *Sweeper) Stop(ctx context.Context) error { return s.life.Stop(ctx, nil) }

// Failed receives a failure of the sweeper after Start.
func (s *Sweeper) Failed() <-chan error { return s.life.Failed() }
