// Package relay publishes the messages a PostgreSQL table holds once they
// are due, each with a broker confirm, and moves the confirmed ones to the
// table's sent history in the transaction that claimed them. A crash before
// that commit leaves the rows pending, so they are published again with the
// same message id (consumers deduplicate on it); nothing is lost.
//
// Two tables use it: the outbox (modules/outbox: messages written in the
// transaction of the effect that causes them, due at once, relayed by the
// role that wrote them) and delayed messages (modules/scheduler). Each
// worker loops claim, publish, commit; in between it sleeps until the
// earliest row is due, woken sooner by the table's NOTIFY trigger
// (migrations/020_scheduler.sql, 021_scheduler_wakeup.sql, 022_outbox.sql
// say why no wake-up is lost).
package relay

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gdpr-oss/gdpr/modules/lifecycle"
	"github.com/gdpr-oss/gdpr/modules/message"
)

// Table names a message table and its wake-up trigger. The table has the
// columns of scheduled_messages (migrations/020_scheduler.sql), its history
// those of scheduled_messages_sent.
type Table struct {
	// Name holds the pending messages, Sent the history of published ones.
	Name, Sent string
	// Channel is the PostgreSQL channel the table's triggers notify on.
	Channel string
	// SkippedNotifyLock is the advisory lock (two int4 keys, "k1, k2") that
	// a transaction whose trigger skipped the NOTIFY holds in share mode
	// until it ends (see migrations/021_scheduler_wakeup.sql).
	SkippedNotifyLock string
}

// Publisher publishes one message to a named exchange and returns nil only
// once the broker confirmed it. Calls from many goroutines are pipelined.
type Publisher interface {
	PublishTo(ctx context.Context, exchange string, m message.Message) error
}

// ExchangeChecker tells whether an exchange exists on the broker.
type ExchangeChecker interface {
	ExchangeExists(ctx context.Context, name string) (bool, error)
}

// Options tunes a Relay; zero values take the defaults below.
type Options struct {
	// MainExchange replaces an entry's empty exchange.
	MainExchange    string
	BatchSize       int
	Workers         int
	MaxIdle         time.Duration
	Retention       time.Duration
	PruneInterval   time.Duration
	MetricsInterval time.Duration
	RetryBackoff    time.Duration
	// Refused tells a publish error the broker will give again for this
	// message (unroutable, nacked: the row is postponed with a backoff) from
	// an unknown outcome (the broker is away: the batch is tried again
	// soon). Nil counts only a missing exchange as refused.
	Refused func(error) bool
}

// DefaultOptions are the relay's tuning when nothing is set; the owners'
// Configs (outbox, scheduler) start from them, so each number is written once.
func DefaultOptions() Options {
	return Options{
		BatchSize:       500,
		Workers:         3,
		MaxIdle:         5 * time.Second,
		Retention:       7 * 24 * time.Hour,
		PruneInterval:   time.Minute,
		MetricsInterval: 10 * time.Second,
		RetryBackoff:    time.Second,
	}
}

func (o *Options) defaults() {
	d := DefaultOptions()
	if o.BatchSize < 1 {
		o.BatchSize = d.BatchSize
	}
	if o.Workers < 1 {
		o.Workers = d.Workers
	}
	if o.MaxIdle <= 0 {
		o.MaxIdle = d.MaxIdle
	}
	if o.Retention <= 0 {
		o.Retention = d.Retention
	}
	if o.PruneInterval <= 0 {
		o.PruneInterval = d.PruneInterval
	}
	if o.MetricsInterval <= 0 {
		o.MetricsInterval = d.MetricsInterval
	}
	if o.RetryBackoff <= 0 {
		o.RetryBackoff = d.RetryBackoff
	}
}

// Metrics are the series a Relay records; the table's owner names and
// registers them. Nil fields (or a nil *Metrics) record nothing.
type Metrics struct {
	// Published counts messages confirmed and marked sent; Refused the
	// publishes the broker refused (retried after a backoff).
	Published, Refused prometheus.Counter
	// Lateness observes confirm time minus due time.
	Lateness prometheus.Observer
	// Pending, Due and OldestOverdue are refreshed every MetricsInterval.
	Pending, Due, OldestOverdue prometheus.Gauge
}

// While a writer that skipped its NOTIFY may be uncommitted, a look at the
// table may miss its row, so the next look comes after minRecheck, doubling
// up to maxRecheck while that lasts: a row is then at most maxRecheck late
// after its commit, and a long transaction costs a few cheap reads.
const (
	minRecheck = 5 * time.Millisecond
	maxRecheck = 50 * time.Millisecond
)

