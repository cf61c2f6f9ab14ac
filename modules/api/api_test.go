package api_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/api"
	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/download"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/intake"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/testkit"
	"github.com/gdpr-oss/gdpr/modules/trace"
)

const accessBody = `{"type":"access","subject":{"id":"user-1","email":"ann@example.com"}}`

func TestSubmitAnswers202OnlyOnceTheMessageIsInTheQueue(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{})
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	for i := range 3 {
		body := fmt.Sprintf(`{"type":"access","subject":{"id":"user-%d","email":"ann%d@example.com"}}`, i, i)
		res := h.submit(body, "traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
		require.Equal(t, http.StatusAccepted, res.status, "%s", res.body)
		m := res.json(t)
		id := m["id"].(string)
		require.Equal(t, "submitted", m["state"])
		require.Equal(t, "/v1/requests/"+id, res.header.Get("Location"))

		// The confirm came before the answer, so the message is already queued.
		msgs := h.take()
		require.Len(t, msgs, 1, "exactly the confirmed message is in the queue when 202 arrives")
		d := msgs[0]
		require.Equal(t, event.TypeRequestSubmitted, d.Type)
		require.Equal(t, id, d.CorrelationId)
		require.NotEmpty(t, d.MessageId)
		tp, _ := d.Headers[bus.HeaderTraceparent].(string)
		got, ok := trace.TraceID(tp)
		require.True(t, ok, "traceparent header %q", tp)
		require.Equal(t, traceID, got, "the caller's trace continues into the message")
		var sub event.RequestSubmitted
		require.NoError(t, json.Unmarshal(d.Body, &sub))
		require.Equal(t, id, sub.RequestID)
		require.Equal(t, "access", sub.Type)
		require.Equal(t, event.Subject{ID: fmt.Sprintf("user-%d", i), Email: fmt.Sprintf("ann%d@example.com", i)}, sub.Subject)
		require.WithinDuration(t, time.Now(), sub.SubmittedAt, time.Minute)
	}
	require.Equal(t, 3.0, h.submittedCount("access"))
	require.Equal(t, 0.0, h.submittedCount("erasure"))

	// Every log line of the POSTs names the request and the caller's trace.
	lines := h.logs.lines(t, "http request")
	require.NotEmpty(t, lines)
	for _, l := range lines {
		require.Equal(t, traceID, l["trace_id"], "%v", l)
		require.NotEmpty(t, l["request_id"], "%v", l)
	}
}

func TestContentTypeWithCharsetIsAccepted(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{})
	res := h.submit(`{"type":"erasure","subject":{"email":"bob@example.com"}}`, "Content-Type", "application/json; charset=utf-8")
	require.Equal(t, http.StatusAccepted, res.status, "%s", res.body)
	require.Len(t, h.take(), 1)
	require.Equal(t, 1.0, h.submittedCount("erasure"))
}

