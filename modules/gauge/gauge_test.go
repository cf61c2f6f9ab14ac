package gauge_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/modules/audit"
	"github.com/gdpr-oss/gdpr/modules/console"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/gauge"
	"github.com/gdpr-oss/gdpr/modules/reconcile"
	"github.com/gdpr-oss/gdpr/modules/requests"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// value returns the gauge name{labels} from reg, or -1 when absent.
func value(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue metrics
				}
			}
			return m.GetGauge().GetValue()
		}
	}
	return -1
}

// windows are console.near_deadline's defaults, which app/ passes the gauge.
func windows() map[string]time.Duration {
	return console.DefaultConfig().NearDeadline.Map()
}

func insertRequest(t *testing.T, gdb *gorm.DB, state string, submitted, due time.Time) string {
	t.Helper()
	id := uuid.NewString()
	require.NoError(t, gdb.Exec(`INSERT INTO requests (id, type, state, submitted_at, received_at, due_at, updated_at)
		VALUES (?, 'access', ?, ?, ?, ?, ?)`, id, state, submitted, submitted, due, submitted).Error)
	return id
}

func TestRequestGauges(t *testing.T) {
	t.Parallel()
	gdb, _ := testkit.Postgres(t)
	reg := prometheus.NewRegistry()
	e := gauge.New(requests.NewStore(gdb, nil), reconcile.New(gdb, reconcile.Stores(gdb)), gauge.Options{Interval: time.Hour, NearDeadline: windows()}, reg, testkit.Logger(t))

	require.NoError(t, e.RefreshRequests(t.Context()))
	for _, s := range requests.OpenStates() {
		require.Equal(t, 0.0, value(t, reg, "gdpr_open_requests", map[string]string{"state": string(s)}), s)
	}
	require.Equal(t, 0.0, value(t, reg, "gdpr_oldest_open_request_age_seconds", nil))

	now := time.Now()
	day := 24 * time.Hour
	insertRequest(t, gdb, "received", now.Add(-2*day), now.Add(28*day))
	insertRequest(t, gdb, "received", now.Add(-26*day), now.Add(4*day))           // near
	insertRequest(t, gdb, "processing", now.Add(-40*day), now.Add(-10*day))       // past, oldest
	insertRequest(t, gdb, "handed_over", now.Add(-29*day), now.Add(day))          // near
	insertRequest(t, gdb, "completed", now.Add(-90*day), now.Add(-60*day))        // finished: ignored
	insertRequest(t, gdb, "failed", now.Add(-90*day), now.Add(-60*day))           // finished: ignored
	insertRequest(t, gdb, "handed_over", now.Add(-31*day), now.Add(-time.Minute)) // past

	require.NoError(t, e.RefreshRequests(t.Context()))
	for state, want := range map[string]float64{"received": 2, "processing": 1, "handed_over": 2} {
		require.Equal(t, want, value(t, reg, "gdpr_open_requests", map[string]string{"state": state}), state)
	}
	require.Equal(t, 2.0, value(t, reg, "gdpr_requests_near_deadline", nil))
	require.Equal(t, 2.0, value(t, reg, "gdpr_requests_past_deadline", nil))
	oldest := value(t, reg, "gdpr_oldest_open_request_age_seconds", nil)
	require.InDelta(t, (40 * day).Seconds(), oldest, 120)

	// Finishing the oldest moves the gauges on the next refresh.
	require.NoError(t, gdb.Exec(`UPDATE requests SET state = 'completed' WHERE state = 'processing'`).Error)
	require.NoError(t, e.RefreshRequests(t.Context()))
	require.Equal(t, 0.0, value(t, reg, "gdpr_open_requests", map[string]string{"state": "processing"}))
	require.Equal(t, 1.0, value(t, reg, "gdpr_requests_past_deadline", nil))
	require.InDelta(t, (31 * day).Seconds(), value(t, reg, "gdpr_oldest_open_request_age_seconds", nil), 120)
}

