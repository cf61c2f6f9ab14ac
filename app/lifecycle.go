package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Component is one long-running part of a role: a consumer, a worker pool,
// an HTTP server. Start returns once the component runs (or failed to);
// Stop stops taking new work, drains until ctx ends, and waits for every
// goroutine the component started.
type Component interface {
	Name() string
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
}

// readier is implemented by components that report readiness once every
// component started (the admin server).
type readier interface{ MarkReady() }

// drainer is implemented by components that can signal "draining" before
// anything stops (the admin server fails /readyz).
type drainer interface{ Drain() }

// run starts components in order, waits for ctx to end (SIGTERM/SIGINT),
// then stops them in reverse order within drainTimeout.
func run(ctx context.Context, logger *slog.Logger, drainTimeout time.Duration, components []Component) error {
	started := make([]Component, 0, len(components))
	stopAll := func() error {
		stopCtx, cancel := context.WithTimeout(context.Background(), drainTimeout)
		defer cancel()
		for _, c := range started {
			if d, ok := c.(drainer); ok {
				d.Drain()
			}
		}
		var errs []error
		for i := len(started) - 1; i >= 0; i-- {
			c := started[i]
			begin := time.Now()
			if err := c.Stop(stopCtx); err != nil {
				errs = append(errs, fmt.Errorf("stopping %s: %w", c.Name(), err))
				logger.Error("component stop failed", "component", c.Name(), "error", err)
				continue
			}
			logger.Info("component stopped", "component", c.Name(), "took", time.Since(begin).Round(time.Millisecond))
		}
		return errors.Join(errs...)
	}
	for _, c := range components {
		if err := c.Start(ctx); err != nil {
			logger.Error("component start failed", "component", c.Name(), "error", err)
			return errors.Join(fmt.Errorf("starting %s: %w", c.Name(), err), stopAll())
		}
		started = append(started, c)
		logger.Info("component started", "component", c.Name())
	}
	for _, c := range started {
		if r, ok := c.(readier); ok {
			r.MarkReady()
		}
	}
	logger.Info("ready")
	<-ctx.Done()
	logger.Info("shutting down", "drain_timeout", drainTimeout)
	return stopAll()
}

// funcComponent adapts start and stop functions to Component.
type funcComponent struct {
	name  string
	start func(ctx context.Context) error
	stop  func(ctx context.Context) error
}

func (f funcComponent) Name() string { return f.name }

func (f funcComponent) Start(ctx context.Context) error {
	if f.start == nil {
		return nil
	}
	return f.start(ctx)
}

func (f funcComponent) Stop(ctx context.Context) error {
	if f.stop == nil {
		return nil
	}
	return f.stop(ctx)
}
