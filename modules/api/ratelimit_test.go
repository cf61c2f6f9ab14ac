package api_test

import (
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/api"
	"github.com/gdpr-oss/gdpr/modules/download"
	"github.com/gdpr-oss/gdpr/modules/intake"
	"github.com/gdpr-oss/gdpr/modules/ratelimit"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

func (h *harness) limited(scope string) float64 {
	h.t.Helper()
	mfs, err := h.reg.Gather()
	require.NoError(h.t, err)
	for _, mf := range mfs {
		if mf.GetName() != "gdpr_rate_limited_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == scope {
				return m.GetCounter().GetValue()
			}
		}
	}
	return -1
}

func requireTooMany(t *testing.T, res response) {
	t.Helper()
	require.Equal(t, http.StatusTooManyRequests, res.status, "%s", res.body)
	require.Equal(t, "rate_limited", res.json(t)["error"])
	secs, err := strconv.Atoi(res.header.Get("Retry-After"))
	require.NoError(t, err, "Retry-After is whole seconds")
	require.GreaterOrEqual(t, secs, 1)
}

// Each client has its own submission budget; a refused submission is not
// published (#11 item 7).
func TestIntakeIsLimitedPerClient(t *testing.T) {
	t.Parallel()
	crm := "crm-" + testkit.ID()
	h := newHarness(t, harnessOptions{
		clients:    []intake.NamedToken{{Name: "crm", TokenSHA256: digest(crm)}},
		rateLimits: api.RateLimits{IntakePerClient: ratelimit.Rule{Rate: 1, Period: time.Minute, Burst: 3}},
	})
	post := func(tok string) response {
		return h.do(h.request(http.MethodPost, "/v1/requests", strings.NewReader(accessBody), "Content-Type", "application/json", "Authorization", "Bearer "+tok))
	}
	for range 3 {
		require.Equal(t, http.StatusAccepted, post(crm).status)
	}
	requireTooMany(t, post(crm))
	requireTooMany(t, post(crm))
	require.Equal(t, http.StatusAccepted, post(h.token).status, "another client's budget is its own")
	require.Len(t, h.take(), 4, "refused submissions publish nothing")
	require.Equal(t, 2.0, h.limited(api.ScopeIntake))
}

// Failed authentications are limited per address; once over, the address
// gets 429 for a right token as well (no oracle), and an X-Forwarded-For
// from a peer that is no trusted proxy changes nothing.
func TestAuthFailuresAreLimitedPerAddressAndForgedForwardedForIsIgnored(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{
		rateLimits: api.RateLimits{AuthFailuresPerAddress: ratelimit.Rule{Rate: 1, Period: time.Minute, Burst: 3}},
	})
	get := func(tok, xff string) response {
		hs := []string{"Authorization", "Bearer " + tok}
		if xff != "" {
			hs = append(hs, "X-Forwarded-For", xff)
		}
		return h.do(h.request(http.MethodGet, "/v1/requests/0193a5c2-7e0b-7c4d-8f00-000000000001", nil, hs...))
	}
	require.Equal(t, http.StatusNotFound, get(h.token, "").status, "a right token spends nothing")
	for i := range 3 {
		require.Equal(t, http.StatusUnauthorized, get("wrong", "203.0.113."+strconv.Itoa(i)).status)
	}
	requireTooMany(t, get("wrong", "203.0.113.99"))
	requireTooMany(t, get(h.token, ""))
	requireTooMany(t, get(h.token, "198.51.100.1"))
	empty := h.do(h.request(http.MethodPost, "/v1/requests", strings.NewReader(accessBody), "Content-Type", "application/json"))
	requireTooMany(t, empty)
	require.Equal(t, 4.0, h.limited(api.ScopeAuthFailure))
}

