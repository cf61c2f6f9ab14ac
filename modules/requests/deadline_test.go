package requests_test

import (
	"cmp"
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
	for _, tc := range []struct{ submitted, due, regulation string }{
		{"2026-01-31T23:30:00Z", "2026-02-28T23:30:00Z", ""},
		{"2026-01-30T23:30:00Z", "2026-02-28T23:30:00Z", ""},
		{"2026-02-28T23:30:00Z", "2026-03-28T23:30:00Z", ""},
		// Each regulation's clock (TestRegulationClocks covers the rules).
		{"2026-01-31T23:30:00Z", "2026-02-28T23:30:00Z", "gdpr"},
		{"2026-01-31T23:30:00Z", "2026-03-17T23:30:00Z", "ccpa"},
		{"2026-02-20T23:30:00Z", "2026-03-07T23:30:00Z", "lgpd"},
	} {
		at, err := time.Parse(time.RFC3339, tc.submitted)
		require.NoError(t, err)
		id := uuid.NewString()
		m, err := message.New(event.TypeRequestSubmitted, event.RequestSubmitted{
			RequestID: id, Type: event.KindAccess, Subject: event.Subject{ID: "u-" + id}, SubmittedAt: at, Regulation: tc.regulation,
		}, nil)
		require.NoError(t, err)
		m.CorrelationID = id
		require.NoError(t, mgr.Handle(context.Background(), m))
		var row struct {
			DueAt      time.Time
			Regulation string
		}
		require.NoError(t, gdb.Raw(`SELECT due_at, regulation FROM requests WHERE id = ?`, id).Scan(&row).Error)
		require.Equal(t, tc.due, row.DueAt.UTC().Format(time.RFC3339), "due_at of a %q request submitted at %s", tc.regulation, tc.submitted)
		require.Equal(t, cmp.Or(tc.regulation, "gdpr"), row.Regulation)
	}

	// A regulation without a clock can never be stored: poison.
	id := uuid.NewString()
	m, err := message.New(event.TypeRequestSubmitted, event.RequestSubmitted{
		RequestID: id, Type: event.KindAccess, Subject: event.Subject{ID: "u-" + id}, SubmittedAt: time.Now(), Regulation: "hipaa",
	}, nil)
	require.NoError(t, err)
	require.ErrorIs(t, mgr.Handle(context.Background(), m), requests.ErrInvalid)
}