func TestBadInputIsRefusedNamingTheFieldAndPublishesNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{})
	big := `{"type":"access","subject":{"id":"` + strings.Repeat("x", 64<<10) + `"}}`
	cases := []struct {
		name        string
		contentType string
		body        string
		chunked     bool
		status      int
		field       string
	}{
		{"malformed JSON", "application/json", `{"type":"access",`, false, 400, "body"},
		{"not an object", "application/json", `["access"]`, false, 400, "body"},
		{"unknown type", "application/json", `{"type":"portability","subject":{"id":"u1"}}`, false, 400, "type"},
		{"missing type", "application/json", `{"subject":{"id":"u1"}}`, false, 400, "type"},
		{"missing subject", "application/json", `{"type":"access"}`, false, 400, "subject"},
		{"subject without identifiers", "application/json", `{"type":"access","subject":{}}`, false, 400, "subject"},
		{"bad email", "application/json", `{"type":"access","subject":{"email":"ann@@example"}}`, false, 400, "subject.email"},
		{"unknown member", "application/json", `{"type":"access","subject":{"id":"u1"},"name":"Ann"}`, false, 400, "name"},
		{"dot-dot id", "application/json", `{"type":"access","subject":{"id":".."}}`, false, 400, "subject.id"},
		{"dot id", "application/json", `{"type":"erasure","subject":{"id":".","email":"ann@example.com"}}`, false, 400, "subject.id"},
		{"id with U+202E", "application/json", `{"type":"access","subject":{"id":"u\u202e1"}}`, false, 400, "subject.id"},
		{"id with U+200B", "application/json", `{"type":"access","subject":{"id":"u\u200b1"}}`, false, 400, "subject.id"},
		{"email with U+FEFF", "application/json", `{"type":"access","subject":{"email":"\ufeffann@example.com"}}`, false, 400, "subject.email"},
		{"body over 64 KiB", "application/json", big, false, 413, "body"},
		{"body over 64 KiB without length", "application/json", big, true, 413, "body"},
		{"wrong content type", "text/plain", accessBody, false, 415, "Content-Type"},
		{"form content type", "application/x-www-form-urlencoded", "type=access", false, 415, "Content-Type"},
		{"no content type", "", accessBody, false, 415, "Content-Type"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader = strings.NewReader(tc.body)
			if tc.chunked {
				body = io.MultiReader(body) // hides the length: sent chunked
			}
			req := h.request(http.MethodPost, "/v1/requests", body, "Authorization", "Bearer "+h.token, "Idempotency-Key", "k-"+tc.name)
			if tc.contentType != "" {
				req.Header.Set("Content-Type", tc.contentType)
			}
			res := h.do(req)
			require.Equal(t, tc.status, res.status, "%s", res.body)
			p := res.json(t)
			require.Equal(t, tc.field, p["field"], "%s", res.body)
			require.NotEmpty(t, p["message"])
			require.Equal(t, "application/json", res.header.Get("Content-Type"))
		})
	}
	require.Empty(t, h.take(), "bad input publishes nothing")
	require.Equal(t, 0.0, h.submittedCount("access"))

	// A too-long Idempotency-Key is bad input as well.
	res := h.submit(accessBody, "Idempotency-Key", strings.Repeat("k", 256))
	require.Equal(t, http.StatusBadRequest, res.status)
	require.Equal(t, "Idempotency-Key", res.json(t)["field"])
	require.Empty(t, h.take())
}

func TestMissingOrWrongTokenGets401(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{})
	id := "0193a5c2-7e0b-7c4d-8f00-0123456789ab"
	cases := map[string]string{
		"missing":        "",
		"wrong":          "Bearer not-the-token",
		"digest instead": "Bearer " + digest(h.token),
		"other scheme":   "Basic " + h.token,
		"empty bearer":   "Bearer ",
	}
	for name, auth := range cases {
		for _, req := range []*http.Request{
			h.request(http.MethodPost, "/v1/requests", strings.NewReader(accessBody), "Content-Type", "application/json"),
			h.request(http.MethodGet, "/v1/requests/"+id, nil),
		} {
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			res := h.do(req)
			require.Equal(t, http.StatusUnauthorized, res.status, "%s %s: %s", name, req.Method, res.body)
			require.Equal(t, "Authorization", res.json(t)["field"])
			require.Contains(t, res.header.Get("WWW-Authenticate"), "Bearer")
		}
	}
	require.Empty(t, h.take(), "nothing published without a valid token")
	// The scheme is case-insensitive (RFC 9110) and a second configured token works too.
	res := h.do(h.request(http.MethodPost, "/v1/requests", strings.NewReader(accessBody), "Content-Type", "application/json", "Authorization", "bearer "+h.token+"-other-app"))
	require.Equal(t, http.StatusAccepted, res.status, "%s", res.body)
}

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{})

	first := h.submit(accessBody, "Idempotency-Key", "order-1")
	require.Equal(t, http.StatusAccepted, first.status, "%s", first.body)
	id := first.json(t)["id"]
	// The same request written differently is the same request.
	same := `{ "subject": {"email":"ann@example.com", "id":"user-1"}, "type": "access" }`
	for range 3 {
		again := h.submit(same, "Idempotency-Key", "order-1")
		require.Equal(t, http.StatusAccepted, again.status)
		require.Equal(t, id, again.json(t)["id"])
		require.Equal(t, "/v1/requests/"+id.(string), again.header.Get("Location"))
	}
	conflict := h.submit(`{"type":"erasure","subject":{"id":"user-1","email":"ann@example.com"}}`, "Idempotency-Key", "order-1")
	require.Equal(t, http.StatusConflict, conflict.status)
	require.Equal(t, "Idempotency-Key", conflict.json(t)["field"])

	// Keys are scoped per API token: another app's "order-1" is its own request.
	other := h.do(h.request(http.MethodPost, "/v1/requests", strings.NewReader(accessBody),
		"Content-Type", "application/json", "Authorization", "Bearer "+h.token+"-other-app", "Idempotency-Key", "order-1"))
	require.Equal(t, http.StatusAccepted, other.status)
	require.NotEqual(t, id, other.json(t)["id"])
	// Without a key every submission is new.
	require.NotEqual(t, h.submit(accessBody).json(t)["id"], h.submit(accessBody).json(t)["id"])

	msgs := h.take()
	require.Len(t, msgs, 4, "order-1 once, the other app's once, two keyless")
	require.Equal(t, 4.0, h.submittedCount("access"))
}