// maxRetryBackoff caps the delay before a refused message is tried again.
const maxRetryBackoff = 10 * time.Minute

// Relay publishes due messages of one table. Each of its workers loops:
// claim a batch of due rows (FOR UPDATE SKIP LOCKED, so any number of
// relays in any number of processes share the table), publish them all with
// confirms in flight together, then, in the claim's transaction, move the
// confirmed ones to the sent history.
type Relay struct {
	name      string
	table     Table
	sql       queries
	dsn       string
	pub       Publisher
	exchanges ExchangeChecker
	opts      Options
	metrics   Metrics
	logger    *slog.Logger

	pool *pgxpool.Pool
	wake *waker
	stop <-chan struct{} // closed when Stop is called
	life lifecycle.Runner
}

// New returns a relay named name (in logs) over table in the database at
// dsn; nothing runs until Start. It opens its own small pool plus one
// connection for LISTEN. metrics may be nil.
func New(name string, table Table, dsn string, pub Publisher, exchanges ExchangeChecker, opts Options, metrics *Metrics, logger *slog.Logger) *Relay {
	opts.defaults()
	r := &Relay{
		name:      name,
		table:     table,
		sql:       table.queries(),
		dsn:       dsn,
		pub:       pub,
		exchanges: exchanges,
		opts:      opts,
		logger:    logger.With("component", name),
	}
	if metrics != nil {
		r.metrics = *metrics
	}
	return r
}

// Name identifies the component in logs.
func (r *Relay) Name() string { return r.name }

// Start connects and starts the workers, the listener and housekeeping.
func (r *Relay) Start(ctx context.Context) error {
	cfg, err := pgxpool.ParseConfig(r.dsn)
	if err != nil {
		return fmt.Errorf("parsing postgres dsn: %w", err)
	}
	cfg.MaxConns = int32(min(r.opts.Workers, 1000) + 2) //nolint:gosec // bounded above
	cfg.MinConns = 1
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("opening %s pool: %w", r.name, err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return fmt.Errorf("connecting %s pool: %w", r.name, err)
	}
	// Publishes and commits of a batch in flight outlive Stop's signal; they
	// are cut only when the drain deadline passes.
	run, work, err := r.life.Begin(ctx)
	if err != nil {
		pool.Close()
		return fmt.Errorf("starting %s: %w", r.name, err)
	}
	r.pool = pool
	r.wake = newWaker()
	r.stop = run.Done()
	listenCfg := cfg.ConnConfig.Copy()
	r.life.Go(func() { r.listen(work, listenCfg) })
	for i := range r.opts.Workers {
		r.life.Go(func() { r.work(work, i) })
	}
	r.life.Go(func() { r.every(work, r.opts.MetricsInterval, r.refreshGauges) })
	r.life.Go(func() { r.every(work, r.opts.PruneInterval, r.prune) })
	return nil
}

// Stop stops claiming, lets batches in flight finish until ctx ends, and
// waits for every goroutine. An unfinished batch rolls back and stays pending.
func (r *Relay) Stop(ctx context.Context) error {
	err := r.life.Stop(ctx, nil)
	if r.pool != nil {
		r.pool.Close()
		r.pool = nil
	}
	if err != nil {
		return fmt.Errorf("draining %s: %w", r.name, err)
	}
	return nil
}

// Failed receives a failure of the relay after Start (a panicking worker).
func (r *Relay) Failed() <-chan error { return r.life.Failed() }

// Running is how many of the relay's goroutines have not returned yet.
func (r *Relay) Running() int { return r.life.Running() }

func (r *Relay) stopping() bool {
	select {
	case <-r.stop:
		return true
	default:
		return false
	}
}

// sleep waits for dur or Stop; it reports false on Stop.
func (r *Relay) sleep(dur time.Duration) bool {
	t := time.NewTimer(dur)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.stop:
		return false
	}
}

