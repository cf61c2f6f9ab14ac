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
// goroutine the component started (modules/lifecycle is the base they
// share). A component that can fail after Start also has
// Failed() <-chan error; the role watches it and, on a failure, drains
// every component and exits 1.
//
// The ctx given to Start ends when shutdown begins (the first SIGTERM), before
// Stop is called: work that must survive into the drain has to run on a
// context detached from it (context.WithoutCancel) and be ended by Stop.
type Component interface {
	Name() string
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
}

// failer is implemented by components that can fail after Start (a server
// whose listener dies): the role then drains the others and exits non-zero.
type failer interface{ Failed() <-chan error }

// readier is implemented by components that report readiness once every
// component started (the admin server).
type readier interface{ MarkReady() }

// drainer is implemented by components that can signal "draining" before
// anything stops (the admin server fails /readyz).
type drainer interface{ Drain() }

// stopGrace is how long run waits, after the drain deadline, for a component
// whose Stop ignores its context before giving up on it. It keeps the whole
// shutdown bounded by drainTimeout + stopGrace however a component behaves.
const stopGrace = time.Second

// errForced reports that shutdown was cut short by a second signal.
var errForced = errors.New("shutdown forced by a second signal")

// run starts components in order, waits for ctx to end (SIGTERM/SIGINT) or
// a component to fail, then stops them in reverse order within drainTimeout.
// A failure is returned as the error, so the process exits non-zero.
func run(ctx context.Context, logger *slog.Logger, drainTimeout time.Duration, components []Component) error {
	return runForce(ctx, nil, logger, drainTimeout, components)
}

// runForce is run with a force channel: when it is closed during shutdown
// (a second SIGTERM/SIGINT), run stops waiting for components and returns
// errForced at once.
func runForce(ctx context.Context, force <-chan struct{}, logger *slog.Logger, drainTimeout time.Duration, components []Component) error {
	started := make([]Component, 0, len(components))
	for _, c := range components {
		if err := c.Start(ctx); err != nil {
			if ctx.Err() != nil {
				// A signal arrived while starting: a requested shutdown, not a failure.
				logger.Info("shutting down during start", "component", c.Name())
				return stopAll(logger, force, drainTimeout, started)
			}
			logger.Error("component start failed", "component", c.Name(), "error", err)
			return errors.Join(fmt.Errorf("starting %s: %w", c.Name(), err), stopAll(logger, force, drainTimeout, started))
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
	watch, unwatch := context.WithCancel(ctx)
	defer unwatch()
	select {
	case <-ctx.Done():
		logger.Info("shutting down", "drain_timeout", drainTimeout)
		return stopAll(logger, force, drainTimeout, started)
	case f := <-failures(watch, started):
		logger.Error("component failed; shutting down", "component", f.name, "error", f.err, "drain_timeout", drainTimeout)
		return errors.Join(fmt.Errorf("%s failed: %w", f.name, f.err), stopAll(logger, force, drainTimeout, started))
	}
}

type failure struct {
	name string
	err  error
}

// failures forwards the first failure of any component in cs; its
// goroutines end when ctx does.
func failures(ctx context.Context, cs []Component) <-chan failure {
	out := make(chan failure, 1)
	for _, c := range cs {
		f, ok := c.(failer)
		if !ok {
			continue
		}
		go func() {
			select {
			case err := <-f.Failed():
				select {
				case out <- failure{name: c.Name(), err: err}:
				default: // another component failed first
				}
			case <-ctx.Done():
			}
		}()
	}
	return out
}

// stopAll drains then stops started in reverse order. Every Stop shares one
// drain deadline; a Stop that overruns it by more than stopGrace is left
// behind (the process is exiting anyway), so a stuck component cannot hold
// the process past its drain bound.
func stopAll(logger *slog.Logger, force <-chan struct{}, drainTimeout time.Duration, started []Component) error {
	stopCtx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	hard := time.NewTimer(drainTimeout + stopGrace)
	defer hard.Stop()
	abandoned := false
	for _, c := range started {
		if d, ok := c.(drainer); ok {
			d.Drain()
		}
	}
	var errs []error
	for i := len(started) - 1; i >= 0; i-- {
		c := started[i]
		begin := time.Now()
		done := make(chan error, 1)
		go func() { done <- c.Stop(stopCtx) }()
		var err error
		if abandoned {
			// Past the hard deadline: ask the rest to stop (they see an ended
			// context) but only wait briefly for each.
			select {
			case err = <-done:
			case <-time.After(stopGrace / 10):
				err = fmt.Errorf("not waited for: %w", context.DeadlineExceeded)
			}
		} else {
			select {
			case err = <-done:
			case <-hard.C:
				abandoned = true
				err = fmt.Errorf("did not stop within %s: %w", drainTimeout+stopGrace, context.DeadlineExceeded)
			case <-force:
				logger.Warn("second signal: exiting without waiting for the drain", "component", c.Name())
				return errForced
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("stopping %s: %w", c.Name(), err))
			logger.Error("component stop failed", "component", c.Name(), "error", err)
			continue
		}
		logger.Info("component stopped", "component", c.Name(), "took", time.Since(begin).Round(time.Millisecond))
	}
	return errors.Join(errs...)
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
