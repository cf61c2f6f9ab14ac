package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/lifecycle"
	"github.com/gdpr-oss/gdpr/modules/message"
)

// notifyChannel is the PostgreSQL channel the scheduled_messages triggers
// notify on (see migrations/020_scheduler.sql).
const notifyChannel = "gdpr_scheduler"

// skippedNotifyLock is the advisory lock (two int4 keys) that a transaction
// whose trigger skipped the NOTIFY holds in share mode until it ends (see
// migrations/021_scheduler_wakeup.sql).
const skippedNotifyLock = "1734635634, 20"

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

// Publisher publishes one message to a named exchange and returns nil only
// once the broker confirmed it. Calls from many goroutines are pipelined.
type Publisher interface {
	PublishTo(ctx context.Context, exchange string, m message.Message) error
}

// ExchangeChecker tells whether an exchange exists on the broker.
type ExchangeChecker interface {
	ExchangeExists(ctx context.Context, name string) (bool, error)
}

// DispatcherOptions tunes a Dispatcher; zero values take DefaultConfig()'s.
type DispatcherOptions struct {
	// MainExchange replaces an entry's empty exchange.
	MainExchange    string
	BatchSize       int
	Workers         int
	MaxIdle         time.Duration
	Retention       time.Duration
	PruneInterval   time.Duration
	MetricsInterval time.Duration
	RetryBackoff    time.Duration
}

func (o *DispatcherOptions) defaults() {
	def := DefaultConfig()
	if o.BatchSize < 1 {
		o.BatchSize = def.BatchSize
	}
	if o.Workers < 1 {
		o.Workers = def.Workers
	}
	if o.MaxIdle <= 0 {
		o.MaxIdle = def.MaxIdle
	}
	if o.Retention <= 0 {
		o.Retention = def.Retention
	}
	if o.PruneInterval <= 0 {
		o.PruneInterval = def.PruneInterval
	}
	if o.MetricsInterval <= 0 {
		o.MetricsInterval = def.MetricsInterval
	}
	if o.RetryBackoff <= 0 {
		o.RetryBackoff = def.RetryBackoff
	}
}

// Dispatcher publishes due messages. Each of its workers loops: claim a
// batch of due rows (FOR UPDATE SKIP LOCKED, so any number of dispatchers in
// any number of processes share the table), publish them all with confirms
// in flight together, then, in the claim's transaction, move the confirmed
// ones to the sent history. A crash before the commit leaves the rows
// pending, so they are published again with the same message id.
type Dispatcher struct {
	dsn       string
	pub       Publisher
	exchanges ExchangeChecker
	opts      DispatcherOptions
	metrics   *Metrics
	logger    *slog.Logger

	pool *pgxpool.Pool
	wake *waker
	stop <-chan struct{} // closed when Stop is called
	life lifecycle.Runner
}

// NewDispatcher returns a dispatcher over the database at dsn; nothing runs
// until Start. It opens its own small pool plus one connection for LISTEN.
func NewDispatcher(dsn string, pub Publisher, exchanges ExchangeChecker, opts DispatcherOptions, metrics *Metrics, logger *slog.Logger) *Dispatcher {
	opts.defaults()
	return &Dispatcher{
		dsn:       dsn,
		pub:       pub,
		exchanges: exchanges,
		opts:      opts,
		metrics:   metrics,
		logger:    logger.With("component", "scheduler dispatcher"),
	}
}

// Name identifies the component in logs.
func (d *Dispatcher) Name() string { return "scheduler dispatcher" }