// Behind a trusted proxy each client address has its own budget, and a
// hop the client wrote itself in front of the proxy's does not count.
func TestTrustedProxyForwardedForNamesTheAddress(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{
		trustedProxies: []string{"127.0.0.1"},
		rateLimits:     api.RateLimits{AuthFailuresPerAddress: ratelimit.Rule{Rate: 1, Period: time.Minute, Burst: 2}},
	})
	get := func(xff ...string) response {
		req := h.request(http.MethodGet, "/v1/requests/0193a5c2-7e0b-7c4d-8f00-000000000001", nil, "Authorization", "Bearer wrong")
		for _, v := range xff {
			req.Header.Add("X-Forwarded-For", v)
		}
		return h.do(req)
	}
	require.Equal(t, http.StatusUnauthorized, get("203.0.113.5").status)
	require.Equal(t, http.StatusUnauthorized, get("203.0.113.5").status)
	requireTooMany(t, get("203.0.113.5"))
	// The client forges a first hop; the proxy appended the real one.
	requireTooMany(t, get("198.51.100.77, 203.0.113.5"))
	requireTooMany(t, get("198.51.100.77", "203.0.113.5"))
	require.Equal(t, http.StatusUnauthorized, get("203.0.113.6").status, "another address has its own budget")
}

// Downloads are limited per address, good links or bad.
func TestDownloadsAreLimitedPerAddress(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{
		rateLimits: api.RateLimits{DownloadsPerAddress: ratelimit.Rule{Rate: 1, Period: time.Minute, Burst: 3}},
	})
	id := storedReport(t, h)
	good := strings.TrimPrefix(download.URL("https://x.example", h.key, id, time.Hour, time.Now()), "https://x.example")
	require.Equal(t, http.StatusOK, h.do(h.request(http.MethodGet, good, nil)).status)
	for range 2 {
		require.Equal(t, http.StatusForbidden, h.do(h.request(http.MethodGet, "/v1/requests/"+id+"/report?token=1.AAAA", nil)).status)
	}
	requireTooMany(t, h.do(h.request(http.MethodGet, good, nil)))
	require.Equal(t, 1.0, h.limited(api.ScopeDownload))
}

// Redis down: the limiter lets requests through (fail open) and counts
// it; submissions need Redis anyway (503), downloads do not (200).
func TestRateLimiterFailsOpenWhenRedisIsDown(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := ln.Addr().String()
	require.NoError(t, ln.Close())
	down := redis.NewClient(&redis.Options{Addr: dead, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = down.Close() })
	h := newHarness(t, harnessOptions{
		limiterRedis: down,
		rateLimits: api.RateLimits{
			IntakePerClient:        ratelimit.Rule{Rate: 1, Period: time.Minute, Burst: 1},
			AuthFailuresPerAddress: ratelimit.Rule{Rate: 1, Period: time.Minute, Burst: 1},
			DownloadsPerAddress:    ratelimit.Rule{Rate: 1, Period: time.Minute, Burst: 1},
		},
	})
	id := storedReport(t, h)
	good := strings.TrimPrefix(download.URL("https://x.example", h.key, id, time.Hour, time.Now()), "https://x.example")
	for range 3 {
		require.Equal(t, http.StatusAccepted, h.submit(accessBody).status)
		require.Equal(t, http.StatusOK, h.do(h.request(http.MethodGet, good, nil)).status)
		require.Equal(t, http.StatusUnauthorized, h.do(h.request(http.MethodGet, "/v1/requests/"+id, nil, "Authorization", "Bearer wrong")).status)
	}
	mfs, err := h.reg.Gather()
	require.NoError(t, err)
	var errs float64
	for _, mf := range mfs {
		if mf.GetName() == "gdpr_rate_limit_errors_total" {
			for _, m := range mf.GetMetric() {
				errs += m.GetCounter().GetValue()
			}
		}
	}
	require.Equal(t, 15.0, errs, "3 x (submit: auth peek + intake; download; wrong token: auth peek + spend)")
	require.Equal(t, 0.0, h.limited(api.ScopeIntake))
}

// storedReport stores a completed access request with a report.
func storedReport(t *testing.T, h *harness) string {
	t.Helper()
	id := "0193a5c2-7e0b-7c4d-8f00-" + testkit.ID()[:12]
	now := time.Now().UTC()
	require.NoError(t, h.db.Exec(`INSERT INTO requests (id, type, state, submitted_at, due_at, completed_at) VALUES (?, 'access', 'completed', ?, ?, ?)`,
		id, now, intake.DueAt(now), now).Error)
	rep := "0193a5c2-7e0b-7c4d-8f01-" + testkit.ID()[:12]
	require.NoError(t, h.db.Exec(`INSERT INTO reports (id, request_id, bytes, sha256) VALUES (?, ?, 1, 'x')`, rep, id).Error)
	h.reports.add(t, rep)
	return id
}
