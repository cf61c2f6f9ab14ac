package scheduler_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"
	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/config"
	"github.com/gdpr-oss/gdpr/config/configtest"
	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/scheduler"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// benchTopology is what `gdpr scheduler` declares for due messages plus the
// audit queue that in production receives every message too.
var benchTopology = bus.Topology{Queues: []bus.Queue{
	{Name: "sink", Bindings: []string{"due.#"}},
	{Name: "audit", Bindings: []string{"#"}},
	{Name: "scheduler", Bindings: []string{"scheduler.schedule", "scheduler.cancel"}},
}}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// drain consumes a queue with auto-ack on a raw channel and calls f for
// each delivery, so the broker never holds a backlog.
func drain(b *testing.B, conn *bus.Conn, queue string, f func(amqp.Delivery)) {
	ch, err := conn.Channel(b.Context())
	require.NoError(b, err)
	b.Cleanup(func() { _ = ch.Close() })
	require.NoError(b, ch.Qos(2000, 0, false))
	deliveries, err := ch.Consume(conn.QueueName(queue), "", true, false, false, false, nil)
	require.NoError(b, err)
	go func() {
		for d := range deliveries {
			f(d)
		}
	}()
}

// benchChild starts `gdpr scheduler` for cfg with extra settings.
func benchChild(b *testing.B, bin string, cfg config.Config, extra ...string) *child {
	env := append(configtest.Env(cfg), "GDPR_SCHEDULER_ADMIN_ADDR=127.0.0.1:0", "GDPR_LOG_LEVEL=warn")
	return startChild(b, bin, append(env, extra...), filepath.Join(b.TempDir(), "scheduler.log"))
}

// peakRSS is the process's high-water resident set (VmHWM) in bytes.
func peakRSS(b *testing.B, pid int) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(b, err)
	for line := range strings.SplitSeq(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			require.NoError(b, err)
			return float64(kb) * 1024
		}
	}
	b.Fatal("no VmHWM")
	return 0
}

