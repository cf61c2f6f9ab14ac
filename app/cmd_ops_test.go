package app

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/modules/audit"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// finishedAccess writes what a clean access request leaves behind an hour
// ago: its audit events (chained), its requests row and its report.
func finishedAccess(t *testing.T, gdb *gorm.DB, withEmail bool) (string, []string) {
	t.Helper()
	id := uuid.NewString()
	at := time.Now().Add(-time.Hour)
	require.NoError(t, gdb.Exec(`INSERT INTO requests (id, type, state, submitted_at, received_at, due_at, completed_at, updated_at)
		VALUES (?, 'access', 'completed', ?, ?, ?, ?, ?)`, id, at, at, at.AddDate(0, 1, 0), at, at).Error)
	require.NoError(t, gdb.Exec(`INSERT INTO reports (id, request_id, bytes, sha256, created_at) VALUES (?, ?, 1, 'x', ?)`, "rep-"+id, id, at).Error)
	store := audit.NewStore(gdb)
	types := []string{event.TypeRequestSubmitted, event.TypeRequestReceived, event.TypeReportReady}
	if withEmail {
		types = append(types, event.TypeNotificationSent)
	}
	cause := ""
	var ids []string
	for i, typ := range types {
		msgID := uuid.NewString()
		_, err := store.Record(t.Context(), audit.Event{MessageID: msgID, Type: typ, RoutingKey: typ, RequestID: id, CausationID: cause,
			OccurredAt: at.Add(time.Duration(i) * time.Second), Details: map[string]any{"type": event.KindAccess}})
		require.NoError(t, err)
		cause = msgID
		ids = append(ids, msgID)
	}
	return id, ids
}

func runCLI(t *testing.T, dsn string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := ExecuteArgs(t.Context(), args, &stdout, &stderr, []string{"GDPR_POSTGRES_DSN=" + dsn})
	return code, stdout.String(), stderr.String()
}

