package scheduler_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/scheduler"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// dueType is the type (and routing key) of the messages tests schedule; the
// sink queue receives them.
const dueType = "due.test"

var testTopology = bus.Topology{Queues: []bus.Queue{
	{Name: "sink", Bindings: []string{"due.#"}},
	{Name: "scheduler", Bindings: []string{"scheduler.schedule", "scheduler.cancel"}},
}}

// fixture is one test's isolated database, broker prefix and store.
type fixture struct {
	db    *gorm.DB
	dsn   string
	amqp  bus.Config
	conn  *bus.Conn
	store *scheduler.Store
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	gdb, dsn := testkit.Postgres(t)
	cfg := testkit.AMQP(t)
	conn := testkit.Bus(t, cfg, testTopology)
	return &fixture{db: gdb, dsn: dsn, amqp: cfg, conn: conn, store: scheduler.NewStore(gdb)}
}

// dispatcher starts an in-process dispatcher with its own broker connection
// and stops it when the test ends.
func (f *fixture) dispatcher(t testing.TB, opts scheduler.DispatcherOptions) (*scheduler.Dispatcher, *prometheus.Registry) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := bus.Dial(ctx, f.amqp, "gdpr-test-dispatcher-"+f.amqp.Prefix, testTopology, testkit.Logger(t))
	require.NoError(t, err)
	pub := bus.NewPublisher(conn)
	opts.MainExchange = conn.Exchange()
	reg := prometheus.NewRegistry()
	d := scheduler.NewDispatcher(f.dsn, pub, conn, opts, scheduler.NewMetrics(reg), testkit.Logger(t))
	require.NoError(t, d.Start(ctx))
	t.Cleanup(func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		require.NoError(t, d.Stop(stopCtx))
		require.Zero(t, d.Running(), "Stop returned only once every goroutine had")
		_ = pub.Close()
		_ = conn.Close()
	})
	return d, reg
}

// dueBody is what test messages carry: when they were due, for lateness.
type dueBody struct {
	N         int       `json:"n"`
	DeliverAt time.Time `json:"deliver_at"`
}

// received is one consumed message.
type received struct {
	id   string
	body dueBody
	at   time.Time
}

// sink counts what arrives on the sink queue, by message id.
type sink struct {
	mu     sync.Mutex
	counts map[string]int
	log    []received
	arrive chan struct{}
}

func (f *fixture) sink(t testing.TB) *sink {
	t.Helper()
	s := &sink{counts: map[string]int{}, arrive: make(chan struct{}, 1)}
	c := bus.NewConsumer(f.conn, bus.ConsumerOptions{Queue: "sink", Concurrency: 4, Prefetch: 500}, func(_ context.Context, m message.Message) error {
		at := time.Now()
		var b dueBody
		_ = json.Unmarshal(m.Body, &b)
		s.mu.Lock()
		s.counts[m.ID]++
		s.log = append(s.log, received{id: m.ID, body: b, at: at})
		s.mu.Unlock()
		select {
		case s.arrive <- struct{}{}:
		default:
		}
		return nil
	}, testkit.Logger(t))
	require.NoError(t, c.Start(t.Context()))
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
	return s
}

func (s *sink) count(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[id]
}

func (s *sink) get(id string) (received, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.log {
		if r.id == id {
			return r, true
		}
	}
	return received{}, false
}

// tally returns how many distinct ids arrived and how many arrivals were duplicates.
func (s *sink) tally() (distinct, duplicates int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.counts {
		distinct++
		duplicates += n - 1
	}
	return distinct, duplicates
}

func dueMessage(t testing.TB, n int, at time.Time) message.Message {
	t.Helper()
	m, err := message.New(dueType, dueBody{N: n, DeliverAt: at}, nil)
	require.NoError(t, err)
	return m
}

// copyDue inserts n messages due at `at` (zero: now) with COPY and returns their ids.
func copyDue(t testing.TB, dsn string, n int, at time.Time) []string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	require.NoError(t, err)
	defer conn.Close(ctx)
	if at.IsZero() {
		require.NoError(t, conn.QueryRow(ctx, "SELECT now()").Scan(&at))
	}
	ids := make([]string, 0, n)
	// Streamed, so a million rows need no million-row slice.
	_, err = conn.CopyFrom(ctx, pgx.Identifier{"scheduled_messages"},
		[]string{"key", "message_id", "deliver_at", "next_attempt_at", "routing_key", "type", "traceparent", "body", "occurred_at"},
		pgx.CopyFromFunc(func() ([]any, error) {
			i := len(ids)
			if i == n {
				return nil, nil
			}
			m := dueMessage(t, i, at)
			ids = append(ids, m.ID)
			return []any{fmt.Sprintf("k%07d", i), m.ID, at, at, dueType, dueType, m.Traceparent, m.Body, m.OccurredAt}, nil
		}))
	require.NoError(t, err)
	return ids
}

func countRows(t testing.TB, gdb *gorm.DB, table string) int64 {
	t.Helper()
	var n int64
	require.NoError(t, gdb.Raw("SELECT count(*) FROM "+table).Scan(&n).Error)
	return n
}

// dbNow is the database clock, which decides "due".
func dbNow(t testing.TB, gdb *gorm.DB) time.Time {
	t.Helper()
	var now time.Time
	require.NoError(t, gdb.Raw("SELECT clock_timestamp()").Scan(&now).Error)
	return now
}
