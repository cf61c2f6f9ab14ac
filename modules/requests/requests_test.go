package requests_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/lock"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/outbox"
	"github.com/gdpr-oss/gdpr/modules/requests"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// builder stands in for the report library in these unit tests of the state
// machine; the end-to-end tests use the real one.
type builder struct {
	mu      sync.Mutex
	builds  map[string]int
	deletes map[string]int
	build   func(ctx context.Context, id string, n int) error
}

var errSource = errors.New("source unavailable")

func newBuilder(build func(ctx context.Context, id string, n int) error) *builder {
	return &builder{builds: map[string]int{}, deletes: map[string]int{}, build: build}
}

func (b *builder) Build(ctx context.Context, id string, _ event.Subject) (requests.Report, error) {
	b.mu.Lock()
	b.builds[id]++
	n := b.builds[id]
	b.mu.Unlock()
	if b.build != nil {
		if err := b.build(ctx, id, n); err != nil {
			return requests.Report{}, err
		}
	}
	return requests.Report{ID: "r-" + id, Bytes: 42, SHA256: "abc", Rows: 1}, nil
}

func (b *builder) Delete(_ context.Context, id string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.deletes[id]++
	return nil
}

func (b *builder) Sweep(context.Context, time.Duration) error { return nil }

func (b *builder) ErrorClass(err error) string {
	if errors.Is(err, errSource) {
		return "source_unavailable"
	}
	return "internal"
}

func (b *builder) count(id string) (builds, deletes int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.builds[id], b.deletes[id]
}

type env struct {
	db      *gorm.DB
	mgr     *requests.Manager
	builder *builder
	reg     *prometheus.Registry
	locker  *lock.Locker
}

func testConfig() requests.Config {
	return requests.Config{
		Concurrency: 4, PollInterval: 50 * time.Millisecond, MaxAttempts: 3,
		BackoffBase: 50 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
		LeaseTTL: 3 * time.Second, ErasureWait: 100 * time.Millisecond,
		SweepInterval: time.Hour, SweepAge: time.Hour,
	}
}

func newEnv(t *testing.T, b *builder, mutate ...func(*requests.Config)) *env {
	t.Helper()
	gdb, _ := testkit.Postgres(t)
	rdb, prefix := testkit.Redis(t)
	cfg := testConfig()
	for _, f := range mutate {
		f(&cfg)
	}
	reg := prometheus.NewRegistry()
	locker := lock.NewLocker(rdb, prefix, testkit.Logger(t))
	mgr := requests.New(gdb, outbox.NewStore(gdb), locker, b, cfg, testkit.Logger(t), reg)
	return &env{db: gdb, mgr: mgr, builder: b, reg: reg, locker: locker}
}

func submitted(t *testing.T, typ string, subject event.Subject) message.Message {
	t.Helper()
	id := uuid.NewString()
	m, err := message.New(event.TypeRequestSubmitted, event.RequestSubmitted{
		RequestID: id, Type: typ, Subject: subject, SubmittedAt: time.Now().UTC(),
	}, nil)
	require.NoError(t, err)
	m.CorrelationID = id
	return m
}

func requestID(t *testing.T, m message.Message) string {
	var s event.RequestSubmitted
	require.NoError(t, m.Decode(&s))
	return s.RequestID
}

type row struct {
	State          requests.State
	Attempts       int
	LastErrorClass string
	SubjectID      string
	SubjectEmail   string
	HadEmail       bool
	DueAt          time.Time
	SubmittedAt    time.Time
}

func (e *env) row(t *testing.T, id string) row {
	t.Helper()
	var r row
	require.NoError(t, e.db.Raw(`SELECT state, attempts, last_error_class, subject_id, subject_email, had_email, due_at, submitted_at
		FROM requests WHERE id = ?`, id).Scan(&r).Error)
	return r
}

func (e *env) outboxCount(t *testing.T, typ, requestID string) int {
	t.Helper()
	var n int
	require.NoError(t, e.db.Raw(`SELECT count(*) FROM outbox_messages WHERE type = ? AND correlation_id = ?`, typ, requestID).Scan(&n).Error)
	return n
}

