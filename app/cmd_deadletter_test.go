package app

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"
	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/config"
	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/requests"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

func TestDeadLettersListAndRequeueCommands(t *testing.T) {
	t.Parallel()
	cfg := config.Default()
	cfg.AMQP = testkit.AMQP(t)
	conn := testkit.Bus(t, cfg.AMQP, topology(cfg))
	run := func(args ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		code := ExecuteArgs(t.Context(), args, &stdout, &stderr, []string{
			"GDPR_AMQP_URL=" + cfg.AMQP.URL, "GDPR_AMQP_PREFIX=" + cfg.AMQP.Prefix,
		})
		return code, stdout.String(), stderr.String()
	}

	// Two dead letters as a consumer leaves them: one from the requests
	// manager's queue, one from the notifier's.
	ch, err := conn.Channel(t.Context())
	require.NoError(t, err)
	defer ch.Close()
	for id, queue := range map[string]string{"msg-requests": "worker.requests", "msg-notify": "worker.notify"} {
		require.NoError(t, ch.PublishWithContext(t.Context(), conn.DeadLetterExchange(), "", false, false, amqp.Publishing{
			MessageId: id, Type: "request.submitted", CorrelationId: "req-" + id, Body: []byte(`{}`),
			Headers: amqp.Table{
				bus.HeaderDeadLetterQueue: queue, bus.HeaderDeadLetterClass: bus.ReasonRetryExpired,
				bus.HeaderDeadLetterReason: "failing since yesterday: database unavailable",
			},
		}))
	}
	testkit.Eventually(t, 10*time.Second, func() bool {
		q, err := ch.QueueDeclarePassive(conn.DeadLetterQueue(), true, false, false, false, nil)
		require.NoError(t, err)
		return q.Messages == 2
	}, "two dead letters")

	code, out, errOut := run("dead-letters", "list")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "MESSAGE ID")
	require.Regexp(t, `msg-requests\s+request.submitted\s+req-msg-requests\s+worker.requests\s+retry_expired\s+failing since yesterday`, out)
	require.Regexp(t, `msg-notify\s+.*worker.notify`, out)

	code, out, errOut = run("dead-letters", "requeue", "--queue", "worker.requests")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "requeued 1\n", out)
	d, ok, err := ch.Get(conn.QueueName("worker.requests"), true)
	require.NoError(t, err)
	require.True(t, ok, "the message is back in its queue")
	require.Equal(t, "msg-requests", d.MessageId)
	require.NotContains(t, d.Headers, bus.HeaderDeadLetterReason, "back with a clean slate")

	code, out, _ = run("dead-letters", "list")
	require.Equal(t, 0, code)
	require.NotContains(t, out, "msg-requests")
	require.Contains(t, out, "msg-notify", "the other queue's dead letter stays")

	code, _, errOut = run("dead-letters", "requeue", "--limit", "0")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "--limit must be >= 1")
}

// TestDeadLetterPurgeAndRetention: `gdpr dead-letters purge` removes
// exactly what its filters select (--request, --older-than, both at once)
// and counts it; the retention sweeper's
// dead-letter step removes those of an erased request at once and the
// others once retention.dead_letters_for passed.
func TestDeadLetterPurgeAndRetention(t *testing.T) {
	t.Parallel()
	cfg := config.Default()
	cfg.AMQP = testkit.AMQP(t)
	gdb, dsn := testkit.Postgres(t)
	conn := testkit.Bus(t, cfg.AMQP, topology(cfg))
	run := func(args ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		code := ExecuteArgs(t.Context(), args, &stdout, &stderr, []string{
			"GDPR_AMQP_URL=" + cfg.AMQP.URL, "GDPR_AMQP_PREFIX=" + cfg.AMQP.Prefix, "GDPR_POSTGRES_DSN=" + dsn,
		})
		return code, stdout.String(), stderr.String()
	}
	f := newDeadLetterFixture(t, conn, gdb)
	erased, other, now := f.erased, f.other, f.now
	f.deadLetter("dl-old", other, now.Add(-20*24*time.Hour))
	f.deadLetter("dl-request", "req-purge-me", now)
	f.deadLetter("dl-erased", erased, now)
	f.deadLetter("dl-young", other, now)
	waitCount := func(n int) {
		testkit.Eventually(t, 10*time.Second, func() bool { return f.count() == n }, "%d dead letters", n)
	}
	waitCount(4)

	code, _, errOut := run("dead-letters", "purge")
	require.Equal(t, 2, code, "a purge needs a filter")
	require.Contains(t, errOut, "--older-than")
	code, out, errOut := run("dead-letters", "purge", "--request", "req-purge-me", "--dry-run")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "would remove dl-request")
	require.Contains(t, out, "would purge 1")
	waitCount(4)
	code, out, errOut = run("dead-letters", "purge", "--request", "req-purge-me")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "removed dl-request")
	require.Contains(t, out, "purged 1\n")
	waitCount(3)

	// --older-than alone selects by age; with --request both must hold.
	code, out, errOut = run("dead-letters", "purge", "--older-than", "240h", "--dry-run")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "would remove dl-old")
	require.Contains(t, out, "would purge 1")
	code, out, errOut = run("dead-letters", "purge", "--older-than", "240h", "--request", erased)
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "purged 0\n", out, "dl-erased is too young, dl-old is another request's")
	waitCount(3)

	store := requests.NewStore(gdb, nil)
	step := deadLetterStep(cfg, conn, store)
	removed, err := step.Run(t.Context(), now, 100, false)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"dl-old", "dl-erased"}, removed, "past dead_letters_for, and the erased request's")
	waitCount(1)
	removed, err = step.Run(t.Context(), now.Add(cfg.Retention.DeadLettersFor+time.Hour), 100, false)
	require.NoError(t, err)
	require.Equal(t, []string{"dl-young"}, removed)
	waitCount(0)
}

