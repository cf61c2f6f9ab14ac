package notify_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/notify"
	"github.com/gdpr-oss/gdpr/modules/outbox"
	"github.com/gdpr-oss/gdpr/modules/requests"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// lockWaiters counts the sessions of the test database waiting for a lock.
func lockWaiters(t *testing.T, gdb *gorm.DB) int {
	var n int
	require.NoError(t, gdb.Raw(`SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n).Error)
	return n
}

// twoWorkers is the setup both failure tests share: a database and an
// SMTP server of their own, two notifiers consuming one worker.notify queue
// of this test's prefix, each on its own AMQP connection (named
// "<prefix>-worker<i>", so that the test can close them), a publisher, and
// total completed access requests with an address each.
type twoWorkers struct {
	gdb       *gorm.DB
	mp        *testkit.Mailpit
	amqp      bus.Config
	publisher *bus.Publisher
	ids       []string
	// stop stops both consumers, waiting for their handlers.
	stop func()
}

func startTwoWorkers(t *testing.T, total int, smtpCfg func(*testkit.Mailpit) notify.Config, opts notify.Options, retryBackoff time.Duration) *twoWorkers {
	t.Helper()
	w := &twoWorkers{mp: testkit.StartMailpit(t), amqp: testkit.AMQP(t)}
	w.gdb, _ = testkit.Postgres(t)
	topo := bus.Topology{Queues: []bus.Queue{{Name: notify.Consumer, Bindings: []string{event.TypeReportReady}}}}
	logger := testkit.Logger(t)
	dial := func(name string) *bus.Conn {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		conn, err := bus.Dial(ctx, w.amqp, "gdpr-test-"+w.amqp.Prefix+"-"+name, topo, logger)
		require.NoError(t, err)
		t.Cleanup(func() { _ = conn.Close() })
		return conn
	}
	t.Cleanup(func() { testkit.DeleteTopology(t, w.amqp, topo) })
	w.publisher = bus.NewPublisher(dial("publisher"))
	t.Cleanup(func() { _ = w.publisher.Close() })

	var consumers []*bus.Consumer
	for i := range 2 {
		sender := notify.NewSMTP(smtpCfg(w.mp))
		t.Cleanup(func() { _ = sender.Close() })
		n, err := notify.New(w.gdb, requests.NewStore(w.gdb, nil), outbox.NewStore(w.gdb), sender, link, opts, logger, nil)
		require.NoError(t, err)
		c := bus.NewConsumer(dial(fmt.Sprintf("worker%d", i)),
			bus.ConsumerOptions{Queue: notify.Consumer, Concurrency: 4, RetryBackoff: retryBackoff}, n.Handle, logger)
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		require.NoError(t, c.Start(ctx))
		cancel()
		consumers = append(consumers, c)
	}
	w.stop = func() {
		for _, c := range consumers {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_ = c.Stop(ctx)
			cancel()
		}
	}
	t.Cleanup(w.stop)

	w.ids = make([]string, total)
	for i := range w.ids {
		w.ids[i] = uuid.NewString()
		require.NoError(t, w.gdb.Exec(`INSERT INTO requests (id, type, state, subject_id, subject_email, submitted_at, due_at)
			VALUES (?, 'access', 'completed', 's', ?, now(), now() + interval '1 month')`,
			w.ids[i], fmt.Sprintf("s%d@example.com", i)).Error)
	}
	return w
}

func (w *twoWorkers) publish(t *testing.T, id string) {
	t.Helper()
	require.NoError(t, w.publisher.Publish(t.Context(), reportReady(t, id)))
}

// waitAllSent waits until every email is recorded as sent, then stops the
// consumers: stopping waits for every handler, so no SMTP conversation is
// still open when the server is asked what it got.
func (w *twoWorkers) waitAllSent(t *testing.T) {
	t.Helper()
	testkit.Eventually(t, 3*time.Minute, func() bool {
		var sent int
		require.NoError(t, w.gdb.Raw(`SELECT count(*) FROM notifications WHERE state = 'sent'`).Scan(&sent).Error)
		return sent == len(w.ids)
	}, "every email is recorded as sent")
	w.stop()
}

// received counts the messages the SMTP server got, by Message-ID.
func (w *twoWorkers) received(t *testing.T) (perMessageID map[string]int, total int) {
	t.Helper()
	msgs, err := w.mp.Messages(t.Context())
	require.NoError(t, err)
	perMessageID = map[string]int{}
	for _, m := range msgs {
		perMessageID[m.MessageID]++
	}
	return perMessageID, len(msgs)
}

// TestNotifierUnderConnectionLoss: two workers consume worker.notify while
// their AMQP connections are closed again and again under 500 report emails.
// Each loss is made to land where a delivery has not yet recorded its
// 'sending' row (its first transaction is held up): the broker hands the
// message to the other worker at once, so two deliveries of one email are
// in that first transaction together. Every email must still reach the SMTP
// server exactly once.
func TestNotifierUnderConnectionLoss(t *testing.T) {
	t.Parallel()
	const total, losses = 500, 4
	// ResendAfter far beyond the test's length: any resend here is a
	// duplicate of a send whose outcome was known.
	w := startTwoWorkers(t, total, smtpConfig,
		notify.Options{ResendAfter: time.Hour, MessageIDDomain: "test.invalid"}, 50*time.Millisecond)
	gdb, ids := w.gdb, w.ids

	chunk := total / losses
	for round := range losses {
		for _, id := range ids[round*chunk : (round+1)*chunk-1] {
			w.publish(t, id)
		}
		trapped := ids[(round+1)*chunk-1]
		// An uncommitted row under the trapped email's key holds up the
		// first transaction of each of its deliveries, as a slow database
		// would: none of them has recorded anything yet.
		hold := gdb.Begin()
		require.NoError(t, hold.Error)
		require.NoError(t, hold.Exec(`INSERT INTO notifications (key, request_id, template, message_id, state)
			VALUES (?, ?, 'report_ready', 'held', 'sending')`, "report_ready:rep-"+trapped, trapped).Error)
		w.publish(t, trapped)
		testkit.Eventually(t, time.Minute, func() bool { return lockWaiters(t, gdb) >= 1 },
			"round %d: a worker is handling the trapped email", round)
		// Only this test's workers carry its prefix and "-worker" in their names.
		require.Positive(t, testkit.CloseRabbitConnections(t, w.amqp.Prefix+"-worker"), "round %d: the workers' connections were found", round)
		testkit.Eventually(t, time.Minute, func() bool { return lockWaiters(t, gdb) >= 2 },
			"round %d: the broker redelivered the trapped email while its first delivery was still undecided", round)
		require.NoError(t, hold.Rollback().Error)
	}

	w.waitAllSent(t)
	perMessageID, got := w.received(t)
	var duplicates []string
	for id, n := range perMessageID {
		if n > 1 {
			duplicates = append(duplicates, fmt.Sprintf("%s ×%d", id, n))
		}
	}
	require.Empty(t, duplicates, "emails the SMTP server got more than once")
	for _, id := range ids {
		require.Equal(t, 1, perMessageID["report-ready."+id+"@test.invalid"], "email of %s", id)
	}
	require.Equal(t, total, got)
	t.Logf("%d emails for %d requests after %d connection losses", got, total, losses)
}

// TestNotifierWhenTheSMTPServerIsKilledMidSession: two notifiers with
// pooled SMTP sessions send 300 report emails while the SMTP server is
// killed (SIGKILL, mid-conversation for the sessions in use and under the
// idle ones) and started again on its ports, twice. Every email must reach
// the server; one may arrive twice only where the server's verdict was
// lost and the notifier resent it after notify.resend_after with the same
// Message-ID (docs/architecture.md, invariant 2's one exception), so a
// duplicate's row must show more than one send.
func TestNotifierWhenTheSMTPServerIsKilledMidSession(t *testing.T) {
	t.Parallel()
	const total = 300
	smtpCfg := func(mp *testkit.Mailpit) notify.Config {
		c := smtpConfig(mp)
		c.Timeout = 2 * time.Second
		return c
	}
	w := startTwoWorkers(t, total, smtpCfg,
		notify.Options{ResendAfter: 3 * time.Second, MessageIDDomain: "test.invalid"}, 100*time.Millisecond)
	for _, id := range w.ids {
		w.publish(t, id)
	}
	for _, at := range []int{total / 4, total / 2} {
		testkit.Eventually(t, 2*time.Minute, func() bool {
			n, err := w.mp.Count(t.Context())
			return err == nil && n >= at
		}, "the server got %d emails", at)
		w.mp.Kill()
		w.mp.Restart()
	}

	w.waitAllSent(t)
	perMessageID, got := w.received(t)
	var sends []struct {
		RequestID string
		Sends     int
	}
	require.NoError(t, w.gdb.Raw(`SELECT request_id, sends FROM notifications`).Scan(&sends).Error)
	resent := 0
	for _, row := range sends {
		n := perMessageID["report-ready."+row.RequestID+"@test.invalid"]
		require.GreaterOrEqual(t, n, 1, "email of %s reached the server", row.RequestID)
		require.LessOrEqual(t, n, row.Sends, "email of %s arrived more often than it was sent", row.RequestID)
		if row.Sends > 1 {
			resent++
		}
	}
	require.Len(t, sends, total)
	t.Logf("%d emails for %d requests after 2 SMTP server kills; %d sent more than once", got, total, resent)
}
