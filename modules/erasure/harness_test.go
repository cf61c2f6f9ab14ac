package erasure_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"
	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/config"
	"github.com/gdpr-oss/gdpr/config/configtest"
	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/db"
	"github.com/gdpr-oss/gdpr/modules/erasure"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/notify"
	"github.com/gdpr-oss/gdpr/modules/outbox"
	"github.com/gdpr-oss/gdpr/modules/requests"
	"github.com/gdpr-oss/gdpr/modules/scheduler"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// harness is one canceller on isolated resources: its own database, AMQP
// prefix and scheduler dispatcher, with a recorder of everything published.
type harness struct {
	t        testing.TB
	cfg      config.Config
	db       *gorm.DB
	conn     *bus.Conn
	pub      *bus.Publisher
	logger   *slog.Logger
	registry *prometheus.Registry
	store    *scheduler.Store
	outbox   *outbox.Store
	events   *recorder
}

// quietLogger keeps warnings and errors only: big tests log thousands of lines otherwise.
func quietLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// topology is the canceller's, every participant's, and a recorder queue
// bound to the events the tests check.
func topology(cfg config.Config) bus.Topology {
	t := bus.Topology{Queues: []bus.Queue{
		{Name: erasure.QueueCanceller, Bindings: erasure.Bindings()},
		{Name: "recorder", Bindings: []string{event.TypeErasureCompleted, event.TypeErasureFinished, event.TypeErasureOverdue, event.TypeErasureCalled}},
		{Name: "worker.notify", Bindings: []string{event.TypeErasureCompleted}},
		// sink takes what other roles would consume, so their publishes are routable.
		{Name: "sink", Bindings: []string{event.TypeNotificationSent}},
	}}
	for _, p := range cfg.Canceller.Participants {
		if p.Kind != erasure.KindHTTP {
			t.Queues = append(t.Queues, bus.Queue{Name: erasure.QueueName(p.Name), Bindings: []string{erasure.CommandRoutingKey(p.Name)}})
		}
	}
	return t
}

// newHarness prepares resources; the canceller and dispatcher start with start().
func newHarness(t testing.TB, participants []erasure.Participant, tune func(*erasure.Config)) *harness {
	cfg := configtest.Config(t)
	cfg.Canceller.Participants = participants
	cfg.Serve.Identifiers = []string{"loyalty_card"} // TestHTTPParticipantURLsTakePhoneAndNamedIdentifiers
	cfg.Canceller.ConfirmTimeout = 30 * time.Second
	cfg.Canceller.RetryBackoff = 100 * time.Millisecond
	cfg.Canceller.MaxBackoff = time.Second
	cfg.Canceller.EmailDelay = 0
	cfg.Canceller.Concurrency = 16
	if tune != nil {
		tune(&cfg.Canceller)
	}
	// PostgreSQL's connections are shared by every package's tests: keep few.
	cfg.Postgres.MaxOpenConns = 6
	if _, bench := t.(*testing.B); bench {
		cfg.Postgres.MaxOpenConns = 20 // the default: benchmarks run alone
	}
	require.NoError(t, cfg.Validate())
	gdb, err := db.Open(context.Background(), cfg.Postgres)
	require.NoError(t, err)
	t.Cleanup(func() {
		if s, err := gdb.DB(); err == nil {
			_ = s.Close()
		}
	})
	logger := quietLogger(t)
	conn := testkit.Bus(t, cfg.AMQP, topology(cfg))
	pub := bus.NewPublisher(conn)
	t.Cleanup(func() { _ = pub.Close() })
	h := &harness{t: t, cfg: cfg, db: gdb, conn: conn, pub: pub, logger: logger, registry: prometheus.NewRegistry(), store: scheduler.NewStore(gdb), outbox: outbox.NewStore(gdb)}
	h.events = h.record("recorder")
	return h
}

// startDispatcher runs the scheduler's dispatcher (delayed timers and
// commands) and the outbox relay (everything published at once) until t ends.
func (h *harness) startDispatcher() {
	d := scheduler.NewDispatcher(h.cfg.Postgres.DSN, h.pub, h.conn, scheduler.DispatcherOptions{
		MainExchange: h.conn.Exchange(), MaxIdle: 200 * time.Millisecond, Workers: 2,
	}, scheduler.NewMetrics(prometheus.NewRegistry()), h.logger)
	require.NoError(h.t, d.Start(context.Background()))
	ocfg := outbox.DefaultConfig()
	ocfg.MaxIdle = 200 * time.Millisecond
	r := outbox.NewRelay(h.cfg.Postgres.DSN, h.pub, nil, h.conn.Exchange(), bus.IsRefused, ocfg, outbox.NewMetrics(prometheus.NewRegistry()), h.logger)
	require.NoError(h.t, r.Start(context.Background()))
	h.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = r.Stop(ctx)
		_ = d.Stop(ctx)
	})
}

// startCanceller runs one canceller replica until t ends and returns it.
func (h *harness) startCanceller() *erasure.Canceller {
	c, err := erasure.New(h.db, h.store, h.outbox, h.cfg.Canceller, erasure.NewMetrics(h.registry, h.db), h.logger)
	require.NoError(h.t, err)
	comp := erasure.NewComponent(h.conn, c, h.cfg.Canceller.Concurrency, h.logger)
	require.NoError(h.t, comp.Start(context.Background()))
	h.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = comp.Stop(ctx)
		require.Zero(h.t, comp.Running(), "Stop returned only once every handler had")
	})
	return c
}

