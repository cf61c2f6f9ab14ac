package app

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/scheduler"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

func TestSchedulerAdminListShowCancel(t *testing.T) {
	t.Parallel()
	gdb, dsn := testkit.Postgres(t)
	store := scheduler.NewStore(gdb)
	later := time.Now().Add(time.Hour).UTC()
	for _, key := range []string{"erase-email:r1", "erase-email:r2"} {
		m, err := message.New("erasure.command.email", map[string]string{"request_id": key}, nil)
		require.NoError(t, err)
		require.NoError(t, store.Schedule(t.Context(), nil, scheduler.Entry{Key: key, DeliverAt: later, Message: m}))
	}

	code, out, errOut := runCLI(t, dsn, "scheduler", "list")
	require.Equal(t, 0, code, "stderr: %s", errOut)
	require.Contains(t, out, "erase-email:r1")
	require.Contains(t, out, "erase-email:r2")
	require.Contains(t, out, "erasure.command.email")

	code, out, errOut = runCLI(t, dsn, "scheduler", "show", "erase-email:r1")
	require.Equal(t, 0, code, "stderr: %s", errOut)
	require.Contains(t, out, `"state": "pending"`)
	require.NotContains(t, out, "request_id", "show prints metadata, not the body")

	code, out, errOut = runCLI(t, dsn, "scheduler", "cancel", "erase-email:r1")
	require.Equal(t, 0, code, "stderr: %s", errOut)
	require.Contains(t, out, "cancelled erase-email:r1")

	code, _, errOut = runCLI(t, dsn, "scheduler", "show", "erase-email:r1")
	require.Equal(t, 3, code)
	require.Contains(t, errOut, "no such key")
	code, _, _ = runCLI(t, dsn, "scheduler", "cancel", "erase-email:r1")
	require.Equal(t, 3, code, "cancelling twice says so")

	code, out, _ = runCLI(t, dsn, "scheduler", "list")
	require.Equal(t, 0, code)
	require.NotContains(t, out, "erase-email:r1")
	require.Contains(t, out, "erase-email:r2")
}
