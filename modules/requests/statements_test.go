package requests_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/lock"
	"github.com/gdpr-oss/gdpr/modules/outbox"
	"github.com/gdpr-oss/gdpr/modules/requests"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// TestStatementsPerAccessRequest counts the statements (BEGIN and COMMIT
// included) and the explicit transactions the requests manager sends to
// PostgreSQL for one access request: storing it (request.submitted),
// claiming it and completing it; and for a redelivered request.submitted.
// A count is no speed: it only rises when a statement is added to the hot
// path, and this test says so. Before the statements were merged, one
// request took 18 statements in 3 transactions (5 to store, 6 to claim, 7
// to complete); now storing and completing are one statement each, and only
// the claim, which takes the Redis lock between its select and its update,
// is a transaction.
func TestStatementsPerAccessRequest(t *testing.T) {
	t.Parallel()
	_, dsn := testkit.Postgres(t)
	gdb, counter := testkit.CountingGorm(t, dsn)
	rdb, prefix := testkit.Redis(t)
	b := newBuilder(nil)
	mgr := requests.New(gdb, outbox.NewStore(gdb), lock.NewLocker(rdb, prefix, testkit.Logger(t)), b, testConfig(), testkit.Logger(t), prometheus.NewRegistry())
	e := &env{db: gdb, mgr: mgr, builder: b}

	m := submitted(t, event.KindAccess, event.Subject{ID: "u-stmt", Email: "stmt@example.com"})
	id := requestID(t, m)
	n0, c0 := counter.Total(), counter.Commits()
	require.NoError(t, mgr.Handle(t.Context(), m))
	n1, c1 := counter.Total(), counter.Commits()
	require.NoError(t, mgr.Handle(t.Context(), m), "redelivery")
	n2, c2 := counter.Total(), counter.Commits()
	worked, err := mgr.ProcessOne(t.Context())
	require.NoError(t, err)
	require.True(t, worked)
	n3, c3 := counter.Total(), counter.Commits()

	store, redelivery, work := n1-n0, n2-n1, n3-n2
	t.Logf("statements: %d to store, %d for a redelivery, %d to claim and complete (%d, %d, %d commits)",
		store, redelivery, work, c1-c0, c2-c1, c3-c2)
	require.Equal(t, requests.StateCompleted, e.row(t, id).State)
	require.Equal(t, 1, e.outboxCount(t, event.TypeRequestReceived, id))
	require.Equal(t, 1, e.outboxCount(t, event.TypeReportReady, id))
	var attempts []struct {
		Attempt int
		Outcome string
	}
	require.NoError(t, gdb.Raw(`SELECT attempt, outcome FROM request_attempts WHERE request_id = ?`, id).Scan(&attempts).Error)
	require.Len(t, attempts, 1)
	require.Equal(t, 1, attempts[0].Attempt)
	require.Equal(t, "succeeded", attempts[0].Outcome)

	require.LessOrEqual(t, store, int64(1), "statements to store a request")
	require.LessOrEqual(t, redelivery, int64(1), "statements for a redelivered request.submitted")
	require.LessOrEqual(t, work, int64(5), "statements to claim and complete an access request")
	require.LessOrEqual(t, c3-c0, int64(1), "explicit transactions of one request, its redelivery included")
}