// Start connects and starts the workers, the listener and housekeeping.
func (d *Dispatcher) Start(ctx context.Context) error {
	cfg, err := pgxpool.ParseConfig(d.dsn)
	if err != nil {
		return fmt.Errorf("parsing postgres dsn: %w", err)
	}
	cfg.MaxConns = int32(min(d.opts.Workers, 1000) + 2) //nolint:gosec // bounded above
	cfg.MinConns = 1
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("opening scheduler pool: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return fmt.Errorf("connecting scheduler pool: %w", err)
	}
	// Publishes and commits of a batch in flight outlive Stop's signal; they
	// are cut only when the drain deadline passes.
	run, work, err := d.life.Begin(ctx)
	if err != nil {
		pool.Close()
		return fmt.Errorf("starting %s: %w", d.Name(), err)
	}
	d.pool = pool
	d.wake = newWaker()
	d.stop = run.Done()
	listenCfg := cfg.ConnConfig.Copy()
	d.life.Go(func() { d.listen(work, listenCfg) })
	for i := range d.opts.Workers {
		d.life.Go(func() { d.work(work, i) })
	}
	d.life.Go(func() { d.every(work, d.opts.MetricsInterval, d.refreshGauges) })
	d.life.Go(func() { d.every(work, d.opts.PruneInterval, d.prune) })
	return nil
}

// Stop stops claiming, lets batches in flight finish until ctx ends, and
// waits for every goroutine. An unfinished batch rolls back and stays pending.
func (d *Dispatcher) Stop(ctx context.Context) error {
	err := d.life.Stop(ctx, nil)
	if d.pool != nil {
		d.pool.Close()
		d.pool = nil
	}
	if err != nil {
		return fmt.Errorf("draining scheduler dispatcher: %w", err)
	}
	return nil
}

// Failed receives a failure of the dispatcher after Start (a panicking worker).
func (d *Dispatcher) Failed() <-chan error { return d.life.Failed() }

// Running is how many of the dispatcher's goroutines have not returned yet.
func (d *Dispatcher) Running() int { return d.life.Running() }

func (d *Dispatcher) stopping() bool {
	select {
	case <-d.stop:
		return true
	default:
		return false
	}
}