func TestConcurrentDuplicatesGetOneRequest(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{})
	const n = 24
	type result struct {
		status int
		id     string
		body   string
	}
	run := func(key string, bodyFor func(i int) string) []result {
		results := make([]result, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				<-start
				res := h.submit(bodyFor(i), "Idempotency-Key", key)
				r := result{status: res.status, body: bodyFor(i)}
				if res.status == http.StatusAccepted {
					r.id = res.json(t)["id"].(string)
				}
				results[i] = r
			})
		}
		close(start)
		wg.Wait()
		return results
	}

	// All with the same body: one request, one id for all.
	results := run("dup-same", func(int) string { return accessBody })
	for _, r := range results {
		require.Equal(t, http.StatusAccepted, r.status)
		require.Equal(t, results[0].id, r.id)
	}
	require.Len(t, h.take(), 1)

	// Half with another body: whichever body won, its submitters share one
	// id and every other submitter gets 409.
	erasure := `{"type":"erasure","subject":{"id":"user-1"}}`
	results = run("dup-mixed", func(i int) string {
		if i%2 == 0 {
			return accessBody
		}
		return erasure
	})
	var winner result
	for _, r := range results {
		if r.status == http.StatusAccepted {
			winner = r
		}
	}
	require.NotEmpty(t, winner.id)
	for _, r := range results {
		if r.body == winner.body {
			require.Equal(t, http.StatusAccepted, r.status)
			require.Equal(t, winner.id, r.id)
		} else {
			require.Equal(t, http.StatusConflict, r.status)
		}
	}
	msgs := h.take()
	require.Len(t, msgs, 1)
	require.Equal(t, winner.id, msgs[0].CorrelationId)
}

// TestBrokerUnavailableGets503AndNothingHalfDone takes the broker away from
// the server's own AMQP connection (through a relay only this test uses):
// refused (down) and silent (publishes swallowed, no confirm).
func TestBrokerUnavailableGets503AndNothingHalfDone(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"refused", "silent"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, harnessOptions{viaProxy: true, confirmTimeout: time.Second})
			require.Equal(t, http.StatusAccepted, h.submit(accessBody).status, "works while the broker is reachable")
			require.Len(t, h.take(), 1)

			if mode == "refused" {
				h.proxy.down()
			} else {
				h.proxy.freeze()
			}
			for _, key := range []string{"", "retry-me"} {
				res := h.submit(accessBody, "Idempotency-Key", key)
				require.Equal(t, http.StatusServiceUnavailable, res.status, "%s", res.body)
				require.Equal(t, "3", res.header.Get("Retry-After"))
				require.Equal(t, "unavailable", res.json(t)["error"])
				require.Empty(t, res.header.Get("Location"))
			}
			require.Equal(t, 1.0, h.submittedCount("access"), "no 503 was counted as submitted")

			if mode == "refused" {
				h.proxy.up()
			} else {
				h.proxy.thaw()
			}
			testkit.Eventually(t, 20*time.Second, func() bool { return h.pubConn.Check(t.Context()) == nil }, "server reconnected")
			require.Empty(t, h.take(), "nothing was published during the outage")

			// The retry with the same key is accepted once, and only then.
			res := h.submit(accessBody, "Idempotency-Key", "retry-me")
			require.Equal(t, http.StatusAccepted, res.status, "%s", res.body)
			id := res.json(t)["id"].(string)
			again := h.submit(accessBody, "Idempotency-Key", "retry-me")
			require.Equal(t, id, again.json(t)["id"])
			msgs := h.take()
			require.Len(t, msgs, 1)
			require.Equal(t, id, msgs[0].CorrelationId)
			st := h.status(id)
			require.Equal(t, http.StatusOK, st.status)
			require.Equal(t, "submitted", st.json(t)["state"])
		})
	}
}

