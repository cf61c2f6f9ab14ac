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
