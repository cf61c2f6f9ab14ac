package app

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/gdpr-oss/gdpr/config/configtest"
	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/db"
	"github.com/gdpr-oss/gdpr/modules/erasure"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/officer"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

const (
	consoleOperatorToken = "console-e2e-operator-token-ana"
	consoleViewerToken   = "console-e2e-viewer-token-victor"
	consoleAPIToken      = "console-e2e-api-token"
	// consoleShopToken is the named API client "shop" (serve.api_clients).
	consoleShopToken = "console-e2e-api-token-shop"
)

// startConsoleRun starts `gdpr all` for the officer's tests: two named
// operators (ana acts, victor views), access reports whose source always
// fails (worker.max_attempts 1, so they fail at once), an AMQP participant
// that never answers (billing) and the email system (mailer), Mailpit.
func startConsoleRun(t *testing.T, extraEnv ...string) *opsRun {
	t.Helper()
	r := &opsRun{cfg: configtest.Config(t), bin: testkit.Build(t), mail: testkit.StartMailpit(t), client: &http.Client{Timeout: 10 * time.Second}}
	gdb, err := db.Open(t.Context(), r.cfg.Postgres)
	require.NoError(t, err)
	t.Cleanup(func() { closeDB(gdb) })
	r.gdb = gdb
	env, admin := roleEnv(t, r.cfg)
	r.admin = admin["all"]
	r.api = freeAddr(t)
	file := map[string]any{
		"serve": map[string]any{
			"addr": r.api, "public_url": "http://" + r.api,
			"api_tokens":  []string{digest(consoleAPIToken)},
			"api_clients": []map[string]any{{"name": "shop", "token_sha256": digest(consoleShopToken)}},
		},
		"worker": map[string]any{"max_attempts": 1, "poll_interval": "100ms"},
		"notify": map[string]any{"smtp_host": r.mail.SMTPHost, "smtp_port": r.mail.SMTPPort},
		"report": map[string]any{"sources": []map[string]any{{
			"name": "crm", "kind": "postgres", "dsn": r.cfg.Postgres.DSN,
			"query": "SELECT plan FROM no_such_table WHERE subject_id = @subject_id",
		}}},
		"canceller": map[string]any{
			"participants":    []map[string]any{{"name": "billing", "kind": "amqp"}, {"name": "mailer", "kind": "email"}},
			"email_delay":     "1s",
			"confirm_timeout": "1h",
		},
		"console": map[string]any{
			"operators": []map[string]any{
				{"name": "ana", "role": "operator", "token_sha256": digest(consoleOperatorToken)},
				{"name": "victor", "role": "viewer", "token_sha256": digest(consoleViewerToken)},
			},
		},
		"telemetry": map[string]any{"reconcile_interval": "0s"},
	}
	raw, err := yaml.Marshal(file)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "gdpr.yaml")
	require.NoError(t, os.WriteFile(path, raw, 0o600))
	r.env = append(env, "GDPR_CONFIG="+path, "GDPR_SERVE_ADDR="+r.api)
	r.env = append(r.env, extraEnv...)
	r.deleteTopologyAtEnd(t, raw)
	r.proc = start(t, r.bin, r.env, "all")
	r.proc.waitReady(t, r.admin)
	return r
}

func (r *opsRun) submitAs(t *testing.T, kind, regulation, subjectID, email string) string {
	t.Helper()
	return r.submitWith(t, consoleAPIToken, kind, regulation, subjectID, email)
}

// submitWith submits as the API client whose token is token.
func (r *opsRun) submitWith(t *testing.T, token, kind, regulation, subjectID, email string) string {
	t.Helper()
	body := map[string]any{"type": kind, "subject": map[string]string{"id": subjectID, "email": email}}
	if regulation != "" {
		body["regulation"] = regulation
	}
	code, out := r.do(t, http.MethodPost, "/v1/requests", token, body)
	require.Equal(t, http.StatusAccepted, code, "%s", out)
	var res struct{ ID string }
	require.NoError(t, json.Unmarshal(out, &res))
	return res.ID
}

