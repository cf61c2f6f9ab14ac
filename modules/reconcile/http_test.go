package reconcile_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/reconcile"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

func TestHandler(t *testing.T) {
	t.Parallel()
	gdb, _ := testkit.Postgres(t)
	h := reconcile.Handler(reconcile.New(gdb, reconcile.Stores(gdb)), reconcile.Options{Since: 24 * time.Hour, StuckAfter: 15 * time.Minute}, testkit.Logger(t))
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	get := func(query string) (int, map[string]any) {
		resp, err := http.Get(srv.URL + "/v1/admin/reconcile" + query)
		require.NoError(t, err)
		defer resp.Body.Close()
		var body map[string]any
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
		return resp.StatusCode, body
	}

	seed{kind: event.KindAccess, stages: accessStages, at: time.Now().Add(-time.Hour), state: "completed"}.write(t, gdb)
	code, body := get("")
	require.Equal(t, http.StatusOK, code, body)

	stuck := seed{kind: event.KindAccess, stages: accessStages[:3], at: time.Now().Add(-time.Hour), state: "completed"}.write(t, gdb)
	code, body = get("?since=24h")
	require.Equal(t, http.StatusConflict, code)
	require.Equal(t, stuck, body["stuck"].([]any)[0].(map[string]any)["request_id"])

	code, _ = get("?stuck_after=2h")
	require.Equal(t, http.StatusOK, code, "idle for less than the threshold")

	code, body = get("?since=yesterday")
	require.Equal(t, http.StatusBadRequest, code)
	require.Equal(t, "since", body["field"])
}
