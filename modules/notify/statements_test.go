package notify_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/notify"
	"github.com/gdpr-oss/gdpr/modules/outbox"
	"github.com/gdpr-oss/gdpr/modules/requests"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// TestNotifierStatementsPerEmail counts the statements (BEGIN and COMMIT
// included) the notifier sends to PostgreSQL for one report email, and for
// its redelivery after the email was recorded. A count is no speed: it only
// rises when a statement is added to the hot path, and this test says so.
func TestNotifierStatementsPerEmail(t *testing.T) {
	t.Parallel()
	setup, dsn := testkit.Postgres(t)
	gdb, counter := testkit.CountingGorm(t, dsn)
	mp := testkit.StartMailpit(t)
	n, err := notify.New(gdb, requests.NewStore(gdb, nil), outbox.NewStore(gdb), notify.NewSMTP(smtpConfig(mp)), link,
		notify.Options{ResendAfter: 3 * smtpConfig(mp).Timeout, MessageIDDomain: "test.invalid"}, testkit.Logger(t), prometheus.NewRegistry())
	require.NoError(t, err)
	e := &env{db: setup, mail: mp, n: n}
	id := e.request(t, "access", "stmt@example.com")
	m := reportReady(t, id)

	before := counter.Total()
	require.NoError(t, n.Handle(t.Context(), m))
	first := counter.Total() - before
	require.NoError(t, n.Handle(t.Context(), m))
	again := counter.Total() - before - first
	t.Logf("statements: %d for a report email, %d for its redelivery", first, again)
	require.LessOrEqual(t, first, int64(3), "statements for one report email")
	require.Equal(t, 1, e.sentEvents(t, id))
	msgs, err := mp.Messages(t.Context())
	require.NoError(t, err)
	require.Len(t, msgs, 1, "the redelivery sent nothing")
}

// TestReceivedWithoutReceiptCostsOneStatement: most requests ask for no
// receipt, and their request.received costs the notifier one SELECT, no
// transaction, no inbox record and no email; a request that asked for one
// gets exactly one receipt, also when request.received is redelivered.
func TestReceivedWithoutReceiptCostsOneStatement(t *testing.T) {
	t.Parallel()
	setup, dsn := testkit.Postgres(t)
	gdb, counter := testkit.CountingGorm(t, dsn)
	mp := testkit.StartMailpit(t)
	status := func(id string, _ time.Time) (string, time.Time, error) {
		return "https://privacy.example.com/status/" + id, time.Now().Add(time.Hour), nil
	}
	n, err := notify.New(gdb, requests.NewStore(gdb, nil), outbox.NewStore(gdb), notify.NewSMTP(smtpConfig(mp)), link,
		notify.Options{ResendAfter: 3 * smtpConfig(mp).Timeout, MessageIDDomain: "test.invalid", StatusLink: status}, testkit.Logger(t), prometheus.NewRegistry())
	require.NoError(t, err)
	e := &env{db: setup, mail: mp, n: n}
	received := func(id string) message.Message {
		m, err := message.New(event.TypeRequestReceived, event.RequestReceived{RequestID: id}, nil)
		require.NoError(t, err)
		m.CorrelationID = id
		return m
	}
	inboxRows := func(id string) int {
		var c int
		require.NoError(t, setup.Raw(`SELECT count(*) FROM inbox WHERE consumer = ? AND message_id = ?`, notify.Consumer, id).Scan(&c).Error)
		return c
	}

	silent := e.request(t, event.KindAccess, "silent@example.com")
	m := received(silent)
	before := counter.Total()
	require.NoError(t, n.Handle(t.Context(), m))
	require.Equal(t, int64(1), counter.Total()-before, "statements for a request.received owing no receipt")
	require.Zero(t, inboxRows(m.ID), "nothing happened, so nothing is recorded")

	asked := e.request(t, event.KindAccess, "asked@example.com")
	require.NoError(t, setup.Exec(`UPDATE requests SET receipt = true WHERE id = ?`, asked).Error)
	m = received(asked)
	require.NoError(t, n.Handle(t.Context(), m))
	require.NoError(t, n.Handle(t.Context(), m), "redelivered")
	require.Equal(t, 1, inboxRows(m.ID))
	require.Equal(t, 1, e.sentEvents(t, asked))
	msgs, err := mp.Messages(t.Context())
	require.NoError(t, err)
	require.Len(t, msgs, 1, "one receipt, for the request that asked, however often request.received arrives")
	require.Equal(t, "asked@example.com", msgs[0].To[0].Address)
}
