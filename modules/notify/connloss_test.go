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

// TestNotifierUnderConnectionLoss: two workers consume worker.notify while
// their AMQP connections are closed again and again under 500 report emails.
// Each loss is made to land where a delivery has not yet recorded its
// 'sending' row (its first transaction is held up): the broker hands the
// message to the other worker at once, so two deliveries of one email are
// in that first transaction together. Every email must still reach the SMTP
// server exactly once.
func TestNotifierUnderConnectionLoss(t *testing.T) {
	t.Parallel()
	gdb, _ := testkit.Postgres(t)
	mp := testkit.StartMailpit(t)
	cfg := testkit.AMQP(t)
	topo := bus.Topology{Queues: []bus.Queue{{Name: notify.Consumer, Bindings: []string{event.TypeReportReady}}}}
	logger := testkit.Logger(t)

	dial := func(name string) *bus.Conn {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		conn, err := bus.Dial(ctx, cfg, "gdpr-test-"+cfg.Prefix+"-"+name, topo, logger)
		require.NoError(t, err)
		t.Cleanup(func() { _ = conn.Close() })
		return conn
	}
	t.Cleanup(func() { testkit.DeleteTopology(t, cfg, topo) })
	publisher := bus.NewPublisher(dial("publisher"))
	t.Cleanup(func() { _ = publisher.Close() })

	var consumers []*bus.Consumer
	for i := range 2 {
		n, err := notify.New(gdb, requests.NewStore(gdb, nil), outbox.NewStore(gdb), notify.NewSMTP(smtpConfig(mp)), link,
			// Far beyond the test's length: any resend here is a duplicate
			// of a send whose outcome was known.
			notify.Options{ResendAfter: time.Hour, MessageIDDomain: "test.invalid"}, logger, nil)
		require.NoError(t, err)
		c := bus.NewConsumer(dial(fmt.Sprintf("worker%d", i)),
			bus.ConsumerOptions{Queue: notify.Consumer, Concurrency: 4, RetryBackoff: 50 * time.Millisecond}, n.Handle, logger)
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		require.NoError(t, c.Start(ctx))
		cancel()
		consumers = append(consumers, c)
	}
	stop := func() {
		for _, c := range consumers {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_ = c.Stop(ctx)
			cancel()
		}
	}
	t.Cleanup(stop)

	const total, losses = 500, 4
	ids := make([]string, total)
	for i := range ids {
		ids[i] = uuid.NewString()
		require.NoError(t, gdb.Exec(`INSERT INTO requests (id, type, state, subject_id, subject_email, submitted_at, due_at)
			VALUES (?, 'access', 'completed', 's', ?, now(), now() + interval '1 month')`,
			ids[i], fmt.Sprintf("s%d@example.com", i)).Error)
	}
	publish := func(id string) {
		require.NoError(t, publisher.Publish(t.Context(), reportReady(t, id)))
	}

	chunk := total / losses
	for round := range losses {
		for _, id := range ids[round*chunk : (round+1)*chunk-1] {
			publish(id)
		}
		trapped := ids[(round+1)*chunk-1]
		// An uncommitted row under the trapped email's key holds up the
		// first transaction of each of its deliveries, as a slow database
		// would: none of them has recorded anything yet.
		hold := gdb.Begin()
		require.NoError(t, hold.Error)
		require.NoError(t, hold.Exec(`INSERT INTO notifications (key, request_id, template, message_id, state)
			VALUES (?, ?, 'report_ready', 'held', 'sending')`, "report_ready:rep-"+trapped, trapped).Error)
		publish(trapped)
		testkit.Eventually(t, time.Minute, func() bool { return lockWaiters(t, gdb) >= 1 },
			"round %d: a worker is handling the trapped email", round)
		// Only this test's workers carry its prefix and "-worker" in their names.
		require.Positive(t, testkit.CloseRabbitConnections(t, cfg.Prefix+"-worker"), "round %d: the workers' connections were found", round)
		testkit.Eventually(t, time.Minute, func() bool { return lockWaiters(t, gdb) >= 2 },
			"round %d: the broker redelivered the trapped email while its first delivery was still undecided", round)
		require.NoError(t, hold.Rollback().Error)
	}

	testkit.Eventually(t, 3*time.Minute, func() bool {
		var sent int
		require.NoError(t, gdb.Raw(`SELECT count(*) FROM notifications WHERE state = 'sent'`).Scan(&sent).Error)
		return sent == total
	}, "every email is recorded as sent")
	// Stopping waits for every handler: no SMTP conversation is still open
	// when the server is asked what it got.
	stop()

	msgs, err := mp.Messages(t.Context())
	require.NoError(t, err)
	perMessageID := map[string]int{}
	for _, m := range msgs {
		perMessageID[m.MessageID]++
	}
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
	require.Len(t, msgs, total)
	t.Logf("%d emails for %d requests after %d connection losses", len(msgs), total, losses)
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
	gdb, _ := testkit.Postgres(t)
	mp := testkit.StartMailpit(t)
	cfg := testkit.AMQP(t)
	topo := bus.Topology{Queues: []bus.Queue{{Name: notify.Consumer, Bindings: []string{event.TypeReportReady}}}}
	logger := testkit.Logger(t)
	dial := func(name string) *bus.Conn {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		conn, err := bus.Dial(ctx, cfg, "gdpr-test-"+cfg.Prefix+"-"+name, topo, logger)
		require.NoError(t, err)
		t.Cleanup(func() { _ = conn.Close() })
		return conn
	}
	t.Cleanup(func() { testkit.DeleteTopology(t, cfg, topo) })
	publisher := bus.NewPublisher(dial("publisher"))
	t.Cleanup(func() { _ = publisher.Close() })

	smtpCfg := smtpConfig(mp)
	smtpCfg.Timeout = 2 * time.Second
	var consumers []*bus.Consumer
	for i := range 2 {
		sender := notify.NewSMTP(smtpCfg)
		t.Cleanup(func() { _ = sender.Close() })
		n, err := notify.New(gdb, requests.NewStore(gdb, nil), outbox.NewStore(gdb), sender, link,
			notify.Options{ResendAfter: 3 * time.Second, MessageIDDomain: "test.invalid"}, logger, nil)
		require.NoError(t, err)
		c := bus.NewConsumer(dial(fmt.Sprintf("worker%d", i)),
			bus.ConsumerOptions{Queue: notify.Consumer, Concurrency: 4, RetryBackoff: 100 * time.Millisecond}, n.Handle, logger)
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		require.NoError(t, c.Start(ctx))
		cancel()
		consumers = append(consumers, c)
	}
	stop := func() {
		for _, c := range consumers {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_ = c.Stop(ctx)
			cancel()
		}
	}
	t.Cleanup(stop)

	const total = 300
	ids := make([]string, total)
	for i := range ids {
		ids[i] = uuid.NewString()
		require.NoError(t, gdb.Exec(`INSERT INTO requests (id, type, state, subject_id, subject_email, submitted_at, due_at)
			VALUES (?, 'access', 'completed', 's', ?, now(), now() + interval '1 month')`,
			ids[i], fmt.Sprintf("s%d@example.com", i)).Error)
	}
	for _, id := range ids {
		require.NoError(t, publisher.Publish(t.Context(), reportReady(t, id)))
	}
	for _, at := range []int{total / 4, total / 2} {
		testkit.Eventually(t, 2*time.Minute, func() bool {
			n, err := mp.Count(t.Context())
			return err == nil && n >= at
		}, "the server got %d emails", at)
		mp.Kill()
		mp.Restart()
	}

	testkit.Eventually(t, 3*time.Minute, func() bool {
		var sent int
		require.NoError(t, gdb.Raw(`SELECT count(*) FROM notifications WHERE state = 'sent'`).Scan(&sent).Error)
		return sent == total
	}, "every email is recorded as sent")
	stop()

	msgs, err := mp.Messages(t.Context())
	require.NoError(t, err)
	perMessageID := map[string]int{}
	for _, m := range msgs {
		perMessageID[m.MessageID]++
	}
	var sends []struct {
		RequestID string
		Sends     int
	}
	require.NoError(t, gdb.Raw(`SELECT request_id, sends FROM notifications`).Scan(&sends).Error)
	resent := 0
	for _, row := range sends {
		got := perMessageID["report-ready."+row.RequestID+"@test.invalid"]
		require.GreaterOrEqual(t, got, 1, "email of %s reached the server", row.RequestID)
		require.LessOrEqual(t, got, row.Sends, "email of %s arrived more often than it was sent", row.RequestID)
		if row.Sends > 1 {
			resent++
		}
	}
	require.Len(t, sends, total)
	t.Logf("%d emails for %d requests after 2 SMTP server kills; %d sent more than once", len(msgs), total, resent)
}
