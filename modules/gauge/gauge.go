// Package gauge exports what only PostgreSQL knows as Prometheus gauges,
// refreshed periodically: open requests by state, the age of the oldest,
// requests near and past their legal deadline, and the in-sync check's
// out-of-sync counts per stage.
package gauge

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gdpr-oss/gdpr/modules/lifecycle"
	"github.com/gdpr-oss/gdpr/modules/reconcile"
	"github.com/gdpr-oss/gdpr/modules/requests"
)

// Requests reads the open requests (requests.Store).
type Requests interface {
	Open(ctx context.Context, near map[string]time.Duration) (requests.OpenStats, error)
}

// Checker is the in-sync check (reconcile.Checker).
type Checker interface {
	Check(ctx context.Context, opts reconcile.Options) (reconcile.Result, error)
}

// Options configure the refresh loops.
type Options struct {
	// Interval is how often the request gauges are refreshed.
	Interval time.Duration
	// NearDeadline is, per regulation, how close to the deadline in force
	// counts as near it: console.near_deadline, the windows the console's
	// dashboard and near_deadline filter use, so both count the same requests.
	NearDeadline map[string]time.Duration
	// ReconcileInterval is how often the in-sync check runs; 0 disables it.
	ReconcileInterval time.Duration
	// Reconcile bounds the periodic in-sync check.
	Reconcile reconcile.Options
}

// Exporter is a component that refreshes the gauges until stopped. Every
// worker process exports the same values; aggregate with max(), not sum().
type Exporter struct {
	requests Requests
	checker  Checker
	opts     Options
	logger   *slog.Logger

	open          *prometheus.GaugeVec
	oldest        prometheus.Gauge
	near          prometheus.Gauge
	past          prometheus.Gauge
	outOfSync     *prometheus.GaugeVec
	failed        prometheus.Gauge
	inProgress    prometheus.Gauge
	lastReconcile prometheus.Gauge
	refreshErrors *prometheus.CounterVec

	life lifecycle.Runner
}

// New registers the gauges on reg; nothing is read until Start.
func New(reqs Requests, checker Checker, opts Options, reg prometheus.Registerer, logger *slog.Logger) *Exporter {
	e := &Exporter{
		requests: reqs,
		checker:  checker,
		opts:     opts,
		logger:   logger,
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gdpr_open_requests",
			Help: "Requests not yet completed, failed, cancelled or denied, by state (from PostgreSQL).",
		}, []string{"state"}),
		oldest: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gdpr_oldest_open_request_age_seconds",
			Help: "Age of the oldest open request since submission; 0 when none is open.",
		}),
		near: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gdpr_requests_near_deadline",
			Help: "Open requests whose deadline in force (extended_until, else due_at) is within its regulation's console.near_deadline window (default gdpr 7 days, ccpa 7, lgpd 3).",
		}),
		past: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gdpr_requests_past_deadline",
			Help: "Open requests whose deadline in force (extended_until, else due_at) has passed.",
		}),
		outOfSync: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gdpr_out_of_sync",
			Help: "Requests stuck before a stage for longer than telemetry.stuck_after, by the first missing stage (the in-sync check).",
		}, []string{"stage"}),
		failed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gdpr_reconcile_failed_requests",
			Help: "Requests within telemetry.reconcile_window that failed after their last attempt.",
		}),
		inProgress: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gdpr_reconcile_in_progress_requests",
			Help: "Requests within telemetry.reconcile_window still moving between stages within the threshold.",
		}),
		lastReconcile: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gdpr_reconcile_last_success_timestamp_seconds",
			Help: "Unix time of the last successful in-sync check.",
		}),
		refreshErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gdpr_gauge_refresh_errors_total",
			Help: "Failed refreshes of the PostgreSQL gauges, by loop (requests, reconcile).",
		}, []string{"loop"}),
	}
	for _, s := range requests.OpenStates() {
		e.open.WithLabelValues(string(s))
	}
	for _, s := range reconcile.Stages() {
		e.outOfSync.WithLabelValues(s)
	}
	e.refreshErrors.WithLabelValues("requests")
	e.refreshErrors.WithLabelValues("reconcile")
	reg.MustRegister(e.open, e.oldest, e.near, e.past, e.outOfSync, e.failed, e.inProgress, e.lastReconcile, e.refreshErrors)
	return e
}

// Name identifies the component in logs.
func (e *Exporter) Name() string { return "postgres gauges" }

// Start runs one refresh of each kind, then keeps refreshing in the
// background. A failed refresh is logged and counted, never fatal: the
// gauges keep their last values and the next tick tries again.
func (e *Exporter) Start(ctx context.Context) error {
	loopCtx, _, err := e.life.Begin(ctx)
	if err != nil {
		return fmt.Errorf("starting gauges: %w", err)
	}
	e.loop(loopCtx, "requests", e.opts.Interval, e.RefreshRequests)
	if e.opts.ReconcileInterval > 0 {
		e.loop(loopCtx, "reconcile", e.opts.ReconcileInterval, e.RefreshReconcile)
	}
	return nil
}

// Stop ends the loops and returns once both have, even past ctx's end (a
// refresh in flight is cancelled with the loops).
func (e *Exporter) Stop(ctx context.Context) error { return e.life.Stop(ctx, nil) }

// Failed receives a failure of the exporter after Start (a panicking loop).
func (e *Exporter) Failed() <-chan error { return e.life.Failed() }

// Running is how many of the exporter's goroutines have not returned yet.
func (e *Exporter) Running() int { return e.life.Running() }

func (e *Exporter) loop(ctx context.Context, name string, every time.Duration, refresh func(context.Context) error) {
	e.life.Go(func() {
		ticker := time.NewTicker(every)
		defer ticker.Stop()
		for {
			runCtx, cancel := context.WithTimeout(ctx, max(every, 10*time.Second))
			if err := refresh(runCtx); err != nil && ctx.Err() == nil {
				e.refreshErrors.WithLabelValues(name).Inc()
				e.logger.WarnContext(ctx, "gauge refresh failed", "loop", name, "error", err)
			}
			cancel()
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
			}
		}
	})
}

// RefreshRequests reads the request gauges from PostgreSQL once.
func (e *Exporter) RefreshRequests(ctx context.Context) error {
	st, err := e.requests.Open(ctx, e.opts.NearDeadline)
	if err != nil {
		return err
	}
	for _, s := range requests.OpenStates() {
		e.open.WithLabelValues(string(s)).Set(0)
	}
	for s, n := range st.ByState {
		e.open.WithLabelValues(string(s)).Set(float64(n))
	}
	e.oldest.Set(st.OldestSeconds)
	e.near.Set(float64(st.Near))
	e.past.Set(float64(st.Past))
	return nil
}

// RefreshReconcile runs the in-sync check once and exports its result.
func (e *Exporter) RefreshReconcile(ctx context.Context) error {
	res, err := e.checker.Check(ctx, e.opts.Reconcile)
	if err != nil {
		return err
	}
	for stage, n := range res.OutOfSync() {
		e.outOfSync.WithLabelValues(stage).Set(float64(n))
	}
	e.failed.Set(float64(len(res.Failed)))
	e.inProgress.Set(float64(res.InProgress))
	e.lastReconcile.Set(float64(res.CheckedAt.Unix()))
	if !res.InSync() {
		ids := make([]string, 0, min(len(res.Stuck), 20))
		for _, s := range res.Stuck[:min(len(res.Stuck), 20)] {
			ids = append(ids, s.RequestID)
		}
		e.logger.WarnContext(ctx, "requests out of sync", "stuck", len(res.Stuck), "request_ids", ids)
	}
	return nil
}