// startNotifier runs the requests engineer's notifier against Mailpit.
func (h *harness) startNotifier(mp *testkit.Mailpit) {
	ncfg := h.cfg.Notify
	ncfg.SMTPHost, ncfg.SMTPPort = mp.SMTPHost, mp.SMTPPort
	n, err := notify.New(h.db, requests.NewStore(h.db, nil), h.outbox, notify.NewSMTP(ncfg), func(string, time.Time) (string, time.Time, error) {
		return "", time.Time{}, nil
	}, notify.Options{ResendAfter: time.Minute}, h.logger, prometheus.NewRegistry())
	require.NoError(h.t, err)
	c := bus.NewConsumer(h.conn, bus.ConsumerOptions{Queue: "worker.notify", Concurrency: 8}, n.Handle, h.logger)
	require.NoError(h.t, c.Start(context.Background()))
	h.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = c.Stop(ctx)
	})
}

// subject is one data subject of a test.
type subject struct {
	RequestID string
	Subject   event.Subject
}

func newSubjects(n int) []subject {
	out := make([]subject, n)
	for i := range out {
		id := uuid.NewString()
		out[i] = subject{RequestID: uuid.NewString(), Subject: event.Subject{ID: "user-" + id[:8], Email: "user-" + id[:8] + "@example.com"}}
	}
	return out
}

// storeRequests inserts the requests manager's rows (handed over), which
// the notifier reads the address from.
func (h *harness) storeRequests(ss []subject) {
	for _, s := range ss {
		require.NoError(h.t, h.db.Exec(`INSERT INTO requests (id, type, state, subject_id, subject_email, submitted_at, due_at)
			VALUES (?, 'erasure', 'handed_over', ?, ?, now(), now() + interval '1 month')`,
			s.RequestID, s.Subject.ID, s.Subject.Email).Error)
	}
}

// request publishes erasure.requested as the requests manager does.
func (h *harness) request(s subject) message.Message {
	m, err := message.New(event.TypeErasureRequested, event.ErasureRequested{RequestID: s.RequestID, Subject: s.Subject}, nil)
	require.NoError(h.t, err)
	m.CorrelationID = s.RequestID
	require.NoError(h.t, h.pub.Publish(context.Background(), m))
	return m
}

func (h *harness) erasureState(requestID string) erasure.ErasureState {
	var st erasure.ErasureState
	require.NoError(h.t, h.db.Raw(`SELECT state FROM erasures WHERE request_id = ?`, requestID).Scan(&st).Error)
	return st
}

func (h *harness) countFinished() int {
	var n int
	require.NoError(h.t, h.db.Raw(`SELECT count(*) FROM erasures WHERE state = ?`, erasure.ErasureFinished).Scan(&n).Error)
	return n
}

func (h *harness) participantState(requestID, name string) (state erasure.State, attempt int) {
	var r struct {
		State   erasure.State
		Attempt int
	}
	require.NoError(h.t, h.db.Raw(`SELECT state, attempt FROM erasure_participants WHERE request_id = ? AND participant = ?`, requestID, name).Scan(&r).Error)
	return r.State, r.Attempt
}

// recorder keeps every message consumed from one queue.
type recorder struct {
	mu   sync.Mutex
	msgs []message.Message
}

func (h *harness) record(queue string) *recorder {
	r := &recorder{}
	c := bus.NewConsumer(h.conn, bus.ConsumerOptions{Queue: queue, Concurrency: 4}, func(_ context.Context, m message.Message) error {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.msgs = append(r.msgs, m)
		return nil
	}, h.logger)
	require.NoError(h.t, c.Start(context.Background()))
	h.t.Cleanup(func() { _ = c.Stop(context.Background()) })
	return r
}

// distinct counts messages of typ with distinct message ids, per request.
func (r *recorder) distinct(typ string) map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[string]bool{}
	out := map[string]int{}
	for _, m := range r.msgs {
		if m.Type != typ || seen[m.ID] {
			continue
		}
		seen[m.ID] = true
		out[m.CorrelationID]++
	}
	return out
}

func (r *recorder) all(typ string) []message.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []message.Message
	for _, m := range r.msgs {
		if m.Type == typ {
			out = append(out, m)
		}
	}
	return out
}

func mustJSON(t testing.TB, v any) []byte {
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

// deadLetters waits until the dead-letter queue holds n messages and
// returns them, acknowledged. A plain channel: a bus consumer would refuse
// (and dead-letter again) the malformed ones.
func (h *harness) deadLetters(n int, timeout time.Duration) []amqp.Delivery {
	h.t.Helper()
	ch, err := h.conn.Channel(context.Background())
	require.NoError(h.t, err)
	defer ch.Close()
	var got []amqp.Delivery
	testkit.Eventually(h.t, timeout, func() bool {
		d, ok, err := ch.Get(h.conn.DeadLetterQueue(), true)
		require.NoError(h.t, err)
		if ok {
			got = append(got, d)
		}
		return len(got) >= n
	}, "%d dead letters, have %d", n, len(got))
	return got
}