func (r *opsRun) detail(t *testing.T, id string) officer.Detail {
	t.Helper()
	code, body := r.do(t, http.MethodGet, "/v1/admin/requests/"+id, consoleViewerToken, nil)
	require.Equal(t, http.StatusOK, code, "%s", body)
	var d officer.Detail
	require.NoError(t, json.Unmarshal(body, &d))
	return d
}

func (r *opsRun) waitState(t *testing.T, id, state string) officer.Detail {
	t.Helper()
	var d officer.Detail
	testkit.Eventually(t, 60*time.Second, func() bool {
		code, body := r.do(t, http.MethodGet, "/v1/admin/requests/"+id, consoleViewerToken, nil)
		if code != http.StatusOK {
			return false
		}
		require.NoError(t, json.Unmarshal(body, &d))
		return string(d.Request.State) == state
	}, "request %s reaches %s", id, state)
	return d
}

// act posts an action and returns the status and the decoded result.
func (r *opsRun) act(t *testing.T, token, path string, body any) (int, officer.Result, string) {
	t.Helper()
	code, out := r.do(t, http.MethodPost, path, token, body)
	var res officer.Result
	if code == http.StatusOK {
		require.NoError(t, json.Unmarshal(out, &res), "%s", out)
	}
	return code, res, string(out)
}

// mailTo waits for an email to addr whose subject contains subject and
// returns its raw text.
func (r *opsRun) mailTo(t *testing.T, addr, subject string) string {
	t.Helper()
	var raw string
	testkit.Eventually(t, 60*time.Second, func() bool {
		msgs, err := r.mail.Messages(t.Context())
		if err != nil {
			return false
		}
		for _, m := range msgs {
			if len(m.To) == 1 && m.To[0].Address == addr && strings.Contains(m.Subject, subject) {
				b, err := r.mail.Raw(t.Context(), m.ID)
				if err != nil {
					return false
				}
				raw = string(b)
				return true
			}
		}
		return false
	}, "an email %q to %s", subject, addr)
	return raw
}

// actions returns the operator_actions rows of id as "operator action reason_code".
func (r *opsRun) actions(t *testing.T, id string) []string {
	t.Helper()
	var rows []struct{ Operator, Action, ReasonCode, Participant string }
	require.NoError(t, r.gdb.Raw(`SELECT operator, action, reason_code, participant FROM operator_actions WHERE request_id = ? ORDER BY seq`, id).Scan(&rows).Error)
	out := make([]string, 0, len(rows))
	for _, x := range rows {
		s := x.Operator + " " + x.Action + " " + x.ReasonCode
		if x.Participant != "" {
			s += " " + x.Participant
		}
		out = append(out, s)
	}
	return out
}

