package api_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/health"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// floodConn is one hostile connection: it sends head, then trickles one
// byte of trickle every tick until ctx ends, and records when the server
// answered (and with what status line) and when it closed the connection.
type floodConn struct {
	mu         sync.Mutex
	statusLine string
	answered   time.Duration
	closed     time.Duration
}

func (fc *floodConn) get() (statusLine string, answered, closed time.Duration) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return fc.statusLine, fc.answered, fc.closed
}

func flood(ctx context.Context, t *testing.T, addr, head, trickle string, n int) []*floodConn {
	t.Helper()
	out := make([]*floodConn, n)
	var wg sync.WaitGroup
	for i := range out {
		fc := &floodConn{answered: -1, closed: -1}
		out[i] = fc
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		require.NoError(t, err)
		begin := time.Now()
		wg.Add(2)
		go func() {
			defer wg.Done()
			defer conn.Close()
			if _, err := conn.Write([]byte(head)); err != nil {
				return
			}
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for j := 0; ; j++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				if _, err := conn.Write([]byte{trickle[j%len(trickle)]}); err != nil {
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			r := bufio.NewReader(conn)
			line, err := r.ReadString('\n')
			if err == nil {
				fc.mu.Lock()
				fc.statusLine = strings.TrimSpace(line)
				fc.answered = time.Since(begin)
				fc.mu.Unlock()
			}
			for err == nil {
				_, err = r.ReadByte()
			}
			fc.mu.Lock()
			fc.closed = time.Since(begin)
			fc.mu.Unlock()
		}()
	}
	t.Cleanup(wg.Wait)
	return out
}

// A flood of connections that never finish a request (headers of a POST
// without a token, then its body one byte at a time; or headers one byte
// at a time) neither keeps its connections nor keeps legitimate callers,
// with a token, and /readyz from being answered: the 401 comes before the
// body is read and closes the connection, timeouts free the rest, and the
// connection cap keeps the descriptors bounded.
func TestSlowBodyFloodLeavesTheAPIAndReadyzAnswering(t *testing.T) {
	t.Parallel()
	limits := health.Limits{
		ReadHeaderTimeout: time.Second,
		ReadTimeout:       3 * time.Second,
		WriteTimeout:      5 * time.Second,
		IdleTimeout:       5 * time.Second,
		MaxConns:          128,
	}
	h := newHarness(t, harnessOptions{limits: limits, noValidation: true, discardLogs: true})
	admin := health.NewServer("127.0.0.1:0", nil, prometheus.NewRegistry(), testkit.Logger(t))
	admin.SetLimits(limits)
	require.NoError(t, admin.Start(t.Context()))
	admin.MarkReady()
	t.Cleanup(func() { _ = admin.Stop(context.Background()) })

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	apiAddr := strings.TrimPrefix(h.base, "http://")
	// More slow bodies than the cap, so some wait for a slot; slow headers
	// hold theirs until the header timeout.
	bodies := flood(ctx, t, apiAddr, "POST /v1/requests HTTP/1.1\r\nHost: gdpr\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{", "x", 250)
	wrongToken := flood(ctx, t, apiAddr, "POST /v1/requests HTTP/1.1\r\nHost: gdpr\r\nAuthorization: Bearer wrong\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{", "x", 50)
	headers := flood(ctx, t, apiAddr, "POST /v1/requests HTTP/1.1\r\nHost: gdpr\r\n", "X-Slow: a\r\n", 50)
	adminHeaders := flood(ctx, t, admin.Addr(), "GET /readyz HTTP/1.1\r\nHost: gdpr\r\n", "X-Slow: a\r\n", 200)

	// Every legitimate call opens a connection of its own, so it must get
	// one of the capped slots while the flood goes on.
	transport := &http.Transport{DisableKeepAlives: true}
	t.Cleanup(transport.CloseIdleConnections)
	client := &http.Client{Transport: transport, Timeout: 15 * time.Second}
	var slowest time.Duration
	for i := range 10 {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, h.base+"/v1/requests",
			strings.NewReader(fmt.Sprintf(`{"type":"access","subject":{"id":"flood-%d"}}`, i)))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+h.token)
		begin := time.Now()
		res, err := client.Do(req)
		require.NoError(t, err, "legitimate submission %d during the flood", i)
		require.NoError(t, res.Body.Close())
		require.Equal(t, http.StatusAccepted, res.StatusCode)
		slowest = max(slowest, time.Since(begin))

		req, err = http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+admin.Addr()+"/readyz", nil)
		require.NoError(t, err)
		res, err = client.Do(req)
		require.NoError(t, err, "/readyz during the flood")
		require.NoError(t, res.Body.Close())
		require.Equal(t, http.StatusOK, res.StatusCode)
	}
	t.Logf("slowest legitimate submission during the flood: %s", slowest)
	// Past the cap a connection waits for a slot: at most about one header
	// timeout plus the close of the slow bodies ahead of it, never until
	// the flood ends.
	require.Less(t, slowest, 5*time.Second)
	<-ctx.Done()
	cancel()

	var lastAnswer time.Duration
	for _, fc := range append(bodies, wrongToken...) {
		_, answered, _ := fc.get()
		lastAnswer = max(lastAnswer, answered)
	}
	t.Logf("last 401 of a slow body after %s", lastAnswer)
	for i, fc := range append(bodies, wrongToken...) {
		line, answered, _ := fc.get()
		require.Equal(t, "HTTP/1.1 401 Unauthorized", line, "slow body %d was not answered before its body came", i)
		// Before the read timeout (3s) would have ended a drain of the body.
		require.Less(t, answered, 2500*time.Millisecond, "slow body %d: answered only after its body", i)
	}
	testkit.Eventually(t, 5*time.Second, func() bool {
		for _, fc := range append(bodies, wrongToken...) {
			if _, _, closed := fc.get(); closed < 0 || closed > 5*time.Second {
				return false
			}
		}
		return true
	}, "the server closed every slow body's connection after its 401")
	for i, fc := range append(headers, adminHeaders...) {
		// Dropped at the header timeout, not held until the client gave up.
		_, _, closed := fc.get()
		require.True(t, closed >= 0 && closed < 7*time.Second, "slow headers %d closed after %s", i, closed)
	}
}

