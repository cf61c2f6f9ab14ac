package app

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/config"
	"github.com/gdpr-oss/gdpr/config/configtest"
	"github.com/gdpr-oss/gdpr/modules/audit"
	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/db"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/participant"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

const (
	opsAPIToken   = "ops-e2e-api-token"
	opsAdminToken = "ops-e2e-admin-token"
)

func digest(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// opsSubject is a test data subject; its email and name must never appear
// in a log line.
type opsSubject struct {
	id, email, name string
}

// opsRun is one `gdpr all` process with everything it talks to.
type opsRun struct {
	cfg    config.Config
	gdb    *gorm.DB
	bin    string
	env    []string
	admin  string
	api    string
	proc   *proc
	mail   *testkit.Mailpit
	client *http.Client
}

// startOpsRun starts `gdpr all`; extraEnv is added to its environment.
func startOpsRun(t *testing.T, extraEnv ...string) *opsRun {
	t.Helper()
	r := &opsRun{cfg: configtest.Config(t), bin: testkit.Build(t), mail: testkit.StartMailpit(t), client: &http.Client{Timeout: 10 * time.Second}}
	gdb, err := db.Open(t.Context(), r.cfg.Postgres)
	require.NoError(t, err)
	t.Cleanup(func() { closeDB(gdb) })
	r.gdb = gdb
	// A source holding personal data (names, emails) for the access reports.
	require.NoError(t, gdb.Exec(`CREATE TABLE crm_customers (subject_id text, email text, full_name text, plan text)`).Error)

	// A third-party API erased by the canceller's own HTTP calls.
	partner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodDelete {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(partner.Close)

	env, admin := roleEnv(t, r.cfg)
	r.admin = admin["all"]
	r.api = freeAddr(t)
	file := map[string]any{
		"serve": map[string]any{
			"addr":         r.api,
			"public_url":   "http://" + r.api,
			"api_tokens":   []string{digest(opsAPIToken)},
			"admin_tokens": []string{digest(opsAdminToken)},
		},
		"notify": map[string]any{"smtp_host": r.mail.SMTPHost, "smtp_port": r.mail.SMTPPort},
		"report": map[string]any{"sources": []map[string]any{{
			"name": "crm", "kind": "postgres", "dsn": r.cfg.Postgres.DSN,
			"query": "SELECT email, full_name, plan FROM crm_customers WHERE subject_id = @subject_id",
		}}},
		// The privacy page's requests carry only the verified address; this
		// finds the account id the crm source and the partner are keyed by.
		"privacy": map[string]any{"account_lookup": map[string]any{
			"kind": "postgres", "dsn": r.cfg.Postgres.DSN,
			"query": "SELECT subject_id FROM crm_customers WHERE lower(email) = lower(@email)",
		}},
		"canceller": map[string]any{
			"participants": []map[string]any{
				{"name": "billing", "kind": "amqp"}, {"name": "mailer", "kind": "email"},
				{"name": "partner", "kind": "http", "url": partner.URL + "/users/{subject_id}"},
			},
			"email_delay": "1s",
		},
		"telemetry": map[string]any{"gauge_interval": "500ms", "reconcile_interval": "500ms", "stuck_after": "2s"},
	}
	raw, err := yaml.Marshal(file)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "gdpr.yaml")
	require.NoError(t, os.WriteFile(path, raw, 0o600))
	r.env = append(env, "GDPR_CONFIG="+path, "GDPR_LOG_LEVEL=debug", "GDPR_SERVE_ADDR="+r.api)
	r.env = append(r.env, extraEnv...)

	r.deleteTopologyAtEnd(t, raw)
	r.startParticipants(t)

	r.proc = start(t, r.bin, r.env, "all")
	r.proc.waitReady(t, r.admin)
	return r
}

// deleteTopologyAtEnd takes the participants of the config file raw into
// r.cfg and deletes, when t ends, every queue and exchange the process
// declares for that config (participant queues included), after the
// process has stopped: a broker that collects the queues of finished tests
// grows until it stops answering.
func (r *opsRun) deleteTopologyAtEnd(t *testing.T, raw []byte) {
	t.Helper()
	var file config.Config
	require.NoError(t, yaml.Unmarshal(raw, &file))
	r.cfg.Canceller.Participants = file.Canceller.Participants
	t.Cleanup(func() { testkit.DeleteTopology(t, r.cfg.AMQP, topology(r.cfg)) })
}

// startParticipants runs the billing service and the email system as SDK
// participants on their own connection.
func (r *opsRun) startParticipants(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	conn, err := bus.Dial(ctx, r.cfg.AMQP, "gdpr-test-participants-"+r.cfg.AMQP.Prefix, topology(r.cfg), testkit.Logger(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	for _, name := range []string{"billing", "mailer"} {
		p, err := participant.New(conn, name, func(context.Context, event.Subject) (string, error) {
			return event.OutcomeErased, nil
		}, participant.Options{})
		require.NoError(t, err)
		require.NoError(t, p.Start(ctx))
		t.Cleanup(func() {
			stopCtx, stop := context.WithTimeout(context.Background(), 10*time.Second)
			defer stop()
			_ = p.Stop(stopCtx)
		})
	}
}

func (r *opsRun) do(t *testing.T, method, path, token string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		require.NoError(t, err)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, "http://"+r.api+path, rd)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	// A caller's trace continues through every role.
	req.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	resp, err := r.client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, b
}

func (r *opsRun) submit(t *testing.T, kind string, s opsSubject) string {
	t.Helper()
	code, body := r.do(t, http.MethodPost, "/v1/requests", opsAPIToken, map[string]any{
		"type": kind, "subject": map[string]string{"id": s.id, "email": s.email},
	})
	require.Equal(t, http.StatusAccepted, code, "%s", body)
	var out struct{ ID string }
	require.NoError(t, json.Unmarshal(body, &out))
	require.NotEmpty(t, out.ID)
	return out.ID
}

func (r *opsRun) state(t *testing.T, id string) string {
	t.Helper()
	code, body := r.do(t, http.MethodGet, "/v1/requests/"+id, opsAPIToken, nil)
	if code != http.StatusOK {
		return fmt.Sprintf("http %d", code)
	}
	var out struct{ State string }
	require.NoError(t, json.Unmarshal(body, &out))
	return out.State
}

// storedState is the request's state as the requests manager stored it: a
// request from the self-service page is no API client's, so its status over
// the API answers 404.
func (r *opsRun) storedState(t *testing.T, id string) string {
	t.Helper()
	var state string
	require.NoError(t, r.gdb.Raw(`SELECT state FROM requests WHERE id = ?`, id).Scan(&state).Error)
	return state
}

func (r *opsRun) metrics(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := r.client.Get("http://" + r.admin + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	return mfs
}

// sum adds the values of a counter or gauge family whose labels include want.
func sum(mfs map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	mf, ok := mfs[name]
	if !ok {
		return -1
	}
	var total float64
metrics:
	for _, m := range mf.GetMetric() {
		for _, lp := range m.GetLabel() {
			if v, ok := want[lp.GetName()]; ok && v != lp.GetValue() {
				continue metrics
			}
		}
		switch {
		case m.Counter != nil:
			total += m.GetCounter().GetValue()
		case m.Gauge != nil:
			total += m.GetGauge().GetValue()
		}
	}
	return total
}

func (r *opsRun) reconcile(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), r.bin, append([]string{"reconcile"}, args...)...)
	cmd.Env = r.env
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), string(out)
	}
	require.NoError(t, err, "%s", out)
	return 0, string(out)
}