// drain runs ProcessOne until nothing is due.
func (e *env) drain(t *testing.T) {
	t.Helper()
	for {
		worked, err := e.mgr.ProcessOne(t.Context())
		require.NoError(t, err)
		if !worked {
			return
		}
	}
}

func TestReceiveStoresOnceAndEnqueuesReceived(t *testing.T) {
	t.Parallel()
	e := newEnv(t, newBuilder(nil))
	m := submitted(t, event.KindAccess, event.Subject{ID: "u1", Email: "u1@example.com"})
	id := requestID(t, m)

	require.NoError(t, e.mgr.Handle(t.Context(), m))
	require.NoError(t, e.mgr.Handle(t.Context(), m), "redelivery")
	again := m
	again.ID = uuid.NewString() // re-published by intake under a new message id
	require.NoError(t, e.mgr.Handle(t.Context(), again))

	r := e.row(t, id)
	require.Equal(t, requests.StateReceived, r.State)
	require.Equal(t, "u1@example.com", r.SubjectEmail)
	require.True(t, r.HadEmail)
	require.Equal(t, r.SubmittedAt.AddDate(0, 1, 0).UTC(), r.DueAt.UTC())
	require.Equal(t, 1, e.outboxCount(t, event.TypeRequestReceived, id))
	require.Equal(t, 1.0, counter(t, e.reg, "gdpr_requests_received_total"))
}

// counter sums every series of the counter name.
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			total += m.GetCounter().GetValue()
		}
	}
	return total
}

func TestReceiveRejectsBadMessages(t *testing.T) {
	t.Parallel()
	e := newEnv(t, newBuilder(nil))
	valid := func(mut func(*event.RequestSubmitted)) message.Message {
		s := event.RequestSubmitted{RequestID: uuid.NewString(), Type: "access", Subject: event.Subject{ID: "x"}, SubmittedAt: time.Now()}
		mut(&s)
		m, err := message.New(event.TypeRequestSubmitted, s, nil)
		require.NoError(t, err)
		return m
	}
	cases := map[string]message.Message{
		"bad json":          {ID: uuid.NewString(), Type: event.TypeRequestSubmitted, Body: []byte("{")},
		"unknown type":      {ID: uuid.NewString(), Type: "request.bogus", Body: []byte("{}")},
		"id not uuid":       valid(func(s *event.RequestSubmitted) { s.RequestID = "nope" }),
		"kind":              valid(func(s *event.RequestSubmitted) { s.Type = "delete-everything" }),
		"no subject":        valid(func(s *event.RequestSubmitted) { s.Subject = event.Subject{} }),
		"bad email":         valid(func(s *event.RequestSubmitted) { s.Subject.Email = "not an address" }),
		"dot-dot id":        valid(func(s *event.RequestSubmitted) { s.Subject.ID = ".." }),
		"dot id":            valid(func(s *event.RequestSubmitted) { s.Subject.ID = "." }),
		"id with U+202E":    valid(func(s *event.RequestSubmitted) { s.Subject.ID = "u\u202e1" }),
		"id with control":   valid(func(s *event.RequestSubmitted) { s.Subject.ID = "u\x001" }),
		"id too long":       valid(func(s *event.RequestSubmitted) { s.Subject.ID = strings.Repeat("x", event.MaxSubjectIDLen+1) }),
		"email with U+200B": valid(func(s *event.RequestSubmitted) { s.Subject.Email = "ann\u200b@example.com" }),
		"no submitted":      valid(func(s *event.RequestSubmitted) { s.SubmittedAt = time.Time{} }),
		"finished ghost": func() message.Message {
			m, err := message.New(event.TypeErasureFinished, event.ErasureFinished{RequestID: uuid.NewString()}, nil)
			require.NoError(t, err)
			return m
		}(),
	}
	for name, m := range cases {
		err := e.mgr.Handle(t.Context(), m)
		require.ErrorIs(t, err, message.ErrPermanent, name)
	}
	var n int
	require.NoError(t, e.db.Raw(`SELECT (SELECT count(*) FROM requests) + (SELECT count(*) FROM inbox) + (SELECT count(*) FROM outbox_messages) + (SELECT count(*) FROM scheduled_messages)`).Scan(&n).Error)
	require.Zero(t, n, "bad messages change nothing")
}