// work is one claim-publish-commit loop.
func (r *Relay) work(ctx context.Context, worker int) {
	logger := r.logger.With("worker", worker)
	backoff := 100 * time.Millisecond
	recheck := minRecheck
	for !r.stopping() {
		res, err := r.DispatchOnce(ctx)
		if err != nil || res.Unconfirmed > 0 {
			// The database or the broker is away: wait, then claim again.
			// Rows not confirmed stay pending.
			if err != nil && ctx.Err() == nil {
				logger.WarnContext(ctx, "dispatching failed; retrying", "error", err, "backoff", backoff)
			} else if err == nil {
				logger.WarnContext(ctx, "publishes unconfirmed; retrying", "unconfirmed", res.Unconfirmed, "backoff", backoff)
			}
			if !r.sleep(backoff + rand.N(backoff/2)) { //nolint:gosec // jitter, not security
				return
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		if res.Claimed == r.opts.BatchSize {
			// More may be due: let idle workers help.
			r.wake.notify(time.Time{})
			continue
		}
		if err := r.waitForDue(ctx, &recheck); err != nil {
			if r.stopping() || ctx.Err() != nil {
				return
			}
			logger.WarnContext(ctx, "looking for the next due message failed", "error", err)
			if !r.sleep(backoff) {
				return
			}
		}
	}
}

// waitForDue sleeps until the earliest unclaimed message is due, a
// notification announces one due sooner, MaxIdle passes, or Stop; while a
// writer that skipped its notification may be uncommitted, only for
// *recheck, which it doubles (and resets once none is).
func (r *Relay) waitForDue(ctx context.Context, recheck *time.Duration) error {
	// Take the generation before reading the table, so a notification sent
	// between the read and the wait is not missed.
	g := r.wake.current()
	// Before the read, so that a writer that released the lock has committed
	// a row the read sees. The lock lasts only this statement.
	var quiet bool
	if err := r.pool.QueryRow(ctx, r.sql.quiet).Scan(&quiet); err != nil {
		return fmt.Errorf("checking for writers that skipped their wake-up: %w", err)
	}
	var next *float64
	var dbNow time.Time
	if err := r.pool.QueryRow(ctx, r.sql.next).Scan(&dbNow, &next); err != nil {
		return fmt.Errorf("reading next due time: %w", err)
	}
	if next != nil && *next <= 0 {
		// The earliest row is due: either it just became due, or another
		// worker is publishing it. Rows another worker has claimed are its
		// business, so look again past locked rows. (Not the first query:
		// a row lock costs a WAL flush.)
		if err := r.pool.QueryRow(ctx, r.sql.nextUnlocked).Scan(&dbNow, &next); err != nil {
			return fmt.Errorf("reading next due time: %w", err)
		}
	}
	sleep := r.opts.MaxIdle
	if next != nil {
		if *next <= 0 {
			return nil
		}
		sleep = min(sleep, time.Duration(*next*float64(time.Second)))
	}
	if quiet {
		*recheck = minRecheck
	} else {
		sleep = min(sleep, *recheck)
		*recheck = min(*recheck*2, maxRecheck)
	}
	// Notifications carry database times; compare them with the target on
	// the database's clock.
	target := dbNow.Add(sleep)
	t := time.NewTimer(sleep)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			return nil
		case <-r.stop:
			return nil
		case <-g.done:
			if g.at.Before(target) {
				return nil
			}
			g = g.next
		}
	}
}

// queries are a table's statements, built once by New.
type queries struct {
	quiet, next, nextUnlocked, claim, markSent, postpone, gauges, prune, listen string
}

func (t Table) queries() queries {
	r := strings.NewReplacer("{table}", t.Name, "{sent}", t.Sent, "{lock}", t.SkippedNotifyLock)
	return queries{
		quiet:        r.Replace(`SELECT pg_try_advisory_xact_lock({lock})`),
		next:         r.Replace(sqlNext),
		nextUnlocked: r.Replace(sqlNextUnlocked),
		claim:        r.Replace(sqlClaim),
		markSent:     r.Replace(sqlMarkSent),
		postpone:     r.Replace(sqlPostpone),
		gauges:       r.Replace(sqlGauges),
		prune:        r.Replace(sqlPrune),
		listen:       "LISTEN " + t.Channel, // a name the table's owner declares, never input
	}
}

const sqlNext = `
		SELECT clock_timestamp(),
			(SELECT extract(epoch FROM next_attempt_at - clock_timestamp())::float8
			 FROM {table} ORDER BY next_attempt_at LIMIT 1)`

const sqlNextUnlocked = `
		SELECT clock_timestamp(),
			(SELECT extract(epoch FROM next_attempt_at - clock_timestamp())::float8
			 FROM {table} ORDER BY next_attempt_at LIMIT 1 FOR KEY SHARE SKIP LOCKED)`
