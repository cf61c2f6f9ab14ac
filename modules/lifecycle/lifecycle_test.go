package lifecycle_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/lifecycle"
)

func TestStopWaitsForEveryGoroutine(t *testing.T) {
	t.Parallel()
	var r lifecycle.Runner
	run, _, err := r.Begin(t.Context())
	require.NoError(t, err)
	release := make(chan struct{})
	finished := make(chan struct{})
	r.Go(func() {
		<-run.Done()
		<-release // cleanup that outlives the stop signal
		close(finished)
	})
	stopped := make(chan error, 1)
	go func() { stopped <- r.Stop(context.Background(), nil) }()
	select {
	case <-stopped:
		t.Fatal("Stop returned while a goroutine still ran")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	require.NoError(t, <-stopped)
	select {
	case <-finished:
	default:
		t.Fatal("Stop returned before the goroutine ended")
	}
	require.Zero(t, r.Running())
}

func TestStopAtTheDeadlineCutsWorkAndStillWaits(t *testing.T) {
	t.Parallel()
	var r lifecycle.Runner
	run, work, err := r.Begin(t.Context())
	require.NoError(t, err)
	ended := make(chan struct{})
	r.Go(func() {
		<-run.Done()
		<-work.Done() // work in flight that only the drain deadline ends
		close(ended)
	})
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	err = r.Stop(ctx, nil)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	select {
	case <-ended:
	default:
		t.Fatal("Stop returned before the goroutine ended")
	}
	require.Zero(t, r.Running())
}

func TestStartContextEndingDoesNotStopTheRun(t *testing.T) {
	t.Parallel()
	var r lifecycle.Runner
	ctx, cancel := context.WithCancel(t.Context())
	run, work, err := r.Begin(ctx)
	require.NoError(t, err)
	cancel() // shutdown began; Stop comes later
	require.NoError(t, run.Err())
	require.NoError(t, work.Err())
	require.NoError(t, r.Stop(t.Context(), nil))
	require.Error(t, run.Err())
	require.Error(t, work.Err())
}

func TestFailureAndPanicReachFailed(t *testing.T) {
	t.Parallel()
	boom := errors.New("listener died")
	for name, f := range map[string]func(r *lifecycle.Runner){
		"fail":  func(r *lifecycle.Runner) { r.Fail(boom) },
		"panic": func(*lifecycle.Runner) { panic(boom) },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var r lifecycle.Runner
			_, _, err := r.Begin(t.Context())
			require.NoError(t, err)
			r.Go(func() { f(&r) })
			select {
			case err := <-r.Failed():
				require.ErrorContains(t, err, "listener died")
			case <-time.After(5 * time.Second):
				t.Fatal("no failure reported")
			}
			r.Fail(errors.New("a second failure is dropped, not blocking"))
			require.NoError(t, r.Stop(t.Context(), nil))
		})
	}
}

func TestBeginTwiceAndStopWithoutBegin(t *testing.T) {
	t.Parallel()
	var r lifecycle.Runner
	require.NoError(t, r.Stop(t.Context(), nil), "stopping what never started")
	_, _, err := r.Begin(t.Context())
	require.NoError(t, err)
	_, _, err = r.Begin(t.Context())
	require.ErrorIs(t, err, lifecycle.ErrStarted)
	drained := false
	require.NoError(t, r.Stop(t.Context(), func(context.Context) error { drained = true; return nil }))
	require.True(t, drained)
	_, _, err = r.Begin(t.Context())
	require.NoError(t, err, "a stopped runner can begin again")
	require.NoError(t, r.Stop(t.Context(), nil))
}
