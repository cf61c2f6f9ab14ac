// Package ratelimit limits how often a client, or a client address, may do
// something, with shared state in Redis so that every serve replica counts
// against the same budget. It is GCRA (github.com/go-redis/redis_rate):
// a rule of Rate events per Period with a Burst allows Burst at once and
// then one every Period/Rate.
//
// When Redis does not answer, the limiter lets the event through (fail
// open), counts gdpr_rate_limit_errors_total and logs a warning: the limits
// protect capacity, not secrets (API tokens are 256-bit random values and
// download links are HMACs, which no rate of guessing finds), so a Redis
// outage must not also take down report downloads, which otherwise need no
// Redis. The alert GDPRRateLimiterFailingOpen says when it happens.
package ratelimit

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// Rule is one limit: Rate events per Period, Burst of them at once. A zero
// Rate turns the limit off.
type Rule struct {
	// Rate is how many events each Period allows; 0 turns the limit off.
	Rate int `yaml:"rate"`
	// Period is the interval Rate is counted over.
	Period time.Duration `yaml:"period"`
	// Burst is how many events may come at once before the rate applies.
	Burst int `yaml:"burst"`
}

// Off reports whether the rule limits nothing.
func (r Rule) Off() bool { return r.Rate == 0 }

// Validate names setting in its error.
func (r Rule) Validate(setting string) error {
	switch {
	case r.Rate < 0:
		return fmt.Errorf("%s.rate must be >= 0 (0 turns the limit off), got %d", setting, r.Rate)
	case r.Off():
		return nil
	case r.Period < time.Second:
		return fmt.Errorf("%s.period must be >= 1s, got %s", setting, r.Period)
	case r.Burst < 1:
		return fmt.Errorf("%s.burst must be >= 1, got %d", setting, r.Burst)
	}
	return nil
}

// Decision is the limiter's answer for one event.
type Decision struct {
	// Allowed is false when the event is over the limit.
	Allowed bool
	// RetryAfter is, when not allowed, how long until one more event is.
	RetryAfter time.Duration
}

// RetryAfterSeconds is RetryAfter rounded up to whole seconds, at least 1
// (the Retry-After header's unit).
func (d Decision) RetryAfterSeconds() int {
	s := int((d.RetryAfter + time.Second - 1) / time.Second)
	return max(1, s)
}

// Options configure a Limiter. Redis and Logger are required.
type Options struct {
	Redis redis.UniversalClient
	// KeyPrefix starts every key's name after the library's own "rate:".
	KeyPrefix string
	// Key keys the HMAC that names a counted value (an address, a client)
	// in Redis. A plain hash of an IPv4 address is undone by hashing all
	// 2^32 of them; replicas share the key so that they share counters.
	Key []byte
	// Scopes are the scope names the caller uses; their metric series exist
	// from the start (a scope not listed is counted as "other").
	Scopes []string
	// Timeout bounds one check (default 250ms): a Redis that does not
	// answer delays a request by at most this before it goes through.
	Timeout    time.Duration
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// Limiter checks events against rules in Redis. It is safe for concurrent use.
type Limiter struct {
	rl      *redis_rate.Limiter
	prefix  string
	macKey  []byte
	timeout time.Duration
	scopes  map[string]bool
	limited *prometheus.CounterVec
	errors  *prometheus.CounterVec
	logger  *slog.Logger
}

// New builds a Limiter and registers its metrics.
func New(o Options) (*Limiter, error) {
	if o.Redis == nil || o.Logger == nil || len(o.Key) == 0 {
		return nil, errors.New("ratelimit: Redis, Key and Logger are required")
	}
	if o.Registerer == nil {
		o.Registerer = prometheus.NewRegistry()
	}
	if o.Timeout <= 0 {
		o.Timeout = 250 * time.Millisecond
	}
	l := &Limiter{
		timeout: o.Timeout,
		rl:      redis_rate.NewLimiter(o.Redis),
		prefix:  o.KeyPrefix,
		macKey:  o.Key,
		scopes:  map[string]bool{},
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gdpr_rate_limited_total",
			Help: "Requests refused with 429 by a rate limit, by scope.",
		}, []string{"scope"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gdpr_rate_limit_errors_total",
			Help: "Rate limit checks Redis did not answer, by scope; each let its request through (fail open).",
		}, []string{"scope"}),
		logger: o.Logger,
	}
	for _, c := range []prometheus.Collector{l.limited, l.errors} {
		if err := o.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("registering rate limit metrics: %w", err)
		}
	}
	for _, s := range o.Scopes {
		l.scopes[s] = true
		l.limited.WithLabelValues(s)
		l.errors.WithLabelValues(s)
	}
	return l, nil
}

// Allow spends one event of key (a client name, an address) under rule.
// Keys are hashed: an address is personal data and stays out of Redis.
func (l *Limiter) Allow(ctx context.Context, scope, key string, rule Rule) Decision {
	return l.spend(ctx, scope, key, rule, 1)
}

// Blocked is Allow without spending: whether the next event of key would be
// refused. A caller that counts only failures (wrong tokens) asks it first,
// so that a blocked client learns nothing from a right guess either.
func (l *Limiter) Blocked(ctx context.Context, scope, key string, rule Rule) Decision {
	return l.spend(ctx, scope, key, rule, 0)
}

func (l *Limiter) spend(ctx context.Context, scope, key string, rule Rule, n int) Decision {
	if l == nil || rule.Off() {
		return Decision{Allowed: true}
	}
	lim := redis_rate.Limit{Rate: rule.Rate, Period: rule.Period, Burst: rule.Burst}
	checkCtx, cancel := context.WithTimeout(ctx, l.timeout)
	res, err := l.rl.AllowN(checkCtx, l.key(scope, key), lim, n)
	cancel()
	if err != nil {
		l.errors.WithLabelValues(l.label(scope)).Inc()
		l.logger.WarnContext(ctx, "rate limit check failed; letting the request through", "scope", scope, "error", err)
		return Decision{Allowed: true}
	}
	d := Decision{Allowed: true}
	switch {
	case n > 0 && res.Allowed < n:
		d = Decision{RetryAfter: res.RetryAfter}
	case n == 0 && res.Remaining < 1:
		// A peek computes no retry time; the next event fits once the
		// theoretical arrival time is within Burst-1 intervals of now.
		interval := rule.Period / time.Duration(rule.Rate)
		d = Decision{RetryAfter: res.ResetAfter - time.Duration(rule.Burst-1)*interval}
	}
	if !d.Allowed {
		d.RetryAfter = max(d.RetryAfter, time.Millisecond)
		l.limited.WithLabelValues(l.label(scope)).Inc()
	}
	return d
}

func (l *Limiter) key(scope, key string) string {
	h := hmac.New(sha256.New, l.macKey)
	h.Write([]byte("gdpr-ratelimit-v1\n" + scope + "\n" + key))
	return l.prefix + scope + ":" + hex.EncodeToString(h.Sum(nil)[:16])
}

func (l *Limiter) label(scope string) string {
	if l.scopes[scope] {
		return scope
	}
	return "other"
}
