package app

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/gdpr-oss/gdpr/config/configtest"
	"github.com/gdpr-oss/gdpr/modules/db"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// TestReportEmailArrivesWithoutTheSchedulerRole runs serve and worker and no
// scheduler: an access request with an address gets its report email,
// because report.ready goes through the worker's own outbox relay, not
// through the scheduler's delayed messages.
func TestReportEmailArrivesWithoutTheSchedulerRole(t *testing.T) {
	t.Parallel()
	bin := testkit.Build(t)
	cfg := configtest.Config(t)
	mail := testkit.StartMailpit(t)
	env, admin := roleEnv(t, cfg)
	api := freeAddr(t)
	raw, err := yaml.Marshal(map[string]any{
		"serve": map[string]any{
			"addr": api, "public_url": "http://" + api,
			"api_tokens": []string{digest(opsAPIToken)},
		},
		"notify": map[string]any{"smtp_host": mail.SMTPHost, "smtp_port": mail.SMTPPort},
	})
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "gdpr.yaml")
	require.NoError(t, os.WriteFile(path, raw, 0o600))
	env = append(env, "GDPR_CONFIG="+path, "GDPR_SERVE_ADDR="+api)

	serve := start(t, bin, env, "serve")
	worker := start(t, bin, env, "worker")
	serve.waitReady(t, admin["serve"])
	worker.waitReady(t, admin["worker"])

	body, err := json.Marshal(map[string]any{"type": "access", "subject": map[string]string{"id": "u-outbox", "email": "outbox@example.com"}})
	require.NoError(t, err)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+api+"/v1/requests", bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+opsAPIToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusAccepted, resp.StatusCode)

	testkit.Eventually(t, 90*time.Second, func() bool {
		n, err := mail.Count(t.Context())
		return err == nil && n == 1
	}, "the report email arrives with no scheduler role running")

	gdb, err := db.Open(t.Context(), cfg.Postgres)
	require.NoError(t, err)
	t.Cleanup(func() { closeDB(gdb) })
	var delayed int64
	require.NoError(t, gdb.Raw(`SELECT count(*) FROM scheduled_messages`).Scan(&delayed).Error)
	require.Zero(t, delayed, "nothing of an access request waits for the scheduler")
	testkit.Eventually(t, 30*time.Second, func() bool {
		var pending int64
		require.NoError(t, gdb.Raw(`SELECT count(*) FROM outbox_messages`).Scan(&pending).Error)
		return pending == 0
	}, "the worker's relay published everything its modules wrote")
}