func TestAccessCompletesOnceWithReportReady(t *testing.T) {
	t.Parallel()
	e := newEnv(t, newBuilder(nil))
	m := submitted(t, event.KindAccess, event.Subject{ID: "u2"})
	id := requestID(t, m)
	require.NoError(t, e.mgr.Handle(t.Context(), m))
	e.drain(t)

	r := e.row(t, id)
	require.Equal(t, requests.StateCompleted, r.State)
	require.Equal(t, 1, r.Attempts, "the attempt that succeeded counts, as its log line says attempt=1")
	require.False(t, r.HadEmail, "submitted by id only")
	builds, _ := e.builder.count(id)
	require.Equal(t, 1, builds)
	require.Equal(t, 1, e.outboxCount(t, event.TypeReportReady, id))
	var reports int
	require.NoError(t, e.db.Raw(`SELECT count(*) FROM reports WHERE request_id = ?`, id).Scan(&reports).Error)
	require.Equal(t, 1, reports)
	var outcome string
	require.NoError(t, e.db.Raw(`SELECT outcome FROM request_attempts WHERE request_id = ? AND attempt = 1`, id).Scan(&outcome).Error)
	require.Equal(t, "succeeded", outcome)
	worked, err := e.mgr.ProcessOne(t.Context())
	require.NoError(t, err)
	require.False(t, worked, "a completed request is not picked again")
}

func TestFailingTwiceThenSucceedingCompletesOnThirdAttempt(t *testing.T) {
	t.Parallel()
	e := newEnv(t, newBuilder(func(_ context.Context, _ string, n int) error {
		if n <= 2 {
			return errSource
		}
		return nil
	}))
	m := submitted(t, event.KindAccess, event.Subject{ID: "u3"})
	id := requestID(t, m)
	require.NoError(t, e.mgr.Handle(t.Context(), m))
	require.NoError(t, e.mgr.Start(t.Context()))
	t.Cleanup(func() { _ = e.mgr.Stop(context.Background()) })
	testkit.Eventually(t, 20*time.Second, func() bool { return e.row(t, id).State == requests.StateCompleted }, "request completes")

	var hist []struct {
		Attempt       int
		Outcome       string
		ErrorClass    string
		StartedAt     time.Time
		FinishedAt    time.Time
		NextAttemptAt *time.Time
	}
	require.NoError(t, e.db.Raw(`SELECT attempt, outcome, error_class, started_at, finished_at, next_attempt_at
		FROM request_attempts WHERE request_id = ? ORDER BY attempt`, id).Scan(&hist).Error)
	require.Len(t, hist, 3)
	for i, h := range hist[:2] {
		require.Equal(t, "failed", h.Outcome)
		require.Equal(t, "source_unavailable", h.ErrorClass)
		require.NotNil(t, h.NextAttemptAt)
		ceiling := 50 * time.Millisecond << i
		require.LessOrEqual(t, h.NextAttemptAt.Sub(h.FinishedAt), ceiling+10*time.Millisecond, "backoff within its exponential ceiling")
		require.False(t, hist[i+1].StartedAt.Before(*h.NextAttemptAt), "attempt %d waited for its backoff", i+2)
	}
	require.Equal(t, "succeeded", hist[2].Outcome)
	require.Equal(t, 3, e.row(t, id).Attempts, "two failed attempts and the one that succeeded")
	_, deletes := e.builder.count(id)
	require.Equal(t, 2, deletes, "each failed attempt deletes any partial report")
	require.Equal(t, 2.0, counter(t, e.reg, "gdpr_retries_total"))
	require.Equal(t, 1, e.outboxCount(t, event.TypeReportReady, id))
}