// TestNearDeadlineFollowsRegulation: the gauge counts a request as near its
// deadline by its own regulation's window (console.near_deadline), the same
// windows the console's dashboard and near_deadline filter use. Under the
// single telemetry.near_deadline (5 days) it counted the lgpd request 4 days
// from due and missed the ccpa and gdpr ones 6 days from due.
func TestNearDeadlineFollowsRegulation(t *testing.T) {
	t.Parallel()
	gdb, _ := testkit.Postgres(t)
	reg := prometheus.NewRegistry()
	e := gauge.New(requests.NewStore(gdb, nil), reconcile.New(gdb, reconcile.Stores(gdb)), gauge.Options{Interval: time.Hour, NearDeadline: windows()}, reg, testkit.Logger(t))
	now := time.Now()
	day := 24 * time.Hour
	for _, r := range []struct {
		regulation string
		due        time.Duration
	}{
		{"lgpd", 4 * day},    // lgpd window 3 days: not near
		{"lgpd", 2 * day},    // near
		{"ccpa", 6 * day},    // ccpa window 7 days: near
		{"gdpr", 6 * day},    // gdpr window 7 days: near
		{"ccpa", 8 * day},    // not near
		{"lgpd", -time.Hour}, // past, not near
		{"gdpr", 30 * day},   // not near
	} {
		id := insertRequest(t, gdb, "received", now.Add(-day), now.Add(r.due))
		require.NoError(t, gdb.Exec(`UPDATE requests SET regulation = ? WHERE id = ?`, r.regulation, id).Error)
	}
	require.NoError(t, e.RefreshRequests(t.Context()))
	require.Equal(t, 3.0, value(t, reg, "gdpr_requests_near_deadline", nil))
	require.Equal(t, 1.0, value(t, reg, "gdpr_requests_past_deadline", nil))

	// Same count as the console's near_deadline filter: one source of truth.
	page, err := requests.NewStore(gdb, nil).List(t.Context(), requests.Filter{NearDeadline: true, Near: windows(), Limit: 500})
	require.NoError(t, err)
	require.Len(t, page.Requests, 3)

	// An operator's extension moves the deadline in force into the window.
	require.NoError(t, gdb.Exec(`UPDATE requests SET extended_until = now() + interval '2 days' WHERE regulation = 'ccpa' AND due_at > now() + interval '7 days'`).Error)
	require.NoError(t, e.RefreshRequests(t.Context()))
	require.Equal(t, 4.0, value(t, reg, "gdpr_requests_near_deadline", nil))
}

func TestExporterRunsReconcilePeriodically(t *testing.T) {
	t.Parallel()
	gdb, _ := testkit.Postgres(t)
	reg := prometheus.NewRegistry()
	e := gauge.New(requests.NewStore(gdb, nil), reconcile.New(gdb, reconcile.Stores(gdb)), gauge.Options{
		Interval: 50 * time.Millisecond, NearDeadline: windows(),
		ReconcileInterval: 50 * time.Millisecond,
		Reconcile:         reconcile.Options{Since: 24 * time.Hour, StuckAfter: time.Minute},
	}, reg, testkit.Logger(t))
	require.NoError(t, e.Start(t.Context()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, e.Stop(ctx))
	})
	testkit.Eventually(t, 10*time.Second, func() bool {
		return value(t, reg, "gdpr_reconcile_last_success_timestamp_seconds", nil) > 0
	}, "first reconcile ran")
	require.Equal(t, 0.0, value(t, reg, "gdpr_out_of_sync", map[string]string{"stage": reconcile.StageEmailSent}))

	// An access request whose report was generated an hour ago, never emailed.
	id := insertRequest(t, gdb, "completed", time.Now().Add(-time.Hour), time.Now().AddDate(0, 1, 0))
	require.NoError(t, gdb.Exec(`INSERT INTO reports (id, request_id, bytes, sha256) VALUES (?, ?, 1, 'x')`, "rep-"+id, id).Error)
	require.NoError(t, gdb.Exec(`UPDATE reports SET created_at = now() - interval '1 hour'`).Error)
	store := audit.NewStore(gdb)
	_, err := store.Record(t.Context(), audit.Event{MessageID: uuid.NewString(), Type: event.TypeRequestSubmitted,
		RequestID: id, OccurredAt: time.Now().Add(-time.Hour), Details: map[string]any{"type": "access"}})
	require.NoError(t, err)

	testkit.Eventually(t, 10*time.Second, func() bool {
		return value(t, reg, "gdpr_out_of_sync", map[string]string{"stage": reconcile.StageEmailSent}) == 1 &&
			value(t, reg, "gdpr_open_requests", map[string]string{"state": "received"}) == 0
	}, "the un-emailed request shows as out of sync")
}