// TestOfficerActionsEndToEnd drives every admin action against `gdpr all`
// on the real services: each allowed transition, each refused one (409),
// a viewer's action (403), the denial and extension emails at Mailpit, and
// the audit entries with the operator's name, in operator_actions and in
// the audit log (operator.action).
func TestOfficerActionsEndToEnd(t *testing.T) {
	t.Parallel()
	r := startConsoleRun(t)
	tag := testkit.ID()
	const op, viewer = consoleOperatorToken, consoleViewerToken
	base := func(id string) string { return "/v1/admin/requests/" + id }

	// No token, an API token: 401.
	code, _ := r.do(t, http.MethodGet, "/v1/admin/requests", "", nil)
	require.Equal(t, http.StatusUnauthorized, code)
	code, _ = r.do(t, http.MethodGet, "/v1/admin/requests", consoleAPIToken, nil)
	require.Equal(t, http.StatusUnauthorized, code)

	// --- An access request under CCPA: fails, is retried in place, extended, denied.
	emailA := "ann." + tag + "@example.org"
	a := r.submitAs(t, "access", "ccpa", "ann-"+tag, emailA)
	d := r.waitState(t, a, "failed")
	require.Equal(t, "ccpa", d.Request.Regulation)
	require.Equal(t, d.Request.SubmittedAt.UTC().AddDate(0, 0, 45), d.Request.DueAt.UTC(), "ccpa: 45 days")
	due := d.Request.DueAt
	require.True(t, d.Allowed[officer.ActionRetry])

	code, _, out := r.act(t, viewer, base(a)+"/retry", nil)
	require.Equal(t, http.StatusForbidden, code, "a viewer may not act: %s", out)
	code, res, out := r.act(t, op, base(a)+"/retry", map[string]any{"reason_code": "cause_fixed"})
	require.Equal(t, http.StatusOK, code, out)
	require.True(t, res.Changed)
	require.Equal(t, a, res.Request.ID, "retried in place: same id")
	require.True(t, due.Equal(res.Request.DueAt), "same due_at")
	require.Contains(t, []string{"received", "processing", "failed"}, string(res.Request.State))
	d = r.waitState(t, a, "failed")
	require.Equal(t, 1, d.Request.Attempts, "attempts started again")
	require.Equal(t, 1, d.Request.Retries)
	runs := make([][2]int, 0, len(d.Attempts))
	for _, at := range d.Attempts {
		runs = append(runs, [2]int{at.Generation, at.Attempt})
		require.Equal(t, "failed", at.Outcome)
	}
	require.Equal(t, [][2]int{{0, 1}, {1, 1}}, runs, "the detail shows the failed run's attempt and the retry's")

	// Extension: beyond the limit 400, then the default (45 more days), once.
	code, _, out = r.act(t, op, base(a)+"/extend", map[string]any{"reason": "x", "until": due.AddDate(0, 0, 46).Format(time.RFC3339)})
	require.Equal(t, http.StatusBadRequest, code, out)
	code, _, out = r.act(t, op, base(a)+"/extend", map[string]any{"reason_code": "complexity"})
	require.Equal(t, http.StatusBadRequest, code, "extend needs a reason: %s", out)
	code, res, out = r.act(t, op, base(a)+"/extend", map[string]any{"reason_code": "complexity", "reason": "Three archives must be searched by hand."})
	require.Equal(t, http.StatusOK, code, out)
	require.True(t, res.Changed)
	require.NotNil(t, res.Request.ExtendedUntil)
	require.Equal(t, due.UTC().AddDate(0, 0, 45), res.Request.ExtendedUntil.UTC())
	require.Equal(t, "ana", res.Request.ExtendedBy)
	code, res, out = r.act(t, op, base(a)+"/extend", map[string]any{"reason": "again"})
	require.Equal(t, http.StatusOK, code, "the same extension again changes nothing: %s", out)
	require.False(t, res.Changed)
	code, _, out = r.act(t, op, base(a)+"/extend", map[string]any{"reason": "again", "until": due.AddDate(0, 0, 10).Format(time.RFC3339)})
	require.Equal(t, http.StatusConflict, code, "a second, different extension: %s", out)
	mail := r.mailTo(t, emailA, "more time")
	require.Contains(t, mail, "Three archives must be searched by hand.")
	require.Contains(t, mail, "CCPA")

	// Deny with a reason code: the email names the reason and the right to complain.
	code, _, out = r.act(t, op, base(a)+"/deny", map[string]any{"reason": "no code"})
	require.Equal(t, http.StatusBadRequest, code, out)
	code, res, out = r.act(t, op, base(a)+"/deny", map[string]any{"reason_code": "excessive", "reason": "This is the fifth identical request this month."})
	require.Equal(t, http.StatusOK, code, out)
	require.True(t, res.Changed)
	require.Equal(t, "denied", string(res.Request.State))
	require.Equal(t, "excessive", res.Request.DenialCode)
	code, res, _ = r.act(t, op, base(a)+"/deny", map[string]any{"reason_code": "excessive", "reason": "again"})
	require.Equal(t, http.StatusOK, code, "deny is idempotent")
	require.False(t, res.Changed)
	for _, action := range []string{"retry", "cancel", "extend"} {
		code, _, out = r.act(t, op, base(a)+"/"+action, map[string]any{"reason": "after the denial"})
		require.Equal(t, http.StatusConflict, code, "%s of a denied request: %s", action, out)
	}
	mail = r.mailTo(t, emailA, "refused")
	require.Contains(t, mail, "fifth identical request")
	require.Contains(t, mail, "excessive")
	require.Contains(t, mail, "right to lodge a complaint")
	testkit.Eventually(t, 30*time.Second, func() bool {
		var email string
		require.NoError(t, r.gdb.Raw(`SELECT subject_email FROM requests WHERE id = ?`, a).Scan(&email).Error)
		return email == ""
	}, "the denied request's address is scrubbed once its email went out")
	require.Equal(t, []string{"ana retry cause_fixed", "ana extend complexity", "ana deny excessive"}, r.actions(t, a))

	// --- A failed request cancelled: needs a reason, idempotent, final.
	b := r.submitAs(t, "access", "", "bob-"+tag, "bob."+tag+"@example.org")
	d = r.waitState(t, b, "failed")
	require.Equal(t, "gdpr", d.Request.Regulation)
	code, _, out = r.act(t, op, base(b)+"/cancel", nil)
	require.Equal(t, http.StatusBadRequest, code, out)
	code, res, out = r.act(t, op, base(b)+"/cancel", map[string]any{"reason_code": "withdrawn_by_subject", "reason": "The subject withdrew it by phone."})
	require.Equal(t, http.StatusOK, code, out)
	require.True(t, res.Changed)
	require.Equal(t, "cancelled", string(res.Request.State))
	code, res, _ = r.act(t, op, base(b)+"/cancel", map[string]any{"reason": "again"})
	require.Equal(t, http.StatusOK, code)
	require.False(t, res.Changed)
	for _, action := range []string{"retry", "deny"} {
		code, _, out = r.act(t, op, base(b)+"/"+action, map[string]any{"reason_code": "other", "reason": "after the cancel"})
		require.Equal(t, http.StatusConflict, code, "%s of a cancelled request: %s", action, out)
	}
	var subj struct{ SubjectID, SubjectEmail string }
	require.NoError(t, r.gdb.Raw(`SELECT subject_id, subject_email FROM requests WHERE id = ?`, b).Scan(&subj).Error)
	require.Empty(t, subj.SubjectID+subj.SubjectEmail, "a cancelled request keeps no subject")

	// --- An LGPD erasure handed over: its participants, acted on one by one.
	emailE := "eve." + tag + "@example.org"
	e := r.submitAs(t, "erasure", "lgpd", "eve-"+tag, emailE)
	d = r.waitState(t, e, "handed_over")
	require.Equal(t, d.Request.SubmittedAt.UTC().AddDate(0, 0, 15), d.Request.DueAt.UTC(), "lgpd: 15 days")
	require.False(t, d.Allowed[officer.ActionExtend], "lgpd allows no extension")
	for _, action := range []string{"extend", "deny", "retry"} {
		code, _, out = r.act(t, op, base(e)+"/"+action, map[string]any{"reason_code": "other", "reason": "r"})
		require.Equal(t, http.StatusConflict, code, "%s of a handed-over lgpd erasure: %s", action, out)
	}
	testkit.Eventually(t, 30*time.Second, func() bool {
		for _, p := range r.detail(t, e).Participants {
			if p.Participant == "billing" && p.State == erasure.StateSent {
				return true
			}
		}
		return false
	}, "billing got its command")
	code, _, out = r.act(t, viewer, base(e)+"/participants/billing/resend", nil)
	require.Equal(t, http.StatusForbidden, code, out)
	code, res, out = r.act(t, op, base(e)+"/participants/billing/resend", map[string]any{"reason_code": "no_answer"})
	require.Equal(t, http.StatusOK, code, out)
	require.True(t, res.Changed)
	participant := func(name string) (state erasure.State, outcome string, attempts int) {
		for _, p := range r.detail(t, e).Participants {
			if p.Participant == name {
				return p.State, p.LastOutcome, p.Attempts
			}
		}
		return "", "", 0
	}
	_, _, n := participant("billing")
	require.Equal(t, 2, n, "resend sent attempt 2")
	code, _, out = r.act(t, op, base(e)+"/participants/nobody/resend", nil)
	require.Equal(t, http.StatusNotFound, code, out)
	code, _, out = r.act(t, op, base(e)+"/participants/billing/confirm", nil)
	require.Equal(t, http.StatusBadRequest, code, "a manual confirmation needs a note: %s", out)
	code, res, out = r.act(t, op, base(e)+"/participants/billing/confirm", map[string]any{"reason": "Deleted in the billing console, ticket OPS-7."})
	require.Equal(t, http.StatusOK, code, out)
	require.True(t, res.Changed)
	st, outcome, _ := participant("billing")
	require.Equal(t, erasure.StateErased, st)
	require.Equal(t, "manual", outcome)
	code, res, _ = r.act(t, op, base(e)+"/participants/billing/confirm", map[string]any{"reason": "again"})
	require.Equal(t, http.StatusOK, code, "confirming twice changes nothing")
	require.False(t, res.Changed)
	code, _, out = r.act(t, op, base(e)+"/participants/billing/resend", nil)
	require.Equal(t, http.StatusConflict, code, "a confirmed participant cannot be re-sent: %s", out)
	code, _, out = r.act(t, op, base(e)+"/participants/billing/not-applicable", map[string]any{"reason": "r"})
	require.Equal(t, http.StatusConflict, code, "confirmed already, differently: %s", out)
	// The email system got its command after billing's confirmation; it
	// never answers either: marked not applicable, the erasure finishes.
	testkit.Eventually(t, 30*time.Second, func() bool { s, _, _ := participant("mailer"); return s == erasure.StateSent }, "mailer got its command")
	code, res, out = r.act(t, op, base(e)+"/participants/mailer/not-applicable", map[string]any{"reason_code": "no_data_held", "reason": "The mailer never stored this address."})
	require.Equal(t, http.StatusOK, code, out)
	require.True(t, res.Changed)
	r.waitState(t, e, "completed")
	r.mailTo(t, emailE, "deleted")
	code, _, out = r.act(t, op, base(e)+"/participants/billing/resend", nil)
	require.Equal(t, http.StatusConflict, code, "a completed erasure: %s", out)
	code, _, out = r.act(t, op, base(e)+"/cancel", map[string]any{"reason": "too late"})
	require.Equal(t, http.StatusConflict, code, "a completed request cannot be cancelled: %s", out)
	require.Equal(t, []string{"ana resend no_answer billing", "ana confirm_manually erased_by_other_means billing", "ana not_applicable no_data_held mailer"}, r.actions(t, e))

	// --- An erasure cancelled after its command went out (docs/console.md).
	c := r.submitAs(t, "erasure", "", "cid-"+tag, "cid."+tag+"@example.org")
	r.waitState(t, c, "handed_over")
	testkit.Eventually(t, 30*time.Second, func() bool {
		var n int
		require.NoError(t, r.gdb.Raw(`SELECT count(*) FROM erasure_participants WHERE request_id = ? AND state = ?`, c, erasure.StateSent).Scan(&n).Error)
		return n == 1
	}, "billing's command went out")
	code, res, out = r.act(t, op, base(c)+"/cancel", map[string]any{"reason_code": "submitted_in_error", "reason": "Test account."})
	require.Equal(t, http.StatusOK, code, out)
	require.Equal(t, "cancelled", string(res.Request.State))
	var er struct {
		State                   erasure.ErasureState
		SubjectID, SubjectEmail string
	}
	require.NoError(t, r.gdb.Raw(`SELECT state, subject_id, subject_email FROM erasures WHERE request_id = ?`, c).Scan(&er).Error)
	require.Equal(t, erasure.ErasureCancelled, er.State)
	require.Empty(t, er.SubjectID+er.SubjectEmail)
	var scheduled int
	require.NoError(t, r.gdb.Raw(`SELECT count(*) FROM scheduled_messages WHERE key LIKE ?`, "erasure:"+c+":%").Scan(&scheduled).Error)
	require.Zero(t, scheduled, "nothing more is sent for a cancelled erasure")
	code, _, out = r.act(t, op, base(c)+"/participants/billing/resend", nil)
	require.Equal(t, http.StatusConflict, code, out)
	// A confirmation that still arrives is recorded, and completes nothing.
	pub := testkit.Bus(t, r.cfg.AMQP, topology(r.cfg))
	publisher := bus.NewPublisher(pub)
	conf, err := message.New("erasure.confirmed", map[string]any{"version": 1, "request_id": c, "participant": "billing", "outcome": "erased"}, nil)
	require.NoError(t, err)
	conf.CorrelationID = c
	require.NoError(t, publisher.Publish(t.Context(), conf))
	testkit.Eventually(t, 30*time.Second, func() bool {
		var st erasure.State
		require.NoError(t, r.gdb.Raw(`SELECT state FROM erasure_participants WHERE request_id = ? AND participant = 'billing'`, c).Scan(&st).Error)
		return st == erasure.StateErased
	}, "a late confirmation is recorded")
	require.Equal(t, "cancelled", string(r.detail(t, c).Request.State))

	// --- The audit log holds each action with the operator's name.
	testkit.Eventually(t, 60*time.Second, func() bool {
		var n int
		require.NoError(t, r.gdb.Raw(`SELECT count(*) FROM audit_events WHERE type = 'operator.action' AND details->>'operator' = 'ana'`).Scan(&n).Error)
		return n == 8
	}, "eight operator.action events by ana in the audit log")
	tl := r.detail(t, a).Timeline
	var kinds []string
	for _, ev := range tl {
		kinds = append(kinds, ev.Type)
	}
	require.Contains(t, kinds, "request.extended")
	require.Contains(t, kinds, "request.denied")
	require.Contains(t, kinds, "operator.action")
	for _, ev := range tl {
		raw, _ := json.Marshal(ev.Details)
		require.NotContains(t, string(raw), "fifth identical", "the reason text stays out of the audit log")
		require.NotContains(t, string(raw), emailA)
	}

	// --- Dead letters: listed and requeued, by an operator only.
	poison, err := message.New("request.submitted", map[string]any{"request_id": "not-a-uuid"}, nil)
	require.NoError(t, err)
	require.NoError(t, publisher.Publish(t.Context(), poison))
	// Members are snake_case like every other answer (they were Go's
	// field names: MessageID, RequestID, ...).
	var listed struct {
		DeadLetters []map[string]any `json:"dead_letters"`
	}
	testkit.Eventually(t, 30*time.Second, func() bool {
		lcode, lbody := r.do(t, http.MethodGet, "/v1/admin/dead-letters", viewer, nil)
		require.Equal(t, http.StatusOK, lcode, "%s", lbody)
		require.NoError(t, json.Unmarshal(lbody, &listed))
		for _, dl := range listed.DeadLetters {
			if dl["message_id"] == poison.ID {
				require.Equal(t, "worker.requests", dl["queue"], "%v", dl)
				require.NotEmpty(t, dl["class"], "%v", dl)
				require.NotEmpty(t, dl["at"], "%v", dl)
				return true
			}
		}
		return false
	}, "the poison message is listed")
	code, _ = r.do(t, http.MethodPost, "/v1/admin/dead-letters/requeue", viewer, map[string]any{})
	require.Equal(t, http.StatusForbidden, code)
	code, body := r.do(t, http.MethodPost, "/v1/admin/dead-letters/requeue", op, map[string]any{"queue": "worker.requests"})
	require.Equal(t, http.StatusOK, code, "%s", body)
	var requeued struct{ Requeued int }
	require.NoError(t, json.Unmarshal(body, &requeued))
	require.GreaterOrEqual(t, requeued.Requeued, 1)
	var requeues int
	require.NoError(t, r.gdb.Raw(`SELECT count(*) FROM operator_actions WHERE action = 'requeue_dead_letters' AND operator = 'ana'`).Scan(&requeues).Error)
	require.Equal(t, 1, requeues)
}