func TestAlwaysFailingEndsFailed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, newBuilder(func(context.Context, string, int) error { return errSource }))
	m := submitted(t, event.KindAccess, event.Subject{ID: "u4"})
	id := requestID(t, m)
	require.NoError(t, e.mgr.Handle(t.Context(), m))
	require.NoError(t, e.mgr.Start(t.Context()))
	t.Cleanup(func() { _ = e.mgr.Stop(context.Background()) })
	testkit.Eventually(t, 20*time.Second, func() bool { return e.row(t, id).State == requests.StateFailed }, "request fails")

	r := e.row(t, id)
	require.Equal(t, 3, r.Attempts)
	require.Equal(t, "source_unavailable", r.LastErrorClass)
	builds, deletes := e.builder.count(id)
	require.Equal(t, 3, builds)
	require.Equal(t, 3, deletes)
	require.Equal(t, 1, e.outboxCount(t, event.TypeRequestFailed, id))
	require.Zero(t, e.outboxCount(t, event.TypeReportReady, id))
	require.Equal(t, 1.0, counter(t, e.reg, "gdpr_failures_total"))
}

func TestWorkerThatLostItsLeaseCannotCommit(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	e := newEnv(t, newBuilder(func(ctx context.Context, _ string, n int) error {
		if n == 1 {
			started <- struct{}{}
			<-release // a long GC pause or a frozen VM
		}
		return nil
	}), func(c *requests.Config) { c.LeaseTTL = 30 * time.Second })
	m := submitted(t, event.KindAccess, event.Subject{ID: "u5"})
	id := requestID(t, m)
	require.NoError(t, e.mgr.Handle(t.Context(), m))

	first := make(chan error, 1)
	go func() {
		_, err := e.mgr.ProcessOne(t.Context())
		first <- err
	}()
	<-started
	// The paused worker's lease and lock run out; a second worker takes over.
	require.NoError(t, e.db.Exec(`UPDATE requests SET lease_until = now() - interval '1s' WHERE id = ?`, id).Error)
	second := newEnvSameDB(t, e)
	worked, err := second.ProcessOne(t.Context())
	require.NoError(t, err)
	require.True(t, worked)
	require.Equal(t, requests.StateCompleted, e.row(t, id).State)

	close(release)
	err = <-first
	require.ErrorIs(t, err, lock.ErrFenced, "the paused worker's commit is fenced off")
	require.Equal(t, 1, e.outboxCount(t, event.TypeReportReady, id))
}

// newEnvSameDB is a second manager on the same database with its own Redis
// prefix, so it does not see the first one's mutex (as if it had expired).
func newEnvSameDB(t *testing.T, e *env) *requests.Manager {
	rdb, prefix := testkit.Redis(t)
	return requests.New(e.db, outbox.NewStore(e.db), lock.NewLocker(rdb, prefix, testkit.Logger(t)), e.builder, testConfig(), testkit.Logger(t), prometheus.NewRegistry())
}

func TestAbandonedRequestIsPickedUpAgain(t *testing.T) {
	t.Parallel()
	e := newEnv(t, newBuilder(nil))
	m := submitted(t, event.KindAccess, event.Subject{ID: "u6"})
	id := requestID(t, m)
	require.NoError(t, e.mgr.Handle(t.Context(), m))
	// A worker claimed it and died: processing, lease expired, attempt 1 running.
	require.NoError(t, e.db.Exec(`UPDATE requests SET state = 'processing', lease_token = 7, lease_until = now() - interval '1s' WHERE id = ?`, id).Error)
	require.NoError(t, e.db.Exec(`INSERT INTO request_attempts (request_id, attempt) VALUES (?, 1)`, id).Error)
	e.drain(t)

	r := e.row(t, id)
	require.Equal(t, requests.StateCompleted, r.State)
	require.Equal(t, 2, r.Attempts, "the abandoned attempt and the one that succeeded")
	var outcomes []string
	require.NoError(t, e.db.Raw(`SELECT outcome FROM request_attempts WHERE request_id = ? ORDER BY attempt`, id).Scan(&outcomes).Error)
	require.Equal(t, []string{"abandoned", "succeeded"}, outcomes)
}