// TestConcurrentSubmissionsWaitForConfirmsTogether: with confirms held back,
// every concurrent submission's publish reaches the wire; none waits for
// another's confirm first.
func TestConcurrentSubmissionsWaitForConfirmsTogether(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{viaProxy: true, confirmTimeout: 10 * time.Second})
	// Open every publishing channel (they are used round-robin).
	for range h.amqp.PublishChannels {
		require.Equal(t, http.StatusAccepted, h.submit(accessBody).status)
	}
	h.proxy.freeze()
	const n = 16
	var wg sync.WaitGroup
	statuses := make([]int, n)
	for i := range n {
		wg.Go(func() { statuses[i] = h.submit(accessBody, "Idempotency-Key", fmt.Sprint("c", i)).status })
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return h.proxy.frozenPublishes.Load() == n },
		"all %d publishes sent while no confirm came back (sent %d)", n, h.proxy.frozenPublishes.Load())
	h.proxy.thaw() // drops the connection: every outcome is unknown
	wg.Wait()
	for _, s := range statuses {
		require.Equal(t, http.StatusServiceUnavailable, s)
	}
	require.Len(t, h.take(), int(h.amqp.PublishChannels))
}

func TestStatus(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{participants: participantsFunc(func(_ context.Context, id string) ([]intake.Participant, error) {
		return []intake.Participant{{Name: "billing", State: "confirmed", Attempts: 1, UpdatedAt: time.Now().UTC()}, {Name: "email", State: "pending", Attempts: 2, UpdatedAt: time.Now().UTC()}}, nil
	})})

	t.Run("submitted, not yet stored", func(t *testing.T) {
		res := h.submit(accessBody)
		id := res.json(t)["id"].(string)
		st := h.status(id)
		require.Equal(t, http.StatusOK, st.status, "%s", st.body)
		m := st.json(t)
		require.Equal(t, "submitted", m["state"])
		require.Equal(t, "access", m["type"])
		require.Equal(t, id, m["id"])
		submitted, err := time.Parse(time.RFC3339Nano, m["submitted_at"].(string))
		require.NoError(t, err)
		due, err := time.Parse(time.RFC3339Nano, m["due_at"].(string))
		require.NoError(t, err)
		require.Equal(t, intake.DueAt(submitted), due)
		require.NotContains(t, string(st.body), "ann@example.com", "no personal data")
		require.NotContains(t, string(st.body), "user-1")
	})

	t.Run("submitted under another regulation: its clock", func(t *testing.T) {
		for reg, days := range map[string]int{"ccpa": 45, "lgpd": 15} {
			res := h.submit(`{"type":"access","regulation":"` + reg + `","subject":{"id":"user-2"}}`)
			require.Equal(t, http.StatusAccepted, res.status, "%s", res.body)
			m := h.status(res.json(t)["id"].(string)).json(t)
			require.Equal(t, "submitted", m["state"])
			submitted, err := time.Parse(time.RFC3339Nano, m["submitted_at"].(string))
			require.NoError(t, err)
			due, err := time.Parse(time.RFC3339Nano, m["due_at"].(string))
			require.NoError(t, err)
			require.Equal(t, submitted.AddDate(0, 0, days), due, reg)
		}
	})

	t.Run("stored by the requests manager", func(t *testing.T) {
		id := "0193a5c2-7e0b-7c4d-8f00-00000000000a"
		submitted := time.Date(2026, 1, 31, 9, 0, 0, 0, time.UTC)
		require.NoError(t, h.db.Exec(`INSERT INTO requests (id, type, state, subject_id, subject_email, submitted_at, received_at, due_at, attempts, next_attempt_at, last_error_class)
			VALUES (?, 'access', 'received', 'user-9', 'zed@example.com', ?, ?, ?, 2, ?, 'source_timeout')`,
			id, submitted, submitted.Add(time.Second), intake.DueAt(submitted.Add(time.Second)), submitted.Add(time.Hour)).Error)
		st := h.status(id)
		require.Equal(t, http.StatusOK, st.status, "%s", st.body)
		m := st.json(t)
		require.Equal(t, "received", m["state"])
		require.Equal(t, "2026-02-28T09:00:01Z", m["due_at"])
		require.EqualValues(t, 2, m["attempts"])
		require.Equal(t, "source_timeout", m["last_error_class"])
		require.Equal(t, "2026-01-31T10:00:00Z", m["next_attempt_at"])
		require.NotContains(t, string(st.body), "zed@example.com")
		require.NotContains(t, string(st.body), "user-9")
		require.Nil(t, m["participants"], "only erasures list participants")
	})

	t.Run("an operator's extension is the deadline shown", func(t *testing.T) {
		id := "0193a5c2-7e0b-7c4d-8f00-00000000000c"
		submitted := time.Date(2026, 1, 31, 9, 0, 0, 0, time.UTC)
		until := time.Date(2026, 4, 28, 9, 0, 1, 0, time.UTC)
		require.NoError(t, h.db.Exec(`INSERT INTO requests (id, type, state, submitted_at, received_at, due_at, attempts,
			extended_until, extension_reason, extended_by, extended_at)
			VALUES (?, 'access', 'processing', ?, ?, ?, 1, ?, 'two archives', 'olga', ?)`,
			id, submitted, submitted.Add(time.Second), intake.DueAt(submitted.Add(time.Second)), until, submitted.Add(time.Hour)).Error)
		m := h.status(id).json(t)
		require.Equal(t, "2026-04-28T09:00:01Z", m["due_at"], "the extended deadline, not the original 2026-02-28")
		require.NotContains(t, string(h.status(id).body), "two archives", "the reason was emailed, it is no status field")
	})

	t.Run("erasure lists its participants", func(t *testing.T) {
		id := "0193a5c2-7e0b-7c4d-8f00-00000000000b"
		now := time.Now().UTC()
		require.NoError(t, h.db.Exec(`INSERT INTO requests (id, type, state, submitted_at, due_at, completed_at) VALUES (?, 'erasure', 'handed_over', ?, ?, NULL)`,
			id, now, intake.DueAt(now)).Error)
		m := h.status(id).json(t)
		require.Equal(t, "handed_over", m["state"])
		require.Len(t, m["participants"], 2)
	})

	t.Run("unknown", func(t *testing.T) {
		res := h.status("0193a5c2-7e0b-7c4d-8f00-0123456789ff")
		require.Equal(t, http.StatusNotFound, res.status)
		require.Equal(t, "not_found", res.json(t)["error"])
	})

	t.Run("malformed id", func(t *testing.T) {
		for _, bad := range []string{"42", "not-a-uuid", "0193a5c2-7e0b-7c4d-8f00"} {
			res := h.status(bad)
			require.Equal(t, http.StatusBadRequest, res.status, bad)
			require.Equal(t, "id", res.json(t)["field"])
		}
	})
}