func TestRefreshFailureKeepsRunning(t *testing.T) {
	t.Parallel()
	gdb, _ := testkit.Postgres(t)
	reg := prometheus.NewRegistry()
	e := gauge.New(requests.NewStore(gdb, nil), reconcile.New(gdb, reconcile.Stores(gdb)), gauge.Options{Interval: 20 * time.Millisecond, NearDeadline: windows()}, reg, testkit.Logger(t))
	// Break our own database: the table the gauges read disappears.
	require.NoError(t, gdb.Exec(`ALTER TABLE requests RENAME TO requests_gone`).Error)
	require.NoError(t, e.Start(t.Context()))
	t.Cleanup(func() { _ = e.Stop(context.Background()) })
	counter := func() float64 {
		mfs, err := reg.Gather()
		require.NoError(t, err)
		for _, mf := range mfs {
			if mf.GetName() == "gdpr_gauge_refresh_errors_total" {
				for _, m := range mf.GetMetric() {
					if m.GetLabel()[0].GetValue() == "requests" {
						return m.GetCounter().GetValue()
					}
				}
			}
		}
		return 0
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return counter() >= 2 }, "refresh errors counted")
	require.NoError(t, gdb.Exec(`ALTER TABLE requests_gone RENAME TO requests`).Error)
	require.NoError(t, gdb.Exec(`INSERT INTO requests (id, type, state, submitted_at, due_at) VALUES (?, 'erasure', 'received', now(), now() + interval '1 day')`, uuid.NewString()).Error)
	testkit.Eventually(t, 10*time.Second, func() bool {
		return value(t, reg, "gdpr_open_requests", map[string]string{"state": "received"}) == 1 &&
			value(t, reg, "gdpr_requests_near_deadline", nil) == 1
	}, "gauges recover once the database answers again")
}

// TestRequestGaugesIgnoreOperatorEndsAndFollowExtensions: a request an
// operator cancelled or denied owes nothing more, and an extended deadline
// (extended_until) is the one in force for near and past.
func TestRequestGaugesIgnoreOperatorEndsAndFollowExtensions(t *testing.T) {
	t.Parallel()
	gdb, _ := testkit.Postgres(t)
	reg := prometheus.NewRegistry()
	e := gauge.New(requests.NewStore(gdb, nil), reconcile.New(gdb, reconcile.Stores(gdb)), gauge.Options{Interval: time.Hour, NearDeadline: windows()}, reg, testkit.Logger(t))

	now := time.Now()
	day := 24 * time.Hour
	extend := func(id string, until time.Time) {
		t.Helper()
		require.NoError(t, gdb.Exec(`UPDATE requests SET extended_until = ?, extended_at = now(), extended_by = 'olga',
			extension_reason = 'archives' WHERE id = ?`, until, id).Error)
	}
	insertRequest(t, gdb, "cancelled", now.Add(-40*day), now.Add(-10*day)) // past, but closed
	insertRequest(t, gdb, "denied", now.Add(-29*day), now.Add(day))        // near, but closed
	insertRequest(t, gdb, "received", now.Add(-2*day), now.Add(28*day))    // neither
	// Near by due_at, extended far away: neither.
	extend(insertRequest(t, gdb, "received", now.Add(-29*day), now.Add(day)), now.Add(50*day))
	// Past by due_at, extended to within the window: near.
	extend(insertRequest(t, gdb, "processing", now.Add(-31*day), now.Add(-day)), now.Add(2*day))
	// Past by due_at and past its extension too: past.
	extend(insertRequest(t, gdb, "handed_over", now.Add(-90*day), now.Add(-60*day)), now.Add(-time.Minute))

	require.NoError(t, e.RefreshRequests(t.Context()))
	for state, want := range map[string]float64{"received": 2, "processing": 1, "handed_over": 1} {
		require.Equal(t, want, value(t, reg, "gdpr_open_requests", map[string]string{"state": state}), state)
	}
	for _, closed := range []string{"cancelled", "denied"} {
		require.LessOrEqual(t, value(t, reg, "gdpr_open_requests", map[string]string{"state": closed}), 0.0, closed)
	}
	require.Equal(t, 1.0, value(t, reg, "gdpr_requests_near_deadline", nil))
	require.Equal(t, 1.0, value(t, reg, "gdpr_requests_past_deadline", nil))
	require.InDelta(t, (90 * day).Seconds(), value(t, reg, "gdpr_oldest_open_request_age_seconds", nil), 120)
}
