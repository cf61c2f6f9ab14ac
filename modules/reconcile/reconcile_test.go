package reconcile_test

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/modules/audit"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/reconcile"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// seed writes what the roles would have written for one request: audit rows
// for each stage it passed (chained by causation), its requests row once
// received, and its reports row once a report exists.
type seed struct {
	kind     string
	stages   []string // of reconcile.Stages()
	at       time.Time
	state    string
	failed   bool
	attempt  time.Time // a later attempt (retrying request), zero for none
	noReport bool      // report.ready published but its row is gone
	email    string    // notifications row state: sent, skipped, or none
	reason   string    // of a skipped notification
	hadEmail bool      // submitted with an address (requests.had_email)
}

func (s seed) write(t *testing.T, gdb *gorm.DB) string {
	t.Helper()
	ctx := t.Context()
	store := audit.NewStore(gdb)
	id := uuid.NewString()
	has := map[string]bool{}
	for _, st := range s.stages {
		has[st] = true
	}
	cause := ""
	at := s.at
	record := func(typ string, details map[string]any) {
		msgID := uuid.NewString()
		details["request_id"] = id
		_, err := store.Record(ctx, audit.Event{MessageID: msgID, Type: typ, RoutingKey: typ, RequestID: id,
			CausationID: cause, OccurredAt: at, ReceivedAt: at, Details: details})
		require.NoError(t, err)
		cause = msgID
		at = at.Add(time.Second)
	}
	if has[reconcile.StageSubmitted] {
		record(event.TypeRequestSubmitted, map[string]any{"type": s.kind})
	}
	if has[reconcile.StageReceived] {
		// subject_email stays blank: as on a scrubbed erasure, only
		// had_email tells whether there was an address.
		require.NoError(t, gdb.Exec(`INSERT INTO requests (id, type, state, had_email, submitted_at, received_at, due_at, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, id, s.kind, s.state, s.hadEmail, s.at, at, s.at.AddDate(0, 1, 0), at).Error)
		record(event.TypeRequestReceived, map[string]any{"type": s.kind})
	}
	if !s.attempt.IsZero() {
		require.NoError(t, gdb.Exec(`INSERT INTO request_attempts (request_id, attempt, started_at, finished_at, outcome)
			VALUES (?, 1, ?, ?, 'failed')`, id, s.attempt, s.attempt).Error)
	}
	if has[reconcile.StageReportGenerated] {
		if !s.noReport {
			require.NoError(t, gdb.Exec(`INSERT INTO reports (id, request_id, bytes, sha256, created_at) VALUES (?, ?, 10, 'x', ?)`,
				"rep-"+id, id, at).Error)
		}
		record(event.TypeReportReady, map[string]any{"report_id": "rep-" + id})
	}
	if has[reconcile.StageErasureCompleted] {
		record(event.TypeErasureCompleted, map[string]any{})
	}
	if s.failed {
		record(event.TypeRequestFailed, map[string]any{"error_class": "source_unavailable"})
	}
	if has[reconcile.StageEmailSent] {
		record(event.TypeNotificationSent, map[string]any{"template": "x"})
	}
	if s.email != "" {
		template := "report_ready"
		if s.kind == event.KindErasure {
			template = "erasure_completed"
		}
		require.NoError(t, gdb.Exec(`INSERT INTO notifications (key, request_id, template, message_id, state, reason) VALUES (?, ?, ?, ?, ?, ?)`,
			template+":"+id, id, template, uuid.NewString(), s.email, s.reason).Error)
	}
	return id
}

var (
	accessStages  = []string{reconcile.StageSubmitted, reconcile.StageReceived, reconcile.StageReportGenerated, reconcile.StageEmailSent}
	erasureStages = []string{reconcile.StageSubmitted, reconcile.StageReceived, reconcile.StageErasureCompleted, reconcile.StageEmailSent}
)

func stuckIDs(res reconcile.Result) map[string]string {
	out := map[string]string{}
	for _, s := range res.Stuck {
		out[s.RequestID] = s.Missing
	}
	return out
}

func TestReconcile(t *testing.T) {
	t.Parallel()
	gdb, _ := testkit.Postgres(t)
	checker := reconcile.New(gdb, reconcile.Stores(gdb))
	opts := reconcile.Options{Since: 24 * time.Hour, StuckAfter: 15 * time.Minute}
	now := time.Now()
	hourAgo := now.Add(-time.Hour)

	// A clean run: finished requests, one still moving, one retrying, one failed.
	clean := []string{
		seed{kind: event.KindAccess, stages: accessStages, at: hourAgo, state: "completed"}.write(t, gdb),
		seed{kind: event.KindAccess, stages: accessStages, at: hourAgo, state: "completed"}.write(t, gdb),
		// The email system's erasure is still postponed: handed_over is fine.
		seed{kind: event.KindErasure, stages: erasureStages, at: hourAgo, state: "handed_over"}.write(t, gdb),
	}
	seed{kind: event.KindAccess, stages: accessStages[:2], at: now.Add(-time.Minute), state: "processing"}.write(t, gdb) // moving
	seed{kind: event.KindAccess, stages: accessStages[:2], at: hourAgo, state: "received", attempt: now.Add(-2 * time.Minute)}.write(t, gdb)
	failed := seed{kind: event.KindAccess, stages: accessStages[:2], at: hourAgo, state: "failed", failed: true}.write(t, gdb)
	// No address to write to: the notifier skipped the email on purpose.
	seed{kind: event.KindAccess, stages: accessStages[:3], at: hourAgo, state: "completed", email: "skipped"}.write(t, gdb)
	// Emailed, but the notification.sent event is not (yet) in the audit log.
	seed{kind: event.KindAccess, stages: accessStages[:3], at: hourAgo, state: "completed", email: "sent"}.write(t, gdb)
	// Stuck for days but outside the window: not this check's business.
	seed{kind: event.KindAccess, stages: accessStages[:1], at: now.Add(-48 * time.Hour)}.write(t, gdb)

	res, err := checker.Check(t.Context(), opts)
	require.NoError(t, err)
	require.True(t, res.InSync(), "stuck: %+v", res.Stuck)
	require.Equal(t, 2, res.InProgress, "the moving and the retrying request")
	require.Equal(t, 1, res.EmailSkipped)
	require.Len(t, res.Failed, 1)
	require.Equal(t, failed, res.Failed[0].RequestID)
	require.Equal(t, map[string]int{
		reconcile.StageSubmitted: 7, reconcile.StageReceived: 7, reconcile.StageReportGenerated: 4, reconcile.StageEmailSent: 3,
	}, nonZero(res.Counts[event.KindAccess]))
	require.Equal(t, map[string]int{
		reconcile.StageSubmitted: 1, reconcile.StageReceived: 1, reconcile.StageErasureCompleted: 1, reconcile.StageEmailSent: 1,
	}, nonZero(res.Counts[event.KindErasure]))

	// Now break things behind the service's back.
	suppressed := seed{kind: event.KindAccess, stages: accessStages[:3], at: hourAgo, state: "completed"}.write(t, gdb)
	deleted := seed{kind: event.KindAccess, stages: accessStages, at: hourAgo, state: "completed", noReport: true}.write(t, gdb)
	neverReceived := seed{kind: event.KindErasure, stages: erasureStages[:1], at: hourAgo}.write(t, gdb)
	erasureSilent := seed{kind: event.KindErasure, stages: erasureStages[:2], at: hourAgo, state: "handed_over"}.write(t, gdb)
	// A report removed from a request that was clean a moment ago.
	require.NoError(t, gdb.Exec(`DELETE FROM reports WHERE request_id = ?`, clean[1]).Error)

	res, err = checker.Check(t.Context(), opts)
	require.NoError(t, err)
	require.False(t, res.InSync())
	require.Equal(t, map[string]string{
		suppressed:    reconcile.StageEmailSent,
		deleted:       reconcile.StageReportGenerated,
		clean[1]:      reconcile.StageReportGenerated,
		neverReceived: reconcile.StageReceived,
		erasureSilent: reconcile.StageErasureCompleted,
	}, stuckIDs(res))
	require.Equal(t, map[string]int{
		reconcile.StageSubmitted: 0, reconcile.StageReceived: 1, reconcile.StageReportGenerated: 2,
		reconcile.StageErasureCompleted: 1, reconcile.StageEmailSent: 1,
	}, res.OutOfSync())
	for _, s := range res.Stuck {
		require.Greater(t, s.Idle, 15*time.Minute)
	}

	// With a threshold longer than the idle time nothing is stuck yet.
	res, err = checker.Check(t.Context(), reconcile.Options{Since: 24 * time.Hour, StuckAfter: 2 * time.Hour})
	require.NoError(t, err)
	require.True(t, res.InSync())
	// And a window that excludes everything sees nothing.
	res, err = checker.Check(t.Context(), reconcile.Options{Since: time.Second, StuckAfter: time.Minute})
	require.NoError(t, err)
	require.True(t, res.InSync())
	require.Empty(t, res.Counts)
}

func nonZero(m map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

// TestEmailOwedIsDerivedFromTheSubmission: whether a request owes the
// subject an email comes from what was submitted (had_email), not from the
// row as it is now. A finished erasure's row has no address left, so a
// "deleted" email skipped for lack of one looked like a request that never
// had one, and the check called it in sync.
func TestEmailOwedIsDerivedFromTheSubmission(t *testing.T) {
	t.Parallel()
	gdb, _ := testkit.Postgres(t)
	checker := reconcile.New(gdb, reconcile.Stores(gdb))
	opts := reconcile.Options{Since: 24 * time.Hour, StuckAfter: 15 * time.Minute}
	hourAgo := time.Now().Add(-time.Hour)
	justNow := time.Now().Add(-10 * time.Second)
	done := erasureStages[:3]

	// In sync: no address was given, so nobody to write to; or the email went out.
	seed{kind: event.KindErasure, stages: done, at: hourAgo, state: "completed", email: "skipped", reason: "no_email"}.write(t, gdb)
	seed{kind: event.KindErasure, stages: done, at: hourAgo, state: "completed", email: "sent", hadEmail: true}.write(t, gdb)
	seed{kind: event.KindAccess, stages: accessStages, at: hourAgo, state: "completed", hadEmail: true}.write(t, gdb)

	// Out of sync: submitted with an address, no email. A skip is final,
	// so it counts at once, however recent.
	readScrubbed := seed{kind: event.KindErasure, stages: done, at: justNow, state: "completed", email: "skipped", reason: "no_email", hadEmail: true}.write(t, gdb)
	scrubbed := seed{kind: event.KindErasure, stages: done, at: hourAgo, state: "completed", email: "skipped", reason: "scrubbed", hadEmail: true}.write(t, gdb)
	refused := seed{kind: event.KindAccess, stages: accessStages[:3], at: hourAgo, state: "completed", email: "skipped", reason: "rejected", hadEmail: true}.write(t, gdb)
	// Scrubbed, and the email suppressed: no notification at all.
	suppressed := seed{kind: event.KindErasure, stages: done, at: hourAgo, state: "completed", hadEmail: true}.write(t, gdb)

	res, err := checker.Check(t.Context(), opts)
	require.NoError(t, err)
	require.False(t, res.InSync())
	require.Equal(t, 1, res.EmailSkipped, "only the request without an address")
	require.Equal(t, map[string]string{
		readScrubbed: reconcile.StageEmailSent,
		scrubbed:     reconcile.StageEmailSent,
		refused:      reconcile.StageEmailSent,
		suppressed:   reconcile.StageEmailSent,
	}, stuckIDs(res))
	reasons := map[string]string{}
	for _, s := range res.Stuck {
		reasons[s.RequestID] = s.Reason
	}
	require.Equal(t, map[string]string{
		readScrubbed: "email skipped: no_email",
		scrubbed:     "email skipped: scrubbed",
		refused:      "email skipped: rejected",
		suppressed:   "",
	}, reasons)
	require.Equal(t, 4, res.OutOfSync()[reconcile.StageEmailSent])

	// A longer threshold still holds the skipped ones: no progress can bring their email.
	res, err = checker.Check(t.Context(), reconcile.Options{Since: 24 * time.Hour, StuckAfter: 2 * time.Hour})
	require.NoError(t, err)
	require.Len(t, res.Stuck, 3)
	require.NotContains(t, stuckIDs(res), suppressed, "no notification yet: maybe still on its way")
}

// TestOperatorEndsAreClosedNotStuck: a request an operator cancelled or
// denied passes no further stage by design, so it counts as closed, not as
// stuck and not as failed (even when it failed before the operator ended it).
func TestOperatorEndsAreClosedNotStuck(t *testing.T) {
	t.Parallel()
	gdb, _ := testkit.Postgres(t)
	checker := reconcile.New(gdb, reconcile.Stores(gdb))
	hourAgo := time.Now().Add(-time.Hour)

	seed{kind: event.KindAccess, stages: accessStages[:2], at: hourAgo, state: "cancelled"}.write(t, gdb)
	seed{kind: event.KindErasure, stages: erasureStages[:2], at: hourAgo, state: "denied", hadEmail: true}.write(t, gdb)
	seed{kind: event.KindAccess, stages: accessStages[:2], at: hourAgo, state: "cancelled", failed: true}.write(t, gdb)
	seed{kind: event.KindErasure, stages: erasureStages[:2], at: hourAgo, state: "denied", failed: true}.write(t, gdb)
	open := seed{kind: event.KindAccess, stages: accessStages[:2], at: hourAgo, state: "received"}.write(t, gdb)

	res, err := checker.Check(t.Context(), reconcile.Options{Since: 24 * time.Hour, StuckAfter: 15 * time.Minute})
	require.NoError(t, err)
	require.Equal(t, 4, res.Closed)
	require.Empty(t, res.Failed)
	require.Equal(t, map[string]string{open: reconcile.StageReportGenerated}, stuckIDs(res), "only the open request is stuck")
}
