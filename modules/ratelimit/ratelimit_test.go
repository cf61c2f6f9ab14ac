package ratelimit_test

import (
	"crypto/sha256"
	"encoding/hex"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/ratelimit"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

func newLimiter(t *testing.T, rdb redis.UniversalClient, prefix string) (*ratelimit.Limiter, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	l, err := ratelimit.New(ratelimit.Options{Redis: rdb, KeyPrefix: prefix + "ratelimit:", Key: []byte("test-key"), Scopes: []string{"intake", "auth"}, Registerer: reg, Logger: testkit.Logger(t)})
	require.NoError(t, err)
	return l, reg
}

func counter(t *testing.T, reg *prometheus.Registry, name, scope string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
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

// Two limiters on one Redis (two serve replicas) spend one budget: Burst
// events at once, then 429s with a Retry-After of about one interval.
func TestBurstThenRefusedAcrossReplicas(t *testing.T) {
	t.Parallel()
	rdb, prefix := testkit.Redis(t)
	a, regA := newLimiter(t, rdb, prefix)
	b, _ := newLimiter(t, rdb, prefix)
	rule := ratelimit.Rule{Rate: 2, Period: time.Minute, Burst: 3}
	var got []bool
	for i := range 5 {
		l := a
		if i%2 == 1 {
			l = b
		}
		got = append(got, l.Allow(t.Context(), "intake", "crm", rule).Allowed)
	}
	require.Equal(t, []bool{true, true, true, false, false}, got)
	d := a.Allow(t.Context(), "intake", "crm", rule)
	require.False(t, d.Allowed)
	require.Greater(t, d.RetryAfter, 20*time.Second, "one event per 30s")
	require.LessOrEqual(t, d.RetryAfter, 30*time.Second)
	require.Equal(t, 30, d.RetryAfterSeconds())
	require.Equal(t, 2.0, counter(t, regA, "gdpr_rate_limited_total", "intake"), "replica a refused two")
	// Another key has its own budget; an off rule limits nothing.
	require.True(t, a.Allow(t.Context(), "intake", "shop", rule).Allowed)
	for range 10 {
		require.True(t, a.Allow(t.Context(), "intake", "crm", ratelimit.Rule{}).Allowed)
	}
}

// Blocked spends nothing, and says "blocked" exactly when Allow would refuse.
func TestBlockedPeeksWithoutSpending(t *testing.T) {
	t.Parallel()
	rdb, prefix := testkit.Redis(t)
	l, reg := newLimiter(t, rdb, prefix)
	rule := ratelimit.Rule{Rate: 1, Period: time.Minute, Burst: 2}
	for range 10 {
		require.True(t, l.Blocked(t.Context(), "auth", "192.0.2.1", rule).Allowed)
	}
	require.True(t, l.Allow(t.Context(), "auth", "192.0.2.1", rule).Allowed)
	require.True(t, l.Blocked(t.Context(), "auth", "192.0.2.1", rule).Allowed, "one left")
	require.True(t, l.Allow(t.Context(), "auth", "192.0.2.1", rule).Allowed)
	d := l.Blocked(t.Context(), "auth", "192.0.2.1", rule)
	require.False(t, d.Allowed)
	require.Greater(t, d.RetryAfter, 50*time.Second)
	require.LessOrEqual(t, d.RetryAfter, time.Minute)
	require.False(t, l.Allow(t.Context(), "auth", "192.0.2.1", rule).Allowed)
	require.Equal(t, 2.0, counter(t, reg, "gdpr_rate_limited_total", "auth"))
	// The address is not in Redis, only its digest.
	keys, err := rdb.Keys(t.Context(), "*"+prefix+"*").Result()
	require.NoError(t, err)
	require.NotEmpty(t, keys)
	plain := sha256.Sum256([]byte("192.0.2.1"))
	for _, k := range keys {
		require.NotContains(t, k, "192.0.2.1")
		// Nor its plain hash, which hashing every IPv4 address undoes.
		require.NotContains(t, k, hex.EncodeToString(plain[:16]))
	}
}

// Redis down: every check lets its event through (fail open, see the
// package comment) and is counted, never silently.
func TestRedisDownFailsOpenAndCounts(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = rdb.Close() })
	l, reg := newLimiter(t, rdb, "down:")
	rule := ratelimit.Rule{Rate: 1, Period: time.Minute, Burst: 1}
	for range 3 {
		require.True(t, l.Allow(t.Context(), "intake", "crm", rule).Allowed)
		require.True(t, l.Blocked(t.Context(), "auth", "crm", rule).Allowed)
	}
	require.Equal(t, 3.0, counter(t, reg, "gdpr_rate_limit_errors_total", "intake"))
	require.Equal(t, 3.0, counter(t, reg, "gdpr_rate_limit_errors_total", "auth"))
	require.Equal(t, 0.0, counter(t, reg, "gdpr_rate_limited_total", "intake"))
}

