package gauge_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/gauge"
	"github.com/gdpr-oss/gdpr/modules/reconcile"
	"github.com/gdpr-oss/gdpr/modules/requests"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// A refresh blocked in PostgreSQL when shutdown begins is cancelled, and
// Stop returns only once its loop has returned, even with the drain
// deadline already past.
func TestExporterStopWaitsForABlockedRefresh(t *testing.T) {
	t.Parallel()
	gdb, _ := testkit.Postgres(t)
	tx := gdb.Begin()
	require.NoError(t, tx.Error)
	t.Cleanup(func() { tx.Rollback() })
	require.NoError(t, tx.Exec(`LOCK TABLE requests IN ACCESS EXCLUSIVE MODE`).Error)

	e := gauge.New(requests.NewStore(gdb, nil), reconcile.New(gdb, reconcile.Stores(gdb)), gauge.Options{Interval: time.Hour, NearDeadline: map[string]time.Duration{"gdpr": time.Hour}}, prometheus.NewRegistry(), testkit.Logger(t))
	require.NoError(t, e.Start(t.Context()))
	testkit.Eventually(t, 10*time.Second, func() bool {
		var waiting int
		require.NoError(t, gdb.Raw(`SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting).Error)
		return waiting > 0
	}, "the first refresh waits for the table lock")

	expired, cancel := context.WithCancel(t.Context())
	cancel()
	if err := e.Stop(expired); err != nil {
		require.ErrorIs(t, err, context.Canceled, "only the drain deadline is reported")
	}
	require.Zero(t, e.Running(), "both loops returned before Stop did")
}
