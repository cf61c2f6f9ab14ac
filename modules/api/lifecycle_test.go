package api_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// When serving fails after Start (here its listener is closed under it),
// the server reports it through Failed rather than only logging it, so the
// role can exit non-zero.
func TestServerFailureAfterStartIsReported(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	h := newHarness(t, harnessOptions{listener: ln, discardLogs: true})
	require.Equal(t, ln.Addr().String(), h.srv.Addr())
	select {
	case err := <-h.srv.Failed():
		t.Fatalf("failed before anything went wrong: %v", err)
	default:
	}

	require.NoError(t, ln.Close())
	select {
	case err := <-h.srv.Failed():
		require.ErrorContains(t, err, "api server on "+ln.Addr().String())
		require.ErrorIs(t, err, net.ErrClosed)
	case <-time.After(10 * time.Second):
		t.Fatal("the failure was not reported")
	}
	testkit.Eventually(t, 5*time.Second, func() bool { return h.srv.Running() == 0 }, "the serving goroutine returned")
}

func TestServerStopWaitsForItsGoroutine(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{discardLogs: true})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	require.Equal(t, 1, h.srv.Running())
	require.NoError(t, h.srv.Stop(ctx))
	require.Zero(t, h.srv.Running(), "Stop returned after the serving goroutine")
}
