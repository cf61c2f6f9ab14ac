package requests_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/db"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/lock"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/outbox"
	"github.com/gdpr-oss/gdpr/modules/requests"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// The stored due_at follows deadline.DueAt (one calendar month, counted in
// UTC) even when the database session runs in another time zone, where
// PostgreSQL's own "+ interval '1 month'" would count local months.
func TestStoredDeadlineIgnoresTheSessionTimeZone(t *testing.T) {
	t.Parallel()
	_, dsn := testkit.Postgres(t)
	gdb, err := db.Open(t.Context(), db.Config{DSN: dsn + "&timezone=Pacific/Auckland", MaxOpenConns: 2})
	require.NoError(t, err)
	t.Cleanup(func() {
		if sqlDB, err := gdb.DB(); err == nil {
			_ = sqlDB.Close()
		}
	})
	var zone string
	require.NoError(t, gdb.Raw(`SHOW TimeZone`).Scan(&zone).Error)
	require.Equal(t, "Pacific/Auckland", zone)

	rdb, prefix := testkit.Redis(t)
	mgr := requests.New(gdb, outbox.NewStore(gdb), lock.NewLocker(rdb, prefix, testkit.Logger(t)), newBuilder(nil),
		testConfig(), testkit.Logger(t), prometheus.NewRegistry())
	for _, tc := range []struct{ submitted, due string }{
		{"2026-01-31T23:30:00Z", "2026-02-28T23:30:00Z"},
		{"2026-01-30T23:30:00Z", "2026-02-28T23:30:00Z"},
		{"2026-02-28T23:30:00Z", "2026-03-28T23:30:00Z"},
	} {
		at, err := time.Parse(time.RFC3339, tc.submitted)
		require.NoError(t, err)
		id := uuid.NewString()
		m, err := message.New(event.TypeRequestSubmitted, event.RequestSubmitted{
			RequestID: id, Type: event.KindAccess, Subject: event.Subject{ID: "u-" + id}, SubmittedAt: at,
		}, nil)
		require.NoError(t, err)
		m.CorrelationID = id
		require.NoError(t, mgr.Handle(context.Background(), m))
		var due time.Time
		require.NoError(t, gdb.Raw(`SELECT due_at FROM requests WHERE id = ?`, id).Scan(&due).Error)
		require.Equal(t, tc.due, due.UTC().Format(time.RFC3339), "due_at of a request submitted at %s", tc.submitted)
	}
}