type participantsFunc func(ctx context.Context, id string) ([]intake.Participant, error)

func (f participantsFunc) ListParticipants(ctx context.Context, id string) ([]intake.Participant, error) {
	return f(ctx, id)
}

func TestReportDownload(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{})
	store := func(id string) {
		now := time.Now().UTC()
		require.NoError(t, h.db.Exec(`INSERT INTO requests (id, type, state, submitted_at, due_at, completed_at) VALUES (?, 'access', 'completed', ?, ?, ?)`,
			id, now, intake.DueAt(now), now).Error)
	}
	a, b, noReport := "0193a5c2-7e0b-7c4d-8f00-0000000000a1", "0193a5c2-7e0b-7c4d-8f00-0000000000b2", "0193a5c2-7e0b-7c4d-8f00-0000000000c3"
	store(a)
	store(b)
	store(noReport)
	for _, id := range []string{a, b} {
		require.NoError(t, h.db.Exec(`INSERT INTO reports (id, request_id, bytes, sha256) VALUES (?, ?, 1, 'x')`, "report-"+id, id).Error)
	}
	zipA := h.reports.add(t, "report-"+a)
	h.reports.add(t, "report-"+b)

	get := func(link string) response {
		t.Helper()
		path := strings.TrimPrefix(link, "http://public.example")
		return h.do(h.request(http.MethodGet, path, nil))
	}
	now := time.Now()
	link := download.URL("http://public.example", h.key, a, 7*24*time.Hour, now)

	res := get(link)
	require.Equal(t, http.StatusOK, res.status, "%s", res.body)
	require.Equal(t, zipA, res.body)
	require.Equal(t, "application/zip", res.header.Get("Content-Type"))
	require.Equal(t, `attachment; filename="gdpr-report-`+a+`.zip"`, res.header.Get("Content-Disposition"))
	require.Equal(t, fmt.Sprint(len(zipA)), res.header.Get("Content-Length"))
	require.Equal(t, "no-store", res.header.Get("Cache-Control"))

	opens := h.reports.openCount()
	_, token, err := download.ParseURL(link)
	require.NoError(t, err)
	exp, sig, _ := strings.Cut(token, ".")
	flipped := []byte(sig)
	flipped[3] ^= 0x02
	refused := map[string]string{
		"no token":            "/v1/requests/" + a + "/report",
		"empty token":         "/v1/requests/" + a + "/report?token=",
		"tampered signature":  "/v1/requests/" + a + "/report?token=" + exp + "." + string(flipped),
		"extended expiry":     "/v1/requests/" + a + "/report?token=9" + exp + "." + sig,
		"garbage":             "/v1/requests/" + a + "/report?token=hello",
		"other request's":     "/v1/requests/" + b + "/report?token=" + token,
		"expired":             strings.TrimPrefix(download.URL("http://public.example", h.key, a, 7*24*time.Hour, now.Add(-8*24*time.Hour)), "http://public.example"),
		"signed with another": strings.TrimPrefix(download.URL("http://public.example", []byte("some-other-key-0123"), a, time.Hour, now), "http://public.example"),
	}
	for name, path := range refused {
		denied := h.do(h.request(http.MethodGet, path, nil))
		require.Equal(t, http.StatusForbidden, denied.status, name)
		require.Equal(t, "application/json", denied.header.Get("Content-Type"), name)
		require.Equal(t, "forbidden", denied.json(t)["error"], name)
		require.NotContains(t, string(denied.body), "manifest.json", name)
	}
	require.Equal(t, opens, h.reports.openCount(), "no report was opened for a refused token")

	res = get(download.URL("http://public.example", h.key, noReport, time.Hour, now))
	require.Equal(t, http.StatusNotFound, res.status)
	res = h.do(h.request(http.MethodGet, "/v1/requests/nope/report?token="+token, nil))
	require.Equal(t, http.StatusBadRequest, res.status)
	require.Equal(t, "id", res.json(t)["field"])
}

