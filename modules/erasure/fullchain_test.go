package erasure_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/gdpr-oss/gdpr/config"
	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

func freeAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

// TestFullChainFiveParticipants submits 100 erasures through the HTTP API
// of `gdpr all` (serve, requests manager, scheduler, canceller and notifier
// in one process) to the five participants: every request ends `completed`,
// its status lists the participants, the data is gone everywhere, one
// "deleted" email each, and the email system erased after the email and
// after the delay.
func TestFullChainFiveParticipants(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	const n = 100
	bin := testkit.Build(t)
	f := newFiveParticipants(t, 6*time.Second)
	h := f.h
	mp := testkit.StartMailpit(t)

	const token = "erasure-test-token"
	cfg := h.cfg
	cfg.Log.Level = "warn"
	cfg.Postgres.MaxOpenConns = 10
	cfg.Serve.Addr = freeAddr(t)
	apiURL := "http://" + cfg.Serve.Addr
	cfg.Serve.PublicURL = apiURL
	sum := sha256.Sum256([]byte(token))
	cfg.Serve.APITokens = []string{hex.EncodeToString(sum[:])}
	cfg.Serve.AdminAddr = freeAddr(t)
	cfg.Worker.AdminAddr, cfg.Scheduler.AdminAddr, cfg.Canceller.AdminAddr = freeAddr(t), freeAddr(t), freeAddr(t)
	cfg.Notify.SMTPHost, cfg.Notify.SMTPPort = mp.SMTPHost, mp.SMTPPort
	cfg.Worker.PollInterval = 200 * time.Millisecond
	cfg.Shutdown.DrainTimeout = 5 * time.Second
	raw, err := yaml.Marshal(cfg)
	require.NoError(t, err)
	file := filepath.Join(t.TempDir(), "gdpr.yaml")
	require.NoError(t, os.WriteFile(file, raw, 0o600))
	t.Cleanup(func() {
		testkit.DeleteTopology(t, cfg.AMQP, bus.Topology{Queues: []bus.Queue{
			{Name: "worker.requests"}, {Name: "worker.notify"}, {Name: "scheduler"}, {Name: "audit"}, {Name: "canceller"},
		}})
	})

	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, config.EnvPrefix) {
			env = append(env, kv)
		}
	}
	startChild(t, bin, append(env, "GDPR_CONFIG="+file), "all")
	testkit.Eventually(t, 60*time.Second, func() bool {
		resp, err := http.Get("http://" + cfg.Serve.AdminAddr + "/readyz")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, "gdpr all ready")
	f.startServices(t)

	subjects := newSubjects(n)
	f.seed(t, subjects)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range subjects {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			body := fmt.Sprintf(`{"type":"erasure","subject":{"id":%q,"email":%q}}`, subjects[i].Subject.ID, subjects[i].Subject.Email)
			var acc struct{ ID string }
			status := call(t, http.MethodPost, apiURL+"/v1/requests", token, body, &acc)
			if status != http.StatusAccepted || acc.ID == "" {
				t.Errorf("submit: %d", status)
				return
			}
			subjects[i].RequestID = acc.ID
		}()
	}
	wg.Wait()
	require.False(t, t.Failed())

	completed := func() int {
		var c int
		require.NoError(t, h.db.Raw(`SELECT count(*) FROM requests WHERE type = 'erasure' AND state = 'completed'`).Scan(&c).Error)
		return c
	}
	testkit.Eventually(t, 180*time.Second, func() bool { return completed() == n }, "every erasure request completed")
	require.Equal(t, n, h.countFinished())
	f.check(t, subjects, mp)

	// The status API shows each participant's progress.
	var st struct {
		State        string
		Participants []struct {
			Name  string
			State string
		}
	}
	require.Equal(t, http.StatusOK, call(t, http.MethodGet, apiURL+"/v1/requests/"+subjects[0].RequestID, token, "", &st))
	require.Equal(t, "completed", st.State)
	require.Len(t, st.Participants, len(f.participants))
	for _, p := range st.Participants {
		require.Contains(t, []string{"erased", "not_found"}, p.State, p.Name)
	}
}

func call(t testing.TB, method, url, token, body string, out any) int {
	req, err := http.NewRequestWithContext(context.Background(), method, url, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("%s %s: %v", method, url, err)
		return 0
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Errorf("decoding %s: %v", raw, err)
		}
	}
	return resp.StatusCode
}