// ceiling publishes n messages like the scheduler's with a bare amqp091
// loop: the same number of confirm-mode channels, each with up to window
// confirms in flight. It returns confirmed publishes per second.
func ceiling(b *testing.B, conn *bus.Conn, n, channels, window int, body []byte) float64 {
	var left atomic.Int64
	left.Store(int64(n))
	var failed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range channels {
		ch, err := conn.Channel(b.Context())
		require.NoError(b, err)
		require.NoError(b, ch.Confirm(false))
		inflight := make(chan *amqp.DeferredConfirmation, window)
		wg.Add(2)
		go func() {
			defer wg.Done()
			for dc := range inflight {
				if ok, err := dc.WaitContext(b.Context()); err != nil || !ok {
					failed.Add(1)
				}
			}
			_ = ch.Close()
		}()
		go func() {
			defer wg.Done()
			defer close(inflight)
			for left.Add(-1) >= 0 {
				dc, err := ch.PublishWithDeferredConfirm(conn.Exchange(), dueType, true, false, amqp.Publishing{
					Headers:      amqp.Table{bus.HeaderOccurredAt: time.Now().Format(time.RFC3339Nano), bus.HeaderTraceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
					ContentType:  "application/json",
					DeliveryMode: amqp.Persistent,
					MessageId:    testkit.ID(),
					Type:         dueType,
					Timestamp:    time.Now(),
					Body:         body,
				})
				if err != nil {
					failed.Add(1)
					return
				}
				inflight <- dc
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	require.Zero(b, failed.Load(), "bare publishes failed")
	return float64(n) / took.Seconds()
}

// BenchmarkDispatchMillionDue puts GDPR_BENCH_SCHEDULER_COUNT (default
// 1,000,000) messages due at the same instant and measures how fast one
// `gdpr scheduler` process (default settings) publishes them, against the
// bare windowed confirmed-publish ceiling measured in the same run, and the
// scheduler's peak RSS.
func BenchmarkDispatchMillionDue(b *testing.B) {
	n := envInt("GDPR_BENCH_SCHEDULER_COUNT", 1_000_000)
	bin := testkit.Build(b)
	cfg := configtest.Config(b)
	conn := testkit.Bus(b, cfg.AMQP, benchTopology)
	b.Cleanup(func() { testkit.DeleteTopology(b, cfg.AMQP, appQueues) })
	var delivered atomic.Int64
	var firstAt, lastAt atomic.Int64
	drain(b, conn, "sink", func(amqp.Delivery) {
		now := time.Now().UnixNano()
		firstAt.CompareAndSwap(0, now)
		lastAt.Store(now)
		delivered.Add(1)
	})
	drain(b, conn, "audit", func(amqp.Delivery) {})

	body, err := json.Marshal(dueBody{N: n, DeliverAt: time.Now()})
	require.NoError(b, err)
	def := config.Default().Scheduler
	for range b.N {
		// The ceiling on a sample large enough to be steady.
		sample := min(max(n/5, 20_000), 200_000)
		ceil := ceiling(b, conn, sample, cfg.AMQP.PublishChannels, def.BatchSize, body)
		testkit.Eventually(b, time.Minute, func() bool { return delivered.Load() >= int64(sample) }, "ceiling sample drained")

		copyStart := time.Now()
		copyDue(b, cfg.Postgres.DSN, n, time.Time{})
		copyTook := time.Since(copyStart)
		delivered.Store(0)
		firstAt.Store(0)

		b.ResetTimer()
		proc := benchChild(b, bin, cfg)
		testkit.Eventually(b, 30*time.Minute, func() bool { return delivered.Load() >= int64(n) }, "all %d dispatched", n)
		b.StopTimer()
		took := time.Duration(lastAt.Load() - firstAt.Load())
		rss := peakRSS(b, proc.cmd.Process.Pid)
		proc.stop()
		rate := float64(n) / took.Seconds()
		b.ReportMetric(rate, "dispatched/s")
		b.ReportMetric(ceil, "ceiling_publishes/s")
		b.ReportMetric(rate/ceil, "ratio")
		b.ReportMetric(rss/(1<<20), "peak_rss_MB")
		fmt.Printf("BenchmarkDispatchMillionDue: %d messages due at once (COPY took %s); one gdpr scheduler (batch %d, %d workers, %d channels): %.0f dispatched/s; bare windowed confirmed publish (window %d/channel, %d messages): %.0f/s; ratio %.2f (target >= 0.7); peak RSS %.1f MB (target < 100)\n",
			n, copyTook.Round(time.Millisecond), def.BatchSize, def.Workers, cfg.AMQP.PublishChannels, rate, def.BatchSize, sample, ceil, rate/ceil, rss/(1<<20))
	}
}

// latenessLog records, for each due message a queue delivers, its arrival
// minus its due time (from the body; both on this machine's clock, which is
// the database's).
type latenessLog struct {
	mu    sync.Mutex
	ls    []time.Duration
	early atomic.Int64
}

func (l *latenessLog) record(d amqp.Delivery) {
	at := time.Now()
	var body dueBody
	if json.Unmarshal(d.Body, &body) != nil {
		return
	}
	if at.Before(body.DeliverAt) {
		l.early.Add(1)
	}
	l.mu.Lock()
	l.ls = append(l.ls, at.Sub(body.DeliverAt))
	l.mu.Unlock()
}

func (l *latenessLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.ls)
}

// take returns what was recorded, sorted, and starts a new record.
func (l *latenessLog) take() latencies {
	l.mu.Lock()
	ls := l.ls
	l.ls = nil
	l.mu.Unlock()
	slices.Sort(ls)
	return ls
}

// latencies is a sorted, non-empty sample.
type latencies []time.Duration

func (ls latencies) p(q float64) time.Duration { return ls[min(len(ls)-1, int(q*float64(len(ls))))] }
func (ls latencies) max() time.Duration        { return ls[len(ls)-1] }

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func (ls latencies) String() string {
	r := func(d time.Duration) time.Duration { return d.Round(100 * time.Microsecond) }
	return fmt.Sprintf("p50 %s, p99 %s, max %s", r(ls.p(0.5)), r(ls.p(0.99)), r(ls.max()))
}

// scheduleSteady inserts total rows, ten every 10 ms, each due one second
// after it is written at one-millisecond steps (so 1,000 come due per
// second), keyed prefix+n; it returns how long the schedule took.
func scheduleSteady(b *testing.B, pg *pgx.Conn, total int, prefix string) time.Duration {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	for i := 0; i < total; i += 10 {
		<-tick.C
		_, err := pg.Exec(b.Context(), `
			INSERT INTO scheduled_messages (key, message_id, deliver_at, next_attempt_at, routing_key, type, body, occurred_at)
			SELECT $2 || g, gen_random_uuid()::text, t, t, 'due.test', 'due.test',
				convert_to(json_build_object('n', g, 'deliver_at', t)::text, 'UTF8'), now()
			FROM generate_series($1::int, $1::int + 9) g,
				LATERAL (SELECT clock_timestamp() + interval '1 second' + (g - $1) * interval '1 millisecond' AS t) due`, i, prefix)
		require.NoError(b, err)
	}
	return time.Since(start)
}

// BenchmarkSteadyLateness schedules 1,000 messages per second, each due one
// second after it is written (one due per millisecond), for
// GDPR_BENCH_SCHEDULER_SECONDS (default 60) seconds, with one `gdpr
// scheduler` process, and reports lateness (arrival at a consumer minus due
// time, both on this machine's clock, which is the database's) p50/p99/max.
func BenchmarkSteadyLateness(b *testing.B) {
	seconds := envInt("GDPR_BENCH_SCHEDULER_SECONDS", 60)
	const perSecond = 1000
	bin := testkit.Build(b)
	cfg := configtest.Config(b)
	conn := testkit.Bus(b, cfg.AMQP, benchTopology)
	b.Cleanup(func() { testkit.DeleteTopology(b, cfg.AMQP, appQueues) })
	var log latenessLog
	drain(b, conn, "sink", log.record)
	drain(b, conn, "audit", func(amqp.Delivery) {})
	ctx := context.Background()
	pg, err := pgx.Connect(ctx, cfg.Postgres.DSN)
	require.NoError(b, err)
	b.Cleanup(func() { _ = pg.Close(ctx) })

	for range b.N {
		admin := freeAddr(b)
		proc := benchChild(b, bin, cfg, "GDPR_SCHEDULER_ADMIN_ADDR="+admin)
		total := seconds * perSecond
		scheduleTook := scheduleSteady(b, pg, total, "s")
		testkit.Eventually(b, 2*time.Minute, func() bool { return log.count() >= total }, "all %d delivered", total)
		rss := peakRSS(b, proc.cmd.Process.Pid)
		own := histogramQuantile(b, "http://"+admin+"/metrics", "gdpr_scheduler_lateness_seconds", 0.99)
		proc.stop()

		ls := log.take()
		b.ReportMetric(ms(ls.p(0.5)), "p50_ms")
		b.ReportMetric(ms(ls.p(0.99)), "p99_ms")
		b.ReportMetric(ms(ls.max()), "max_ms")
		b.ReportMetric(float64(log.early.Load()), "early")
		fmt.Printf("BenchmarkSteadyLateness: %d messages at %d/s over %s, one gdpr scheduler: lateness at the consumer p50 %s, p99 %s (target < 250ms), max %s; scheduler's own histogram (confirm - due) p99 <= %s; arrivals before due: %d; peak RSS %.1f MB\n",
			len(ls), perSecond, scheduleTook.Round(time.Millisecond), ls.p(0.5).Round(100*time.Microsecond), ls.p(0.99).Round(100*time.Microsecond),
			ls.max().Round(100*time.Microsecond), own, log.early.Load(), rss/(1<<20))
	}
}

// BenchmarkBurstyLateness is the traffic that loses wake-ups when the
// trigger's skip races the dispatcher: 16 writers, each on its own
// connection, pausing a random 0-1 s and then committing a burst of 1-10
// one-row transactions (BEGIN, INSERT due now, COMMIT: an outbox write), for
// GDPR_BENCH_SCHEDULER_BURST_SECONDS (default 20) seconds, with one `gdpr
// scheduler` process (default settings, so scheduler.max_idle 5 s). The
// reference, measured with the same process just before, is the steady
// 1,000/s schedule of BenchmarkSteadyLateness for as long.
func BenchmarkBurstyLateness(b *testing.B) {
	seconds := envInt("GDPR_BENCH_SCHEDULER_BURST_SECONDS", 20)
	const writers, maxBurst, maxPause = 16, 10, time.Second
	bin := testkit.Build(b)
	cfg := configtest.Config(b)
	conn := testkit.Bus(b, cfg.AMQP, benchTopology)
	b.Cleanup(func() { testkit.DeleteTopology(b, cfg.AMQP, appQueues) })
	var log latenessLog
	drain(b, conn, "sink", log.record)
	drain(b, conn, "audit", func(amqp.Delivery) {})
	ctx := context.Background()
	conns := make([]*pgx.Conn, writers)
	for i := range conns {
		pg, err := pgx.Connect(ctx, cfg.Postgres.DSN)
		require.NoError(b, err)
		b.Cleanup(func() { _ = pg.Close(ctx) })
		conns[i] = pg
	}

	for run := range b.N {
		proc := benchChild(b, bin, cfg)
		steadyTotal := seconds * 1000
		scheduleSteady(b, conns[0], steadyTotal, fmt.Sprintf("s%d-", run))
		testkit.Eventually(b, 2*time.Minute, func() bool { return log.count() >= steadyTotal }, "all %d steady delivered", steadyTotal)
		steady := log.take()
		steadyEarly := log.early.Swap(0)

		var written atomic.Int64
		var wg sync.WaitGroup
		end := time.Now().Add(time.Duration(seconds) * time.Second)
		for w, pg := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := 0; ; {
					time.Sleep(rand.N(maxPause)) //nolint:forbidigo // the random pause between bursts is the load shape
					if time.Now().After(end) {
						return
					}
					for range 1 + rand.IntN(maxBurst) {
						err := pgx.BeginFunc(ctx, pg, func(tx pgx.Tx) error {
							_, err := tx.Exec(ctx, `
								INSERT INTO scheduled_messages (key, message_id, deliver_at, next_attempt_at, routing_key, type, body, occurred_at)
								VALUES ($1, gen_random_uuid()::text, now(), now(), 'due.test', 'due.test',
									convert_to(json_build_object('n', $2::int, 'deliver_at', now())::text, 'UTF8'), now())`,
								fmt.Sprintf("b%d-%d-%d", run, w, n), n)
							return err
						})
						if err != nil {
							b.Error(err)
							return
						}
						n++
						written.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		total := int(written.Load())
		testkit.Eventually(b, 2*time.Minute, func() bool { return log.count() >= total }, "all %d bursty delivered", total)
		proc.stop()

		bursty := log.take()
		early := log.early.Swap(0) + steadyEarly
		b.ReportMetric(ms(bursty.p(0.5)), "p50_ms")
		b.ReportMetric(ms(bursty.p(0.99)), "p99_ms")
		b.ReportMetric(ms(bursty.max()), "max_ms")
		b.ReportMetric(ms(steady.p(0.99)), "steady_p99_ms")
		b.ReportMetric(float64(early), "early")
		fmt.Printf("BenchmarkBurstyLateness: %d writers, bursts of 1-%d one-row transactions due now after random pauses (0-%s), %d messages over %ds, one gdpr scheduler: lateness at the consumer %s (targets p99 < 100ms, max < 500ms); steady %d/s in the same process just before: %s; arrivals before due: %d\n",
			writers, maxBurst, maxPause, len(bursty), seconds, bursty, len(steady)/seconds, steady, early)
	}
}

// freeAddr returns a loopback address with a port free right now.
func freeAddr(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(b, err)
	defer ln.Close()
	return ln.Addr().String()
}

// histogramQuantile reads a histogram from a /metrics page and returns the
// upper bound of the bucket holding quantile q.
func histogramQuantile(b *testing.B, url, name string, q float64) time.Duration {
	req, err := http.NewRequestWithContext(b.Context(), http.MethodGet, url, nil)
	require.NoError(b, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(b, err)
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	require.NoError(b, err)
	mf, ok := families[name]
	require.True(b, ok, "no %s", name)
	h := mf.GetMetric()[0].GetHistogram()
	want := q * float64(h.GetSampleCount())
	for _, bucket := range h.GetBucket() {
		if float64(bucket.GetCumulativeCount()) >= want {
			return time.Duration(bucket.GetUpperBound() * float64(time.Second))
		}
	}
	return time.Duration(math.MaxInt64)
}

// BenchmarkEnqueueNotifyCost measures what the wake-up trigger costs the
// outbox: committed one-message transactions per second through
// Store.Enqueue from 8 goroutines while a dispatcher publishes them (so the
// table stays nearly empty and wake-ups are needed), with the triggers
// enabled and, as the ceiling, disabled; phases alternate (ABBA).
func BenchmarkEnqueueNotifyCost(b *testing.B) {
	f := newFixture(b)
	f.sink(b)
	f.dispatcher(b, scheduler.DispatcherOptions{MaxIdle: 50 * time.Millisecond})
	gdb, store := f.db, f.store
	const goroutines, perPhase = 8, 2000
	// The trigger function as migrated, and one that notifies on every
	// statement (the naive design), for comparison in the same run.
	var migrated string
	require.NoError(b, gdb.Raw(`SELECT pg_get_functiondef('scheduled_messages_notify'::regproc)`).Scan(&migrated).Error)
	const always = `CREATE OR REPLACE FUNCTION scheduled_messages_notify() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			PERFORM pg_notify('gdpr_scheduler', (SELECT (floor(extract(epoch FROM min(next_attempt_at)) * 1000000))::bigint::text FROM new_rows));
			RETURN NULL;
		END; $$`
	phase := func(mode string) time.Duration {
		verb := "ENABLE"
		switch mode {
		case "none":
			verb = "DISABLE"
		case "always":
			require.NoError(b, gdb.Exec(always).Error)
		default:
			require.NoError(b, gdb.Exec(migrated).Error)
		}
		require.NoError(b, gdb.Exec("ALTER TABLE scheduled_messages "+verb+" TRIGGER USER").Error)
		var left atomic.Int64
		left.Store(perPhase)
		var wg sync.WaitGroup
		start := time.Now()
		for range goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for left.Add(-1) >= 0 {
					m := dueMessage(b, 0, time.Time{})
					err := gdb.Transaction(func(tx *gorm.DB) error {
						return store.Schedule(b.Context(), tx, scheduler.Entry{Key: "outbox:" + m.ID, Message: m})
					})
					if err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		return time.Since(start)
	}
	took := map[string]time.Duration{}
	for range b.N {
		for _, mode := range []string{"migrated", "none", "always", "always", "none", "migrated"} {
			took[mode] += phase(mode)
		}
	}
	require.NoError(b, gdb.Exec(migrated).Error)
	n := float64(2 * perPhase * b.N)
	rate := func(mode string) float64 { return n / took[mode].Seconds() }
	b.ReportMetric(rate("migrated"), "enqueues/s")
	b.ReportMetric(rate("none"), "without_notify_enqueues/s")
	b.ReportMetric(rate("always"), "notify_always_enqueues/s")
	b.ReportMetric(rate("migrated")/rate("none"), "ratio")
	fmt.Printf("BenchmarkEnqueueNotifyCost: %d goroutines, one Enqueue per transaction, dispatcher running: %.0f commits/s with the migrated trigger, %.0f/s without any, %.0f/s notifying on every statement; ratio %.2f (naive %.2f)\n",
		goroutines, rate("migrated"), rate("none"), rate("always"), rate("migrated")/rate("none"), rate("always")/rate("none"))
}