func TestReconcileCommand(t *testing.T) {
	t.Parallel()
	gdb, dsn := testkit.Postgres(t)
	clean, _ := finishedAccess(t, gdb, true)
	finishedAccess(t, gdb, true)

	code, out, errOut := runCLI(t, dsn, "reconcile", "--since", "24h", "--stuck-after", "15m")
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
	require.Contains(t, out, "IN SYNC")
	require.Regexp(t, `submitted\s+2\s+2\s+0`, out)
	require.Regexp(t, `email_sent\s+2\s+2\s+0`, out)

	// One email suppressed; one report deleted behind the service's back.
	suppressed, _ := finishedAccess(t, gdb, false)
	require.NoError(t, gdb.Exec(`DELETE FROM reports WHERE request_id = ?`, clean).Error)

	code, out, errOut = runCLI(t, dsn, "reconcile", "--since", "24h", "--stuck-after", "15m")
	require.Equal(t, 1, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
	require.Contains(t, out, "OUT OF SYNC: 2 request(s) stuck")
	require.Regexp(t, suppressed+`\s+access\s+completed\s+email_sent`, out)
	require.Regexp(t, clean+`\s+access\s+completed\s+report_generated`, out)
	require.Contains(t, errOut, "requests out of sync")

	code, out, _ = runCLI(t, dsn, "reconcile", "--since", "24h", "--stuck-after", "15m", "-o", "json")
	require.Equal(t, 1, code)
	var res struct {
		Stuck []struct {
			RequestID string `json:"request_id"`
			Missing   string `json:"missing"`
		} `json:"stuck"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &res))
	require.Len(t, res.Stuck, 2)

	// A threshold longer than their idle time: still moving as far as we know.
	code, out, _ = runCLI(t, dsn, "reconcile", "--since", "24h", "--stuck-after", "2h")
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "in progress (within threshold): 2")

	code, _, errOut = runCLI(t, dsn, "reconcile", "--since", "soon")
	require.NotEqual(t, 0, code)
	require.Contains(t, errOut, "since")
}

func TestTimelineCommand(t *testing.T) {
	t.Parallel()
	gdb, dsn := testkit.Postgres(t)
	id, msgIDs := finishedAccess(t, gdb, true)

	code, out, errOut := runCLI(t, dsn, "timeline", id)
	require.Equal(t, 0, code, errOut)
	lines := bytes.Split(bytes.TrimSpace([]byte(out)), []byte("\n"))
	require.Len(t, lines, 5, out)
	for i, typ := range []string{event.TypeRequestSubmitted, event.TypeRequestReceived, event.TypeReportReady, event.TypeNotificationSent} {
		require.Contains(t, string(lines[i+1]), typ)
		require.Contains(t, string(lines[i+1]), msgIDs[i])
	}

	code, out, _ = runCLI(t, dsn, "timeline", id, "-o", "json")
	require.Equal(t, 0, code)
	var tl audit.TimelineResponse
	require.NoError(t, json.Unmarshal([]byte(out), &tl))
	require.Len(t, tl.Events, 4)

	code, _, errOut = runCLI(t, dsn, "timeline", uuid.NewString())
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "no events")
}

// finishedErasure writes what a finished erasure leaves behind an hour ago:
// its audit events up to erasure.completed, its scrubbed requests row
// (hadEmail: it was submitted with an address) and, unless state is empty,
// the "deleted" email's notifications row.
func finishedErasure(t *testing.T, gdb *gorm.DB, hadEmail bool, state, reason string) string {
	t.Helper()
	id := uuid.NewString()
	at := time.Now().Add(-time.Hour)
	require.NoError(t, gdb.Exec(`INSERT INTO requests (id, type, state, had_email, submitted_at, received_at, due_at, completed_at, updated_at)
		VALUES (?, 'erasure', 'completed', ?, ?, ?, ?, ?, ?)`, id, hadEmail, at, at, at.AddDate(0, 1, 0), at, at).Error)
	store := audit.NewStore(gdb)
	cause := ""
	for i, typ := range []string{event.TypeRequestSubmitted, event.TypeRequestReceived, event.TypeErasureCompleted} {
		msgID := uuid.NewString()
		_, err := store.Record(t.Context(), audit.Event{MessageID: msgID, Type: typ, RoutingKey: typ, RequestID: id, CausationID: cause,
			OccurredAt: at.Add(time.Duration(i) * time.Second), Details: map[string]any{"type": event.KindErasure}})
		require.NoError(t, err)
		cause = msgID
	}
	if state != "" {
		require.NoError(t, gdb.Exec(`INSERT INTO notifications (key, request_id, template, message_id, state, reason)
			VALUES (?, ?, 'erasure_completed', ?, ?, ?)`, "erasure_completed:"+id, id, "erasure-completed."+id+"@x", state, reason).Error)
	}
	return id
}

// TestReconcileCommandEmailOwed: a request submitted with an address that
// got no "deleted" email is out of sync, although its scrubbed row has no
// address any more; one submitted without an address is not.
func TestReconcileCommandEmailOwed(t *testing.T) {
	t.Parallel()
	gdb, dsn := testkit.Postgres(t)
	finishedErasure(t, gdb, false, "skipped", "no_email")
	finishedErasure(t, gdb, true, "sent", "")

	code, out, errOut := runCLI(t, dsn, "reconcile", "--since", "24h", "--stuck-after", "15m")
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
	require.Contains(t, out, "IN SYNC")
	require.Contains(t, out, "email skipped (no address): 1")

	// The notifier found the row already scrubbed (before the fix it recorded
	// no_email; now it says scrubbed), and an email suppressed altogether.
	skipped := finishedErasure(t, gdb, true, "skipped", "no_email")
	scrubbed := finishedErasure(t, gdb, true, "skipped", "scrubbed")
	suppressed := finishedErasure(t, gdb, true, "", "")

	code, out, errOut = runCLI(t, dsn, "reconcile", "--since", "24h", "--stuck-after", "15m")
	require.Equal(t, 1, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
	require.Contains(t, out, "OUT OF SYNC: 3 request(s) stuck")
	require.Contains(t, out, "email skipped (no address): 1")
	require.Regexp(t, skipped+`\s+erasure\s+completed\s+email_sent\s+\S+\s+\S+\s+email skipped: no_email`, out)
	require.Regexp(t, scrubbed+`\s+erasure\s+completed\s+email_sent\s+\S+\s+\S+\s+email skipped: scrubbed`, out)
	require.Regexp(t, suppressed+`\s+erasure\s+completed\s+email_sent`, out)
	require.Regexp(t, `email_sent\s+1\s+1\s+3`, out)
}