func TestLockHeldElsewhereIsContention(t *testing.T) {
	t.Parallel()
	e := newEnv(t, newBuilder(nil))
	m := submitted(t, event.KindAccess, event.Subject{ID: "u7"})
	id := requestID(t, m)
	require.NoError(t, e.mgr.Handle(t.Context(), m))
	held, err := e.locker.Obtain(t.Context(), "request:"+id, 10*time.Second)
	require.NoError(t, err)
	worked, err := e.mgr.ProcessOne(t.Context())
	require.NoError(t, err)
	require.False(t, worked)
	require.Equal(t, requests.StateReceived, e.row(t, id).State)
	require.Equal(t, 1.0, counter(t, e.reg, "gdpr_lock_contention_total"))
	require.NoError(t, held.Release(t.Context()))
	e.drain(t)
	require.Equal(t, requests.StateCompleted, e.row(t, id).State)
}

func TestErasureWaitsForOpenAccessReportThenHandsOverOnce(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	building := make(chan struct{}, 1)
	e := newEnv(t, newBuilder(func(context.Context, string, int) error {
		building <- struct{}{}
		<-release
		return nil
	}))
	subject := event.Subject{ID: "u8", Email: "u8@example.com"}
	access := submitted(t, event.KindAccess, subject)
	require.NoError(t, e.mgr.Handle(t.Context(), access))
	erasure := submitted(t, event.KindErasure, subject)
	erasureID := requestID(t, erasure)
	require.NoError(t, e.mgr.Handle(t.Context(), erasure))

	done := make(chan error, 1)
	go func() {
		_, err := e.mgr.ProcessOne(t.Context()) // picks the older access request
		done <- err
	}()
	<-building
	require.NoError(t, e.db.Exec(`UPDATE requests SET next_attempt_at = now() WHERE id = ?`, erasureID).Error)
	worked, err := e.mgr.ProcessOne(t.Context())
	require.NoError(t, err)
	require.True(t, worked)
	require.Equal(t, requests.StateReceived, e.row(t, erasureID).State, "erasure waits while the report is built")
	require.Zero(t, e.outboxCount(t, event.TypeErasureRequested, erasureID))

	close(release)
	require.NoError(t, <-done)
	testkit.Eventually(t, 10*time.Second, func() bool {
		_, err := e.mgr.ProcessOne(t.Context())
		require.NoError(t, err)
		return e.row(t, erasureID).State == requests.StateHandedOver
	}, "erasure handed over after the report")
	require.Equal(t, 1, e.outboxCount(t, event.TypeErasureRequested, erasureID))
	require.Equal(t, 1, e.row(t, erasureID).Attempts, "the hand-over counts; waiting for the report does not")

	fin, err := message.New(event.TypeErasureFinished, event.ErasureFinished{RequestID: erasureID}, nil)
	require.NoError(t, err)
	require.NoError(t, e.mgr.Handle(t.Context(), fin))
	require.NoError(t, e.mgr.Handle(t.Context(), fin))
	r := e.row(t, erasureID)
	require.Equal(t, requests.StateCompleted, r.State)
	require.Empty(t, r.SubjectID)
	require.Equal(t, subject.Email, r.SubjectEmail, "kept until the deleted email is recorded")
	require.Equal(t, 1, e.outboxCount(t, event.TypeErasureRequested, erasureID))
}