func TestRuleValidateNamesTheSetting(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		rule ratelimit.Rule
		want string
	}{
		{ratelimit.Rule{Rate: -1}, "serve.x.rate must be >= 0"},
		{ratelimit.Rule{Rate: 1, Period: time.Millisecond, Burst: 1}, "serve.x.period must be >= 1s"},
		{ratelimit.Rule{Rate: 1, Period: time.Second}, "serve.x.burst must be >= 1"},
	} {
		require.ErrorContains(t, tc.rule.Validate("serve.x"), tc.want)
	}
	require.NoError(t, ratelimit.Rule{}.Validate("serve.x"), "off")
	require.NoError(t, ratelimit.Rule{Rate: 1, Period: time.Second, Burst: 1}.Validate("serve.x"))
}

// Only a trusted proxy's X-Forwarded-For is believed; a client that forges
// one keeps its own address.
func TestClientAddrBelievesOnlyTrustedProxies(t *testing.T) {
	t.Parallel()
	p, err := ratelimit.ParseProxies("serve.trusted_proxies", []string{"10.0.0.0/8", "192.0.2.7", "2001:db8::/32"})
	require.NoError(t, err)
	for _, tc := range []struct {
		name, peer string
		xff        []string
		want       string
	}{
		{"no proxy, no header", "198.51.100.9:5000", nil, "198.51.100.9"},
		{"untrusted peer forges a header", "198.51.100.9:5000", []string{"203.0.113.1"}, "198.51.100.9"},
		{"untrusted peer forges a trusted-looking chain", "198.51.100.9:5000", []string{"203.0.113.1, 10.0.0.1"}, "198.51.100.9"},
		{"trusted proxy", "10.1.2.3:443", []string{"203.0.113.1"}, "203.0.113.1"},
		{"client's forged hop before the real one", "10.1.2.3:443", []string{"1.1.1.1, 203.0.113.1"}, "203.0.113.1"},
		{"two trusted proxies", "10.1.2.3:443", []string{"203.0.113.1, 192.0.2.7"}, "203.0.113.1"},
		{"headers split across lines", "10.1.2.3:443", []string{"1.1.1.1", "203.0.113.1"}, "203.0.113.1"},
		{"trusted proxy, empty header", "10.1.2.3:443", []string{""}, "10.1.2.3"},
		{"trusted proxy, garbage hop", "10.1.2.3:443", []string{"203.0.113.1, not-an-ip"}, "10.1.2.3"},
		{"only trusted hops", "10.1.2.3:443", []string{"10.9.9.9"}, "10.9.9.9"},
		{"IPv4-mapped peer", "[::ffff:10.1.2.3]:443", []string{"203.0.113.1"}, "203.0.113.1"},
		{"IPv6 proxy", "[2001:db8::1]:443", []string{"2001:db8:ffff::1, 2a00::5"}, "2a00::5"},
	} {
		require.Equal(t, tc.want, p.ClientAddr(tc.peer, tc.xff), tc.name)
	}
	for _, bad := range [][]string{{"0.0.0.0/0"}, {"::/0"}, {"10.0.0.0/33"}, {"proxy.internal"}, {""}} {
		_, err := ratelimit.ParseProxies("serve.trusted_proxies", bad)
		require.ErrorContains(t, err, "serve.trusted_proxies[0]", "%q", bad)
	}
	none, err := ratelimit.ParseProxies("serve.trusted_proxies", nil)
	require.NoError(t, err)
	require.Equal(t, "10.1.2.3", none.ClientAddr("10.1.2.3:443", []string{strings.Repeat("203.0.113.1,", 3)}))
}
