package health_test

import (
	"bytes"
	"context"
	"io"
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

func TestProfilesAreServedOnlyWhenAsked(t *testing.T) {
	t.Parallel()
	get := func(t *testing.T, s *health.Server, path string) (int, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+s.Addr()+path, nil)
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, body
	}
	start := func(t *testing.T, profiles bool) *health.Server {
		t.Helper()
		s := health.NewServer("127.0.0.1:0", nil, prometheus.NewRegistry(), testkit.Logger(t))
		if profiles {
			s.ServeProfiles()
		}
		require.NoError(t, s.Start(t.Context()))
		t.Cleanup(func() { _ = s.Stop(context.Background()) })
		return s
	}

	off := start(t, false)
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/profile?seconds=1", "/debug/pprof/heap"} {
		code, _ := get(t, off, path)
		require.Equal(t, http.StatusNotFound, code, path)
	}

	on := start(t, true)
	code, body := get(t, on, "/debug/pprof/profile?seconds=1")
	require.Equal(t, http.StatusOK, code)
	// A CPU profile is a gzipped protocol buffer.
	require.True(t, bytes.HasPrefix(body, []byte{0x1f, 0x8b}), "profile starts with % x", body[:min(len(body), 8)])
	code, body = get(t, on, "/debug/pprof/heap")
	require.Equal(t, http.StatusOK, code)
	require.True(t, bytes.HasPrefix(body, []byte{0x1f, 0x8b}))
	code, _ = get(t, on, "/debug/pprof/cmdline")
	require.Equal(t, http.StatusNotFound, code, "the command line is not published")
	code, _ = get(t, on, "/healthz")
	require.Equal(t, http.StatusOK, code)
}
