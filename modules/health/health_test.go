package health_test

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/health"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

func TestAdminServerFailureAfterStartIsReported(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := health.NewServer("", nil, prometheus.NewRegistry(), testkit.Logger(t))
	require.NoError(t, s.Serve(t.Context(), ln))
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	resp, err := http.Get("http://" + s.Addr() + "/healthz")
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusOK, resp.StatusCode)

	require.NoError(t, ln.Close())
	select {
	case err := <-s.Failed():
		require.ErrorContains(t, err, "admin server on "+ln.Addr().String())
		require.ErrorIs(t, err, net.ErrClosed)
	case <-time.After(10 * time.Second):
		t.Fatal("the failure was not reported")
	}
}

func TestAdminServerStopWaitsForItsGoroutine(t *testing.T) {
	t.Parallel()
	s := health.NewServer("127.0.0.1:0", nil, prometheus.NewRegistry(), testkit.Logger(t))
	require.NoError(t, s.Start(t.Context()))
	require.Equal(t, 1, s.Running())
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	require.NoError(t, s.Stop(ctx))
	require.Zero(t, s.Running(), "Stop returned after the serving goroutine")
	require.NoError(t, s.Stop(ctx), "stopping twice is harmless")
}