// TestFinishedErasureKeepsTheAddressUntilItsEmailIsRecorded: erasure.finished
// may be handled before the notifier read the address for the "deleted"
// email (they are published together when there is no email system). The
// id goes at once; the address only once that email is sent or skipped.
func TestFinishedErasureKeepsTheAddressUntilItsEmailIsRecorded(t *testing.T) {
	t.Parallel()
	e := newEnv(t, newBuilder(nil))
	cases := []struct {
		notification string // state of the deleted email's row; "" for none
		scrubbed     bool
	}{
		{"", false},
		{"sending", false},
		{"sent", true},
		{"skipped", true},
	}
	for _, tc := range cases {
		m := submitted(t, event.KindErasure, event.Subject{ID: "u-fin", Email: "fin@example.com"})
		id := requestID(t, m)
		require.NoError(t, e.mgr.Handle(t.Context(), m))
		if tc.notification != "" {
			require.NoError(t, e.db.Exec(`INSERT INTO notifications (key, request_id, template, message_id, state)
				VALUES (?, ?, 'erasure_completed', 'x', ?)`, "erasure_completed:"+id, id, tc.notification).Error)
		}
		fin, err := message.New(event.TypeErasureFinished, event.ErasureFinished{RequestID: id}, nil)
		require.NoError(t, err)
		require.NoError(t, e.mgr.Handle(t.Context(), fin))
		r := e.row(t, id)
		require.Equal(t, requests.StateCompleted, r.State, tc.notification)
		require.Empty(t, r.SubjectID, tc.notification)
		if tc.scrubbed {
			require.Empty(t, r.SubjectEmail, tc.notification)
		} else {
			require.Equal(t, "fin@example.com", r.SubjectEmail, tc.notification)
		}
	}
}

func TestPoolProcessesEachRequestOnce(t *testing.T) {
	t.Parallel()
	var inFlight, maxInFlight atomic.Int64
	b := newBuilder(func(context.Context, string, int) error {
		n := inFlight.Add(1)
		for {
			old := maxInFlight.Load()
			if n <= old || maxInFlight.CompareAndSwap(old, n) {
				break
			}
		}
		time.Sleep(2 * time.Millisecond) //nolint:forbidigo // simulated work, not a wait for an effect
		inFlight.Add(-1)
		return nil
	})
	e := newEnv(t, b)
	second := newEnvSameDB(t, e) // a second process on the same database
	const n = 60
	ids := make([]string, n)
	for i := range ids {
		m := submitted(t, event.KindAccess, event.Subject{ID: "p" + uuid.NewString()})
		ids[i] = requestID(t, m)
		require.NoError(t, e.mgr.Handle(t.Context(), m))
	}
	require.NoError(t, e.mgr.Start(t.Context()))
	require.NoError(t, second.Start(t.Context()))
	t.Cleanup(func() {
		_ = e.mgr.Stop(context.Background())
		_ = second.Stop(context.Background())
	})
	testkit.Eventually(t, 30*time.Second, func() bool {
		var c int
		require.NoError(t, e.db.Raw(`SELECT count(*) FROM requests WHERE state = 'completed'`).Scan(&c).Error)
		return c == n
	}, "all complete")
	for _, id := range ids {
		builds, _ := b.count(id)
		require.Equal(t, 1, builds, "request %s built once", id)
		require.Equal(t, 1, e.outboxCount(t, event.TypeReportReady, id))
	}
	require.Greater(t, maxInFlight.Load(), int64(1), "workers ran concurrently")
}

func TestBackoffIsFullJitterUnderExponentialCeiling(t *testing.T) {
	t.Parallel()
	base, limit := 100*time.Millisecond, time.Second
	cases := []struct {
		attempt int
		ceiling time.Duration
	}{{1, 100 * time.Millisecond}, {2, 200 * time.Millisecond}, {3, 400 * time.Millisecond}, {4, 800 * time.Millisecond}, {5, time.Second}, {30, time.Second}}
	for _, c := range cases {
		var maxSeen time.Duration
		for range 2000 {
			d := requests.Backoff(c.attempt, base, limit)
			require.GreaterOrEqual(t, d, time.Duration(0))
			require.LessOrEqual(t, d, c.ceiling, "attempt %d", c.attempt)
			maxSeen = max(maxSeen, d)
		}
		require.Greater(t, maxSeen, c.ceiling/2, "attempt %d uses its whole range", c.attempt)
	}
}

