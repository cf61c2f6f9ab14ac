package notify_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

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