// TestOperationsEndToEnd runs `gdpr all` on real PostgreSQL, RabbitMQ,
// Redis and Mailpit with two SDK participants, submits access and erasure
// requests over HTTP, and checks what operators rely on: /metrics counts
// equal what was produced, the in-sync check passes and then names the
// request whose email was suppressed and the one whose report was deleted,
// a timeline spans serve, worker, canceller and scheduler in causal order,
// log lines carry their ids, and no log line holds a subject's email or name.
func TestOperationsEndToEnd(t *testing.T) {
	t.Parallel()
	r := startOpsRun(t)
	ctx := t.Context()
	tag := testkit.ID()
	subject := func(i int) opsSubject {
		return opsSubject{id: fmt.Sprintf("cust-%s-%d", tag, i), email: fmt.Sprintf("jane.%s.%d@example.org", tag, i), name: fmt.Sprintf("Janet Opsperson%s%d", tag, i)}
	}
	const accessN, erasureN = 4, 2
	var subjects []opsSubject
	for i := range accessN + erasureN + 1 {
		s := subject(i)
		subjects = append(subjects, s)
		require.NoError(t, r.gdb.Exec(`INSERT INTO crm_customers VALUES (?, ?, ?, 'premium')`, s.id, s.email, s.name).Error)
	}
	var access, erasures []string
	for i := range accessN {
		access = append(access, r.submit(t, event.KindAccess, subjects[i]))
	}
	for i := range erasureN {
		erasures = append(erasures, r.submit(t, event.KindErasure, subjects[accessN+i]))
	}
	all := append(append([]string{}, access...), erasures...)
	testkit.Eventually(t, 120*time.Second, func() bool {
		for _, id := range all {
			if r.state(t, id) != "completed" {
				return false
			}
		}
		return true
	}, "every request completed")
	testkit.Eventually(t, 60*time.Second, func() bool {
		n, err := r.mail.Count(ctx)
		return err == nil && n == accessN+erasureN
	}, "one email per request")

	// The in-sync check passes once the audit log caught up.
	var out string
	testkit.Eventually(t, 60*time.Second, func() bool {
		var code int
		code, out = r.reconcile(t, "--since", "1h", "--stuck-after", "1s")
		return code == 0
	}, "gdpr reconcile in sync after a clean run")
	require.Contains(t, out, "IN SYNC")
	require.Regexp(t, fmt.Sprintf(`submitted\s+%d\s+%d\s+%d\s+0`, accessN, erasureN, accessN+erasureN), out)
	require.Regexp(t, fmt.Sprintf(`email_sent\s+%d\s+%d\s+%d\s+0`, accessN, erasureN, accessN+erasureN), out)

	// /metrics equals what was produced: requests, reports, emails.
	var reports, emails int64
	require.NoError(t, r.gdb.Raw(`SELECT count(*) FROM reports`).Scan(&reports).Error)
	require.NoError(t, r.gdb.Raw(`SELECT count(*) FROM notifications WHERE state = 'sent'`).Scan(&emails).Error)
	mailed, err := r.mail.Count(ctx)
	require.NoError(t, err)
	require.EqualValues(t, accessN, reports)
	require.EqualValues(t, accessN+erasureN, emails)
	testkit.Eventually(t, 10*time.Second, func() bool {
		mfs := r.metrics(t)
		return sum(mfs, "gdpr_out_of_sync", nil) == 0 && sum(mfs, "gdpr_open_requests", nil) == 0
	}, "gauges show nothing open, nothing out of sync")
	mfs := r.metrics(t)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"gdpr_requests_submitted_total", map[string]string{"type": "access"}, accessN},
		{"gdpr_requests_submitted_total", map[string]string{"type": "erasure"}, erasureN},
		{"gdpr_requests_received_total", map[string]string{"type": "access"}, accessN},
		{"gdpr_requests_received_total", map[string]string{"type": "erasure"}, erasureN},
		{"gdpr_reports_generated_total", nil, float64(reports)},
		{"gdpr_emails_sent_total", nil, float64(mailed)},
		{"gdpr_emails_sent_total", nil, float64(emails)},
		{"gdpr_erasures_requested_total", nil, erasureN},
		{"gdpr_erasures_completed_total", nil, erasureN},
		{"gdpr_participant_confirmations_total", map[string]string{"participant": "billing"}, erasureN},
		{"gdpr_participant_confirmations_total", map[string]string{"participant": "mailer"}, erasureN},
		{"gdpr_failures_total", nil, 0},
	} {
		got := sum(mfs, c.name, c.labels)
		if c.want == 0 && got == -1 {
			continue // a counter vector with no series yet
		}
		require.Equal(t, c.want, got, "%s%v", c.name, c.labels)
	}

	// The timeline of an erasure spans every role, in causal order.
	code, body := r.do(t, http.MethodGet, "/v1/admin/requests/"+erasures[0]+"/timeline", opsAdminToken, nil)
	require.Equal(t, http.StatusOK, code, "%s", body)
	var tl audit.TimelineResponse
	require.NoError(t, json.Unmarshal(body, &tl))
	seen := map[string]bool{}
	roles := map[string]bool{}
	var types []string
	for i, e := range tl.Events {
		if e.CausationID != "" {
			require.True(t, seen[e.CausationID] || !causedWithin(tl.Events, e.CausationID), "event %d %s listed before its cause", i, e.RoutingKey)
		}
		seen[e.MessageID] = true
		roles[e.Role] = true
		if e.DispatchedBy != "" {
			roles[e.DispatchedBy] = true
		}
		types = append(types, e.RoutingKey)
	}
	// Messages due at once go through the outbox relays of worker and
	// canceller; the scheduler role is needed only for delayed ones, and
	// this run's erasure has none left by the time it completes.
	for _, role := range []string{"serve", "worker", "canceller", "outbox", "participant"} {
		require.True(t, roles[role], "no %s event in the timeline: %v", role, types)
	}
	for _, typ := range []string{event.TypeRequestSubmitted, event.TypeRequestReceived, event.TypeErasureRequested,
		"erasure.command.billing", event.TypeErasureCalled, event.TypeErasureCompleted, event.TypeNotificationSent, "erasure.command.mailer", event.TypeErasureFinished} {
		require.Contains(t, types, typ)
	}
	// The HTTP participant's answer is in `gdpr timeline`, not only its timer.
	code, out, errOut := runCLI(t, r.cfg.Postgres.DSN, "timeline", erasures[0])
	require.Equal(t, 0, code, errOut)
	require.Regexp(t, `canceller( via (scheduler|outbox))?\s+erasure\.called\s+\S+\s+\S+\s+attempt=1 http_status=204 outcome=erased participant=partner\n`, out)
	code, body = r.do(t, http.MethodGet, "/v1/admin/reconcile?since=1h&stuck_after=2s", opsAdminToken, nil)
	require.Equal(t, http.StatusOK, code, "admin in-sync check: %s", body)
	code, _ = r.do(t, http.MethodGet, "/v1/admin/requests/"+erasures[0]+"/timeline", opsAPIToken, nil)
	require.Equal(t, http.StatusUnauthorized, code, "the API token is not an admin token")

	// Break things behind the service's back: suppress one email (the
	// notifier's queue no longer gets report.ready), delete one report.
	unbind(t, r.cfg, "worker.notify", event.TypeReportReady)
	suppressed := r.submit(t, event.KindAccess, subjects[accessN+erasureN])
	testkit.Eventually(t, 60*time.Second, func() bool { return r.state(t, suppressed) == "completed" }, "the extra request completed")
	require.NoError(t, r.gdb.Exec(`DELETE FROM reports WHERE request_id = ?`, access[0]).Error)
	testkit.Eventually(t, 60*time.Second, func() bool {
		var exit int
		exit, out = r.reconcile(t, "--since", "1h", "--stuck-after", "2s")
		return exit == 1 && strings.Contains(out, suppressed) && strings.Contains(out, access[0])
	}, "gdpr reconcile names both requests")
	require.Contains(t, out, "OUT OF SYNC: 2 request(s) stuck")
	require.Regexp(t, suppressed+`\s+access\s+completed\s+email_sent`, out)
	require.Regexp(t, access[0]+`\s+access\s+completed\s+report_generated`, out)
	code, body = r.do(t, http.MethodGet, "/v1/admin/reconcile?since=1h&stuck_after=2s", opsAdminToken, nil)
	require.Equal(t, http.StatusConflict, code, "%s", body)
	require.Contains(t, string(body), suppressed)
	testkit.Eventually(t, 20*time.Second, func() bool {
		mfs := r.metrics(t)
		return sum(mfs, "gdpr_out_of_sync", map[string]string{"stage": "email_sent"}) == 1 &&
			sum(mfs, "gdpr_out_of_sync", map[string]string{"stage": "report_generated"}) == 1
	}, "gdpr_out_of_sync shows both")

	r.proc.signal(t, syscall.SIGTERM)
	require.Equal(t, 0, r.proc.exitCode(t, exitBound))
	logs := r.proc.out.String()

	// No subject's email or name in any log line.
	for _, s := range subjects {
		require.NotContains(t, logs, s.email)
		require.NotContains(t, logs, s.name)
	}
	checkLogIDs(t, r.gdb, logs, append(all, suppressed))
}