// TestIdlePoolLooksForWorkOncePerInterval starts a pool of 16 idle workers:
// one of them looks for due requests every poll interval and the others
// wait to be woken, so the database sees about one transaction per
// interval (16 per interval when every worker polled), and a request that
// arrives is still picked up at once.
func TestIdlePoolLooksForWorkOncePerInterval(t *testing.T) {
	t.Parallel()
	e := newEnv(t, newBuilder(nil), func(c *requests.Config) { c.Concurrency = 16 })
	commits := func() int64 {
		var n int64
		require.NoError(t, e.db.Exec(`SELECT pg_stat_clear_snapshot()`).Error)
		require.NoError(t, e.db.Raw(`SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()`).Scan(&n).Error)
		return n
	}
	require.NoError(t, e.mgr.Start(t.Context()))
	t.Cleanup(func() { _ = e.mgr.Stop(context.Background()) })
	const window = 3 * time.Second
	<-time.After(time.Second) // statistics reach pg_stat_database up to a second late
	before := commits()
	<-time.After(window)
	idle := commits() - before
	intervals := int64(window / testConfig().PollInterval)
	t.Logf("%d transactions in %s idle (%d poll intervals)", idle, window, intervals)
	// Statistics arrive in steps of up to a second: allow twice the intervals.
	require.Less(t, idle, 2*intervals, "idle workers poll one at a time")

	m := submitted(t, event.KindAccess, event.Subject{ID: "idle-" + uuid.NewString()})
	require.NoError(t, e.mgr.Handle(t.Context(), m))
	testkit.Eventually(t, 10*time.Second, func() bool {
		return e.row(t, requestID(t, m)).State == "completed"
	}, "the request is picked up")
}

// TestRetriedRequestKeepsItsEarlierAttempts: an operator's retry starts a
// new generation of attempts (requests.attempts counts from zero again), and
// the attempts of the run that failed stay in the history the officer's
// detail shows, numbered within their generation, not overwritten.
func TestRetriedRequestKeepsItsEarlierAttempts(t *testing.T) {
	t.Parallel()
	e := newEnv(t, newBuilder(func(_ context.Context, _ string, n int) error {
		if n <= 3 {
			return errSource
		}
		return nil
	}))
	store := requests.NewStore(e.db, nil)
	m := submitted(t, event.KindAccess, event.Subject{ID: "u-retry"})
	id := requestID(t, m)
	require.NoError(t, e.mgr.Handle(t.Context(), m))
	require.NoError(t, e.mgr.Start(t.Context()))
	t.Cleanup(func() { _ = e.mgr.Stop(context.Background()) })
	testkit.Eventually(t, 20*time.Second, func() bool { return e.row(t, id).State == requests.StateFailed }, "request fails")
	_, before, err := store.Detail(t.Context(), id)
	require.NoError(t, err)
	require.Len(t, before, 3)

	_, changed, err := store.Retry(t.Context(), id, nil)
	require.NoError(t, err)
	require.True(t, changed)
	testkit.Eventually(t, 20*time.Second, func() bool { return e.row(t, id).State == requests.StateCompleted }, "the retried request completes")

	r, attempts, err := store.Detail(t.Context(), id)
	require.NoError(t, err)
	require.Equal(t, 1, r.Attempts, "attempts counted from zero again: the retry succeeded at its first")
	require.Equal(t, 1, r.Retries)
	type got struct {
		Generation, Attempt int
		Outcome             string
	}
	var seen []got
	for _, a := range attempts {
		seen = append(seen, got{a.Generation, a.Attempt, a.Outcome})
	}
	require.Equal(t, []got{{0, 1, "failed"}, {0, 2, "failed"}, {0, 3, "failed"}, {1, 1, "succeeded"}}, seen)
	for i, a := range attempts[:3] {
		require.Equal(t, before[i].StartedAt, a.StartedAt, "attempt %d of the first run is unchanged", i+1)
		require.Equal(t, "source_unavailable", a.ErrorClass)
	}
}