func TestAdminRoutesNeedTheAdminToken(t *testing.T) {
	t.Parallel()
	var seen []string
	var mu sync.Mutex
	timeline := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.URL.Path)
		mu.Unlock()
		w.WriteHeader(http.StatusTeapot)
	})
	h := newHarness(t, harnessOptions{adminToken: "admin-secret", noValidation: true,
		admin: []api.AdminRoute{{Path: "timeline", Handler: timeline}}})
	for _, auth := range []string{"", "Bearer " + h.token, "Bearer wrong"} {
		res := h.do(h.request(http.MethodGet, "/v1/admin/timeline/abc", nil, "Authorization", auth))
		require.Equal(t, http.StatusUnauthorized, res.status, auth)
	}
	res := h.do(h.request(http.MethodGet, "/v1/admin/timeline/abc", nil, "Authorization", "Bearer admin-secret"))
	require.Equal(t, http.StatusTeapot, res.status)
	res = h.do(h.request(http.MethodGet, "/v1/admin/timeline", nil, "Authorization", "Bearer admin-secret"))
	require.Equal(t, http.StatusTeapot, res.status)
	require.Equal(t, []string{"/v1/admin/timeline/abc", "/v1/admin/timeline"}, seen)
	// The admin token is no API token.
	require.Equal(t, http.StatusUnauthorized, h.do(h.request(http.MethodPost, "/v1/requests", strings.NewReader(accessBody),
		"Content-Type", "application/json", "Authorization", "Bearer admin-secret")).status)
}