// causedWithin reports whether the cause id is one of the timeline's events.
func causedWithin(events []audit.Event, id string) bool {
	for _, e := range events {
		if e.MessageID == id {
			return true
		}
	}
	return false
}

// unbind stops a queue of the test's own topology from receiving a routing key.
func unbind(t *testing.T, cfg config.Config, queue, key string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	conn, err := bus.Dial(ctx, cfg.AMQP, "gdpr-test-unbind-"+cfg.AMQP.Prefix, bus.Topology{}, testkit.Logger(t))
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	defer ch.Close()
	require.NoError(t, ch.QueueUnbind(conn.QueueName(queue), key, conn.Exchange(), nil))
}

// callerTraceID is the trace id of the traceparent every test call sends.
const callerTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"

// checkLogIDs requires every log line written while handling a message to
// carry that message's request_id and trace_id (as the audit log recorded
// them), and every other line about one of the requests to carry a trace_id.
// The worker pool picks requests from PostgreSQL, not from a message: its
// lines carry the trace and the id of the request.received message kept on
// the requests row (migration 014).
func checkLogIDs(t *testing.T, gdb *gorm.DB, logs string, requestIDs []string) {
	t.Helper()
	ours := map[string]bool{}
	for _, id := range requestIDs {
		ours[id] = true
	}
	var audited []struct {
		MessageID, RequestID, TraceID, Type string
	}
	require.NoError(t, gdb.Raw(`SELECT message_id, request_id, trace_id, type FROM audit_events`).Scan(&audited).Error)
	byMsg := map[string]struct{ requestID, traceID string }{}
	for _, a := range audited {
		byMsg[a.MessageID] = struct{ requestID, traceID string }{a.RequestID, a.TraceID}
		// HTTP -> AMQP: serve continued the caller's trace.
		if a.Type == event.TypeRequestSubmitted && ours[a.RequestID] {
			require.Equal(t, callerTraceID, a.TraceID, "request.submitted of %s does not continue the caller's trace", a.RequestID)
		}
	}
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var messageLines, requestLines int
	var problems []string
	fail := func(line string) {
		if len(problems) < 10 {
			problems = append(problems, line)
		}
	}
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) != nil {
			continue
		}
		msgID, _ := line["message_id"].(string)
		reqID, _ := line["request_id"].(string)
		traceID, _ := line["trace_id"].(string)
		switch {
		case msgID != "":
			messageLines++
			if traceID == "" {
				fail(sc.Text())
			}
			if a, ok := byMsg[msgID]; ok && a.requestID != "" && (reqID != a.requestID || traceID != a.traceID) {
				fail(sc.Text())
			}
		case ours[reqID]:
			if traceID != "" {
				requestLines++
				continue
			}
			fail(sc.Text())
		}
	}
	require.Greater(t, messageLines, 0, "no log line written while handling a message")
	require.Greater(t, requestLines, 0, "no log line written while handling an HTTP request")
	require.Empty(t, problems, "log lines without their ids")
}
