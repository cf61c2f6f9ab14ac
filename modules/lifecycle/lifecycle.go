// Package lifecycle is the start/stop base every long-running component
// uses, so that all of them stop the same way: Stop always waits for every
// goroutine the component started, and a failure after Start reaches the
// role through Failed instead of only a log line.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
)

// ErrStarted is returned by Begin while a run is under way.
var ErrStarted = errors.New("already started")

// Runner holds one component's goroutines. Its zero value is ready to use; a
// component keeps it as a field and calls Begin from its Start, Go for each
// goroutine, Fail when it cannot go on, and Stop from its Stop.
type Runner struct {
	mu      sync.Mutex
	started bool
	stop    context.CancelFunc
	abort   context.CancelFunc
	failed  chan error
	wg      sync.WaitGroup
	running atomic.Int64
}

// Begin starts a run and returns its two contexts: run ends when Stop is
// called (loops stop taking new work), work ends when Stop's context ends
// (the drain deadline: work in flight is cut). Both keep ctx's values but
// not its cancellation, because the context a role gives Start ends when
// shutdown begins, before Stop is called.
func (r *Runner) Begin(ctx context.Context) (run, work context.Context, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started {
		return nil, nil, ErrStarted
	}
	r.started = true
	base := context.WithoutCancel(ctx)
	work, r.abort = context.WithCancel(base)
	run, r.stop = context.WithCancel(work)
	return run, work, nil
}

// Go runs f in a goroutine that Stop waits for. Call it between Begin and
// Stop, from Start or from a goroutine Go started. A panic in f does not crash
// the process: it is reported through Failed, so the role drains the other
// components and exits non-zero.
func (r *Runner) Go(f func()) {
	r.wg.Add(1)
	r.running.Add(1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				r.Fail(fmt.Errorf("panic: %v\n%s", p, debug.Stack()))
			}
			r.running.Add(-1)
			r.wg.Done()
		}()
		f()
	}()
}

// Fail reports that the component cannot go on (a server's listener died).
// The first failure is kept until the role reads it; later ones are dropped,
// since the role stops the process on the first.
func (r *Runner) Fail(err error) {
	select {
	case r.failures() <- err:
	default:
	}
}

// Failed receives the component's first failure after Start.
func (r *Runner) Failed() <-chan error { return r.failures() }

func (r *Runner) failures() chan error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failed == nil {
		r.failed = make(chan error, 1)
	}
	return r.failed
}

// Running is how many goroutines started with Go have not returned yet.
func (r *Runner) Running() int { return int(r.running.Load()) }

// Stop ends the run context, calls drain (if not nil) with ctx, and waits
// for every goroutine. Should ctx end first, it ends the work context too
// and keeps waiting: it never returns while a goroutine of the component
// still runs, so goroutines must return once the work context ends. The
// error is drain's, joined with ctx's if the drain deadline passed.
// Stopping a Runner that never began does nothing.
func (r *Runner) Stop(ctx context.Context, drain func(context.Context) error) error {
	r.mu.Lock()
	if !r.started {
		r.mu.Unlock()
		return nil
	}
	stop, abort := r.stop, r.abort
	r.mu.Unlock()

	stop()
	var err error
	if drain != nil {
		err = drain(ctx)
	}
	done := make(chan struct{})
	go func() {
		r.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		abort()
		<-done
		err = errors.Join(err, fmt.Errorf("work in flight cut at the drain deadline: %w", ctx.Err()))
	}
	abort()

	r.mu.Lock()
	r.started = false
	r.mu.Unlock()
	return err
}