func TestMetricsUseRoutePatterns(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{})
	h.status("0193a5c2-7e0b-7c4d-8f00-0123456789ff")
	h.status("0193a5c2-7e0b-7c4d-8f00-0123456789fe")
	h.do(h.request(http.MethodGet, "/v1/nothing/here/123", nil))
	h.do(h.request(http.MethodDelete, "/v1/requests", nil))
	mfs, err := h.reg.Gather()
	require.NoError(t, err)
	routes := map[string]uint64{}
	for _, mf := range mfs {
		if mf.GetName() != "gdpr_http_request_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			routes[labels["route"]+" "+labels["method"]+" "+labels["status"]] += m.GetHistogram().GetSampleCount()
		}
	}
	require.Equal(t, map[string]uint64{
		"/v1/requests/{id} GET 404": 2,
		"unmatched GET 404":         1,
		"unmatched DELETE 405":      1,
	}, routes)
}

func TestOpenAPIDocumentIsServedAndChecksResponses(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{})
	res := h.do(h.request(http.MethodGet, "/v1/openapi.json", nil))
	require.Equal(t, http.StatusOK, res.status)
	require.JSONEq(t, string(api.OpenAPI), string(res.body))

	// The check every test's responses pass through does catch a response
	// that strays from the document.
	router := openAPIRouter(t)
	req := h.request(http.MethodPost, "/v1/requests", nil)
	ok := []byte(`{"id":"0193a5c2-7e0b-7c4d-8f00-0123456789ab","state":"submitted"}`)
	require.NoError(t, validateResponse(router, req, http.StatusAccepted, http.Header{"Content-Type": {"application/json"}}, ok))
	for name, bad := range map[string]struct {
		status int
		body   string
	}{
		"undocumented status":  {http.StatusOK, string(ok)},
		"extra member":         {http.StatusAccepted, `{"id":"0193a5c2-7e0b-7c4d-8f00-0123456789ab","state":"submitted","subject":"x"}`},
		"wrong state":          {http.StatusAccepted, `{"id":"0193a5c2-7e0b-7c4d-8f00-0123456789ab","state":"done"}`},
		"problem without code": {http.StatusBadRequest, `{"message":"x"}`},
	} {
		require.Error(t, validateResponse(router, req, bad.status, http.Header{"Content-Type": {"application/json"}}, []byte(bad.body)), name)
	}
}

// stuckPublisher hangs the first Publish until released, like a serve
// process that froze (or died) holding an idempotency key.
type stuckPublisher struct {
	next    intake.Publisher
	calls   atomic.Int64
	release chan struct{}
}

func (p *stuckPublisher) Publish(ctx context.Context, m message.Message) error {
	if p.calls.Add(1) == 1 {
		<-p.release
		return errors.New("holder gave up")
	}
	return p.next.Publish(ctx, m)
}

// TestStuckHolderOfAnIdempotencyKeyIsTakenOver: a duplicate waits while the
// first submission holds the key, takes it over once the holder's lease
// ends, and publishes the same request once; the stale holder cannot undo it.
func TestStuckHolderOfAnIdempotencyKeyIsTakenOver(t *testing.T) {
	t.Parallel()
	stuck := &stuckPublisher{release: make(chan struct{})}
	h := newHarness(t, harnessOptions{confirmTimeout: 300 * time.Millisecond,
		wrapPublisher: func(p intake.Publisher) intake.Publisher { stuck.next = p; return stuck }})
	first := make(chan response, 1)
	go func() { first <- h.submit(accessBody, "Idempotency-Key", "stuck") }()
	testkit.Eventually(t, 10*time.Second, func() bool { return stuck.calls.Load() == 1 }, "first submission is publishing")

	second := h.submit(accessBody, "Idempotency-Key", "stuck")
	require.Equal(t, http.StatusAccepted, second.status, "%s", second.body)
	id := second.json(t)["id"].(string)

	close(stuck.release)
	require.Equal(t, http.StatusServiceUnavailable, (<-first).status)
	replay := h.submit(accessBody, "Idempotency-Key", "stuck")
	require.Equal(t, http.StatusAccepted, replay.status)
	require.Equal(t, id, replay.json(t)["id"], "the stale holder's failure did not release the confirmed key")
	msgs := h.take()
	require.Len(t, msgs, 1)
	require.Equal(t, id, msgs[0].CorrelationId)
}