// work is one claim-publish-commit loop.
func (d *Dispatcher) work(ctx context.Context, worker int) {
	logger := d.logger.With("worker", worker)
	backoff := 100 * time.Millisecond
	recheck := minRecheck
	for !d.stopping() {
		res, err := d.DispatchOnce(ctx)
		if err != nil || res.Unconfirmed > 0 {
			// The database or the broker is away: wait, then claim again.
			// Rows not confirmed stay pending.
			if err != nil && ctx.Err() == nil {
				logger.WarnContext(ctx, "dispatching failed; retrying", "error", err, "backoff", backoff)
			} else if err == nil {
				logger.WarnContext(ctx, "publishes unconfirmed; retrying", "unconfirmed", res.Unconfirmed, "backoff", backoff)
			}
			if !d.sleep(backoff + rand.N(backoff/2)) { //nolint:gosec // jitter, not security
				return
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		if res.Claimed == d.opts.BatchSize {
			// More may be due: let idle workers help.
			d.wake.notify(time.Time{})
			continue
		}
		if err := d.waitForDue(ctx, &recheck); err != nil {
			if d.stopping() || ctx.Err() != nil {
				return
			}
			logger.WarnContext(ctx, "looking for the next due message failed", "error", err)
			if !d.sleep(backoff) {
				return
			}
		}
	}
}

// sleep waits for dur or Stop; it reports false on Stop.
func (d *Dispatcher) sleep(dur time.Duration) bool {
	t := time.NewTimer(dur)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-d.stop:
		return false
	}
}

// waitForDue sleeps until the earliest unclaimed message is due, a
// notification announces one due sooner, MaxIdle passes, or Stop; while a
// writer that skipped its notification may be uncommitted, only for
// *recheck, which it doubles (and resets once none is).
func (d *Dispatcher) waitForDue(ctx context.Context, recheck *time.Duration) error {
	// Take the generation before reading the table, so a notification sent
	// between the read and the wait is not missed.
	g := d.wake.current()
	// Before the read, so that a writer that released the lock has committed
	// a row the read sees. The lock lasts only this statement.
	var quiet bool
	if err := d.pool.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock(`+skippedNotifyLock+`)`).Scan(&quiet); err != nil {
		return fmt.Errorf("checking for writers that skipped their wake-up: %w", err)
	}
	var next *float64
	var dbNow time.Time
	err := d.pool.QueryRow(ctx, `
		SELECT clock_timestamp(),
			(SELECT extract(epoch FROM next_attempt_at - clock_timestamp())::float8
			 FROM scheduled_messages ORDER BY next_attempt_at LIMIT 1)`).
		Scan(&dbNow, &next)
	if err != nil {
		return fmt.Errorf("reading next due time: %w", err)
	}
	if next != nil && *next <= 0 {
		// The earliest row is due: either it just became due, or another
		// worker is publishing it. Rows another worker has claimed are its
		// business, so look again past locked rows. (Not the first query:
		// a row lock costs a WAL flush.)
		err := d.pool.QueryRow(ctx, `
			SELECT clock_timestamp(),
				(SELECT extract(epoch FROM next_attempt_at - clock_timestamp())::float8
				 FROM scheduled_messages ORDER BY next_attempt_at LIMIT 1 FOR KEY SHARE SKIP LOCKED)`).
			Scan(&dbNow, &next)
		if err != nil {
			return fmt.Errorf("reading next due time: %w", err)
		}
	}
	sleep := d.opts.MaxIdle
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
		case <-d.stop:
			return nil
		case <-g.done:
			if g.at.Before(target) {
				return nil
			}
			g = g.next
		}
	}
}

// DispatchResult counts what one DispatchOnce did.
type DispatchResult struct {
	Claimed     int
	Sent        int
	Refused     int
	Unconfirmed int
}

type claimed struct {
	key       string
	exchange  string
	msg       message.Message
	attempts  int
	overdue   time.Duration // past deliver_at when claimed, by the database clock
	published time.Time     // local time of the confirm
	err       error
}

// DispatchOnce claims one batch of due messages, publishes them and commits
// the outcome. Exported for tests and benchmarks; the workers call it in a loop.
func (d *Dispatcher) DispatchOnce(ctx context.Context) (DispatchResult, error) {
	var res DispatchResult
	tx, err := d.pool.Begin(ctx)
	if err != nil {
		return res, fmt.Errorf("beginning claim: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	batch, err := d.claim(ctx, tx)
	if err != nil {
		return res, err
	}
	res.Claimed = len(batch)
	if len(batch) == 0 {
		return res, tx.Commit(ctx)
	}
	claimedAt := time.Now()
	d.publish(ctx, batch)

	var sent, refusedKeys, refusedErrs []string
	for i := range batch {
		c := &batch[i]
		switch {
		case c.err == nil:
			sent = append(sent, c.key)
		case refused(c.err):
			refusedKeys = append(refusedKeys, c.key)
			refusedErrs = append(refusedErrs, c.err.Error())
			d.logger.WarnContext(ctx, "broker refused scheduled message; will retry",
				"key", c.key, "message_id", c.msg.ID, "attempts", c.attempts+1, "error", c.err)
		default:
			res.Unconfirmed++
		}
	}
	if len(sent) > 0 {
		if _, err := tx.Exec(ctx, `
			WITH done AS (
				DELETE FROM scheduled_messages WHERE key = ANY($1)
				RETURNING key, message_id, deliver_at, attempts, exchange, routing_key, type, correlation_id)
			INSERT INTO scheduled_messages_sent (key, message_id, deliver_at, sent_at, attempts,
				exchange, routing_key, type, correlation_id)
			SELECT key, message_id, deliver_at, clock_timestamp(), attempts + 1, exchange, routing_key,
				type, correlation_id FROM done`, sent); err != nil {
			return res, fmt.Errorf("marking %d messages sent: %w", len(sent), err)
		}
	}
	if len(refusedKeys) > 0 {
		if _, err := tx.Exec(ctx, `
			UPDATE scheduled_messages m SET attempts = m.attempts + 1, last_error = f.err,
				next_attempt_at = clock_timestamp() + least(
					make_interval(secs => $3 * power(2, least(m.attempts, 20))),
					make_interval(secs => $4))
			FROM unnest($1::text[], $2::text[]) AS f(key, err) WHERE m.key = f.key`,
			refusedKeys, refusedErrs, d.opts.RetryBackoff.Seconds(), maxRetryBackoff.Seconds()); err != nil {
			return res, fmt.Errorf("postponing %d refused messages: %w", len(refusedKeys), err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return res, fmt.Errorf("committing dispatch of %d messages: %w", len(sent), err)
	}
	res.Sent, res.Refused = len(sent), len(refusedKeys)
	if d.metrics != nil {
		d.metrics.dispatched.Add(float64(res.Sent))
		d.metrics.refused.Add(float64(res.Refused))
		for i := range batch {
			if c := &batch[i]; c.err == nil {
				d.metrics.lateness.Observe((c.overdue + c.published.Sub(claimedAt)).Seconds())
			}
		}
	}
	return res, nil
}

// refused tells a per-message refusal (try this message later) from an
// unknown outcome (the broker is away; try the whole batch again soon).
func refused(err error) bool {
	return errors.Is(err, bus.ErrUnroutable) || errors.Is(err, bus.ErrNacked) || errors.Is(err, errNoExchange)
}

var errNoExchange = errors.New("exchange does not exist")

func (d *Dispatcher) claim(ctx context.Context, tx pgx.Tx) ([]claimed, error) {
	// now() is the transaction's start: nothing claimed is due after it,
	// so nothing is published early by the database clock.
	rows, err := tx.Query(ctx, `
		SELECT key, message_id, exchange, routing_key, type, correlation_id, causation_id,
			traceparent, headers::text, body, occurred_at, attempts,
			extract(epoch FROM clock_timestamp() - deliver_at)::float8
		FROM scheduled_messages
		WHERE next_attempt_at <= now() AND deliver_at <= now()
		ORDER BY next_attempt_at
		LIMIT $1
		FOR UPDATE SKIP LOCKED`, d.opts.BatchSize)
	if err != nil {
		return nil, fmt.Errorf("claiming due messages: %w", err)
	}
	defer rows.Close()
	batch := make([]claimed, 0, d.opts.BatchSize)
	for rows.Next() {
		var c claimed
		var headers string
		var overdue float64
		m := &c.msg
		if err := rows.Scan(&c.key, &m.ID, &c.exchange, &m.RoutingKey, &m.Type, &m.CorrelationID,
			&m.CausationID, &m.Traceparent, &headers, &m.Body, &m.OccurredAt, &c.attempts, &overdue); err != nil {
			return nil, fmt.Errorf("reading claimed message: %w", err)
		}
		if headers != "{}" {
			if err := json.Unmarshal([]byte(headers), &m.Headers); err != nil {
				return nil, fmt.Errorf("decoding headers of %s: %w", c.key, err)
			}
		}
		if c.exchange == "" {
			c.exchange = d.opts.MainExchange
		}
		c.overdue = time.Duration(max(overdue, 0) * float64(time.Second))
		batch = append(batch, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("claiming due messages: %w", err)
	}
	return batch, nil
}

// publish sends the whole batch with every confirm in flight at once and
// records each outcome in the batch.
func (d *Dispatcher) publish(ctx context.Context, batch []claimed) {
	missing := map[string]bool{}
	for _, c := range batch {
		if c.exchange == d.opts.MainExchange || d.exchanges == nil {
			continue
		}
		if _, seen := missing[c.exchange]; seen {
			continue
		}
		// A publish to a missing exchange would close the channel and fail
		// every other publish in flight on it.
		ok, err := d.exchanges.ExchangeExists(ctx, c.exchange)
		missing[c.exchange] = err == nil && !ok
	}
	var wg sync.WaitGroup
	for i := range batch {
		c := &batch[i]
		if missing[c.exchange] {
			c.err = fmt.Errorf("%w: %s", errNoExchange, c.exchange)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.err = d.pub.PublishTo(ctx, c.exchange, c.msg)
			c.published = time.Now()
		}()
	}
	wg.Wait()
}

// every runs f now and then every interval until Stop.
func (d *Dispatcher) every(ctx context.Context, interval time.Duration, f func(context.Context) error) {
	for {
		if err := f(ctx); err != nil && ctx.Err() == nil && !d.stopping() {
			d.logger.WarnContext(ctx, "scheduler housekeeping failed", "error", err)
		}
		if !d.sleep(interval) {
			return
		}
	}
}

// refreshGauges reads pending, due and oldest-overdue from the table.
func (d *Dispatcher) refreshGauges(ctx context.Context) error {
	if d.metrics == nil {
		return nil
	}
	var pending, due int64
	var oldest float64
	err := d.pool.QueryRow(ctx, `
		SELECT count(*), count(*) FILTER (WHERE deliver_at <= now()),
			COALESCE(extract(epoch FROM now() - min(deliver_at) FILTER (WHERE deliver_at <= now())), 0)::float8
		FROM scheduled_messages`).Scan(&pending, &due, &oldest)
	if err != nil {
		return fmt.Errorf("reading scheduler gauges: %w", err)
	}
	d.metrics.pending.Set(float64(pending))
	d.metrics.due.Set(float64(due))
	d.metrics.oldestOverdue.Set(oldest)
	return nil
}

// prune deletes sent history older than the retention, in slices so that
// no one statement holds many locks.
func (d *Dispatcher) prune(ctx context.Context) error {
	const slice = 10000
	total := int64(0)
	for !d.stopping() {
		tag, err := d.pool.Exec(ctx, `
			DELETE FROM scheduled_messages_sent WHERE ctid = ANY (ARRAY(
				SELECT ctid FROM scheduled_messages_sent
				WHERE sent_at < clock_timestamp() - make_interval(secs => $1) LIMIT $2))`,
			d.opts.Retention.Seconds(), slice)
		if err != nil {
			return fmt.Errorf("pruning sent messages: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < slice {
			break
		}
	}
	if total > 0 {
		d.logger.InfoContext(ctx, "pruned sent scheduled messages", "count", total)
	}
	return nil
}

// listen keeps a LISTEN connection open and turns notifications into
// wake-ups; after every (re)connect it wakes all workers, since
// notifications sent while it was away are lost.
func (d *Dispatcher) listen(ctx context.Context, cfg *pgx.ConnConfig) {
	backoff := 100 * time.Millisecond
	for !d.stopping() {
		err := d.listenOnce(ctx, cfg, func() { backoff = 100 * time.Millisecond })
		if d.stopping() || ctx.Err() != nil {
			return
		}
		d.logger.WarnContext(ctx, "scheduler listen connection lost; reconnecting", "error", err, "backoff", backoff)
		if !d.sleep(backoff + rand.N(backoff/2)) { //nolint:gosec // jitter, not security
			return
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (d *Dispatcher) listenOnce(ctx context.Context, cfg *pgx.ConnConfig, connected func()) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-d.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connecting for LISTEN: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		return fmt.Errorf("listening on %s: %w", notifyChannel, err)
	}
	connected()
	d.wake.notify(time.Time{})
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return fmt.Errorf("waiting for notifications: %w", err)
		}
		at := time.Time{}
		if us, err := strconv.ParseInt(n.Payload, 10, 64); err == nil {
			at = time.UnixMicro(us)
		}
		d.wake.notify(at)
	}
}

// waker broadcasts "something is due at" to every waiting worker. Each
// notification closes one generation and links the next, so a worker that
// ignores a far-future notification still sees every later one.
type waker struct {
	mu  sync.Mutex
	cur *generation
}

type generation struct {
	done chan struct{}
	at   time.Time   // set before done is closed
	next *generation // set before done is closed
}

func newWaker() *waker {
	return &waker{cur: &generation{done: make(chan struct{})}}
}

func (w *waker) current() *generation {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cur
}

// notify wakes waiters whose target is after at; a zero at wakes them all.
func (w *waker) notify(at time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	g := w.cur
	g.at = at
	g.next = &generation{done: make(chan struct{})}
	w.cur = g.next
	close(g.done)
}