// TestDeadLetterRetentionFindsErasedRequestsBehindTheQueueHead: the
// retention step purges an erased request's dead letter at once wherever it
// sits in the queue. It looked only at the first `limit` dead letters, so
// one behind a batch of others waited for retention.dead_letters_for.
func TestDeadLetterRetentionFindsErasedRequestsBehindTheQueueHead(t *testing.T) {
	t.Parallel()
	cfg := config.Default()
	cfg.AMQP = testkit.AMQP(t)
	gdb, _ := testkit.Postgres(t)
	conn := testkit.Bus(t, cfg.AMQP, topology(cfg))
	f := newDeadLetterFixture(t, conn, gdb)
	const limit, ahead = 3, 7
	for i := range ahead + 1 {
		id, requestID := fmt.Sprintf("dl-other-%d", i), f.other
		if i == ahead {
			id, requestID = "dl-erased-behind", f.erased
		}
		f.deadLetter(id, requestID, f.now)
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return f.count() == ahead+1 }, "%d dead letters", ahead+1)

	step := deadLetterStep(cfg, conn, requests.NewStore(gdb, nil))
	removed, err := step.Run(t.Context(), f.now, limit, false)
	require.NoError(t, err)
	require.Equal(t, []string{"dl-erased-behind"}, removed, "the erased request's dead letter, behind %d others", ahead)
	testkit.Eventually(t, 10*time.Second, func() bool { return f.count() == ahead }, "only the others stay")
}

// deadLetterFixture is a test's dead-letter queue beside a database with
// one request whose subject was erased (erased) and the id of another's
// (other).
type deadLetterFixture struct {
	t             *testing.T
	conn          *bus.Conn
	ch            *amqp.Channel
	erased, other string
	now           time.Time
}

func newDeadLetterFixture(t *testing.T, conn *bus.Conn, gdb *gorm.DB) *deadLetterFixture {
	t.Helper()
	ch, err := conn.Channel(t.Context())
	require.NoError(t, err)
	t.Cleanup(func() { _ = ch.Close() })
	f := &deadLetterFixture{t: t, conn: conn, ch: ch, erased: uuid.NewString(), other: uuid.NewString(), now: time.Now().UTC()}
	require.NoError(t, gdb.Exec(`INSERT INTO requests (id, type, state, submitted_at, due_at, completed_at, erased_by, pii_scrubbed_at)
		VALUES (?, 'access', 'completed', ?, ?, ?, ?, ?)`, f.erased, f.now, f.now.Add(time.Hour), f.now, uuid.NewString(), f.now).Error)
	return f
}

// deadLetter puts message id of requestID into the dead-letter queue as the
// consumer would have dead-lettered it at at.
func (f *deadLetterFixture) deadLetter(id, requestID string, at time.Time) {
	f.t.Helper()
	require.NoError(f.t, f.ch.PublishWithContext(f.t.Context(), f.conn.DeadLetterExchange(), "", false, false, amqp.Publishing{
		MessageId: id, Type: "request.submitted", CorrelationId: requestID, Body: []byte(`{}`),
		Headers: amqp.Table{
			bus.HeaderDeadLetterQueue: "worker.requests", bus.HeaderDeadLetterClass: bus.ReasonPoison,
			bus.HeaderDeadLetterReason: "bad", bus.HeaderDeadLetterAt: at.Format(time.RFC3339Nano),
		},
	}))
}

// count is how many dead letters the queue holds.
func (f *deadLetterFixture) count() int {
	f.t.Helper()
	q, err := f.ch.QueueDeclarePassive(f.conn.DeadLetterQueue(), true, false, false, false, nil)
	require.NoError(f.t, err)
	return q.Messages
}