// TestDeletedReportAnswers410 checks that a deleted report's link, valid or
// expired, answers 410 Gone saying why (JSON, or a page for a browser) and
// opens nothing, while a forged link still gets 403.
func TestDeletedReportAnswers410(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{})
	erased, expired := "0193a5c2-7e0b-7c4d-8f00-0000000000d4", "0193a5c2-7e0b-7c4d-8f00-0000000000e5"
	now := time.Now().UTC()
	for id, reason := range map[string]string{erased: "subject_erasure", expired: "retention"} {
		require.NoError(t, h.db.Exec(`INSERT INTO requests (id, type, state, submitted_at, due_at, completed_at) VALUES (?, 'access', 'completed', ?, ?, ?)`,
			id, now, intake.DueAt(now), now).Error)
		require.NoError(t, h.db.Exec(`INSERT INTO reports (id, request_id, bytes, sha256, deleted_at, deleted_reason, file_removed)
			VALUES (?, ?, 1, 'x', now(), ?, true)`, "report-"+id, id, reason).Error)
		h.reports.add(t, "report-"+id) // still there: the answer must come from the row
	}
	opens := h.reports.openCount()
	path := func(id string, at time.Time) string {
		return strings.TrimPrefix(download.URL("http://public.example", h.key, id, time.Hour, at), "http://public.example")
	}
	cases := []struct {
		name, id, accept, wantError, wantType, wantText string
		at                                              time.Time
	}{
		{"erased, API client", erased, "application/json", "report_erased", "application/json", "own request", now},
		{"erased, no Accept", erased, "", "report_erased", "application/json", "own request", now},
		{"erased, browser", erased, "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "", "text/html", "own request", now},
		{"erased, expired link", erased, "", "report_erased", "application/json", "own request", now.Add(-48 * time.Hour)},
		{"expired, API client", expired, "application/json", "report_expired", "application/json", "expired", now.Add(-48 * time.Hour)},
		{"expired, browser", expired, "text/html", "", "text/html", "expired", now},
	}
	for _, tc := range cases {
		req := h.request(http.MethodGet, path(tc.id, tc.at), nil)
		if tc.accept != "" {
			req.Header.Set("Accept", tc.accept)
		}
		res := h.do(req)
		require.Equal(t, http.StatusGone, res.status, tc.name)
		require.Contains(t, res.header.Get("Content-Type"), tc.wantType, tc.name)
		require.Contains(t, string(res.body), tc.wantText, tc.name)
		if tc.wantError != "" {
			require.Equal(t, tc.wantError, res.json(t)["error"], tc.name)
		}
	}
	forged := strings.TrimPrefix(download.URL("http://public.example", []byte("some-other-key-0123"), erased, time.Hour, now), "http://public.example")
	require.Equal(t, http.StatusForbidden, h.do(h.request(http.MethodGet, forged, nil)).status)
	require.Equal(t, opens, h.reports.openCount(), "no deleted report was opened")
}

// TestIdempotencyRecordsKeepNoReadablePersonalData: what intake keeps in
// Redis for an idempotent submission names neither the subject's id nor
// their address, and its fingerprint is no plain hash of them (a hash of
// a guessed address would match it).
func TestIdempotencyRecordsKeepNoReadablePersonalData(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{})
	res := h.submit(accessBody, "Idempotency-Key", "order-pii")
	require.Equal(t, http.StatusAccepted, res.status, "%s", res.body)
	plain, err := json.Marshal(struct {
		Type  string `json:"t"`
		ID    string `json:"i"`
		Email string `json:"e"`
	}{"access", "user-1", "ann@example.com"})
	require.NoError(t, err)
	sum := sha256.Sum256(plain)
	keys, err := h.rdb.Keys(t.Context(), h.prefix+"*").Result()
	require.NoError(t, err)
	fingerprints := 0
	for _, k := range keys {
		var values []string
		if typ := h.rdb.Type(t.Context(), k).Val(); typ == "hash" {
			m, err := h.rdb.HGetAll(t.Context(), k).Result()
			require.NoError(t, err)
			for f, v := range m {
				values = append(values, f+"="+v)
				if f == "fingerprint" {
					fingerprints++
					require.NotEqual(t, hex.EncodeToString(sum[:]), v, "the fingerprint is keyed")
				}
			}
		} else {
			values = append(values, h.rdb.Get(t.Context(), k).Val())
		}
		for _, v := range append(values, k) {
			require.NotContains(t, v, "user-1", k)
			require.NotContains(t, v, "ann@example.com", k)
		}
	}
	require.Equal(t, 1, fingerprints)
	require.Equal(t, res.json(t)["id"], h.submit(accessBody, "Idempotency-Key", "order-pii").json(t)["id"], "replays still match")
}