// A request refused before its body is read (no token, a wrong one, an
// unknown route) is answered at once and its connection closed, however
// slowly the body comes: net/http would otherwise read the body first, for
// up to the read timeout, before sending the answer.
func TestRefusalsAreAnsweredBeforeTheBody(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{limits: health.Limits{ReadTimeout: time.Minute}, noValidation: true, discardLogs: true})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	addr := strings.TrimPrefix(h.base, "http://")
	cases := map[string]string{
		"no token":      "POST /v1/requests HTTP/1.1\r\nHost: gdpr\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{",
		"wrong token":   "POST /v1/requests HTTP/1.1\r\nHost: gdpr\r\nAuthorization: Bearer wrong\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{",
		"unknown route": "POST /v1/nothing HTTP/1.1\r\nHost: gdpr\r\nContent-Length: 100000\r\n\r\n{",
		"media type":    "POST /v1/requests HTTP/1.1\r\nHost: gdpr\r\nAuthorization: Bearer " + h.token + "\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\n{",
	}
	conns := map[string]*floodConn{}
	for name, head := range cases {
		conns[name] = flood(ctx, t, addr, head, "x", 1)[0]
	}
	for name, fc := range conns {
		testkit.Eventually(t, 10*time.Second, func() bool { _, _, closed := fc.get(); return closed >= 0 }, "%s: connection closed after the answer", name)
		line, answered, _ := fc.get()
		require.NotEmpty(t, line, name)
		require.NotContains(t, line, " 2", name)
		require.Less(t, answered, 5*time.Second, "%s: answered only after reading the body", name)
	}
	cancel()
}
