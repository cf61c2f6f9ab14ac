package requests_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/event"
)

// A build that outlives the drain deadline still holds a worker: Stop must
// not return (and let the process close the database under it) until that
// worker has returned.
func TestManagerStopWaitsForItsWorkers(t *testing.T) {
	t.Parallel()
	building := make(chan struct{})
	release := make(chan struct{})
	e := newEnv(t, newBuilder(func(ctx context.Context, _ string, _ int) error {
		close(building)
		<-ctx.Done()
		<-release // cleanup of a source that ignores cancellation
		return ctx.Err()
	}))
	m := submitted(t, event.KindAccess, event.Subject{ID: "u-stop"})
	require.NoError(t, e.mgr.Handle(t.Context(), m))
	require.NoError(t, e.mgr.Start(t.Context()))
	select {
	case <-building:
	case <-time.After(20 * time.Second):
		t.Fatal("no worker picked the request")
	}

	expired, cancel := context.WithCancel(t.Context())
	cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- e.mgr.Stop(expired) }()
	select {
	case <-stopped:
		t.Fatal("Stop returned while a worker was still building")
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Stop did not return once the worker could")
	}
	require.Zero(t, e.mgr.Running(), "every goroutine of the manager has returned")
}
