package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/mail"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/deadline"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/intake"
	"github.com/gdpr-oss/gdpr/modules/requests/record"
	"github.com/gdpr-oss/gdpr/modules/selfservice"
	"github.com/gdpr-oss/gdpr/modules/source"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// clock is a test clock the page's service reads.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type pageHarness struct {
	*harness
	mail  *testkit.Mailpit
	clock *clock
}

func newPageHarness(t *testing.T, adjust func(*selfservice.Config)) *pageHarness {
	t.Helper()
	return newPageHarnessBehind(t, adjust, nil)
}

// newPageHarnessBehind serves the page behind the reverse proxies of
// serve.trusted_proxies.
func newPageHarnessBehind(t *testing.T, adjust func(*selfservice.Config), trustedProxies []string) *pageHarness {
	t.Helper()
	return newPageHarnessWith(t, adjust, trustedProxies, "")
}

// newPageHarnessWith serves the page with its requests under regulation
// (console.client_regulations for the page's caller; "" is GDPR).
func newPageHarnessWith(t *testing.T, adjust func(*selfservice.Config), trustedProxies []string, regulation string) *pageHarness {
	t.Helper()
	return newPageHarnessFull(t, adjust, trustedProxies, regulation, nil)
}

// newPageHarnessFull also finds account ids with accounts
// (privacy.account_lookup).
func newPageHarnessFull(t *testing.T, adjust func(*selfservice.Config), trustedProxies []string, regulation string, accounts selfservice.Accounts) *pageHarness {
	t.Helper()
	cfg := selfservice.DefaultConfig()
	cfg.Enabled = true
	if adjust != nil {
		adjust(&cfg)
	}
	mail := testkit.StartMailpit(t)
	c := &clock{t: time.Now()}
	h := newHarness(t, harnessOptions{noValidation: true, trustedProxies: trustedProxies, privacy: &privacyOptions{cfg: cfg, mail: mail, now: c.now, regulation: regulation, accounts: accounts}})
	return &pageHarness{harness: h, mail: mail, clock: c}
}

// browser is one visitor: its own cookies, the form's CSRF token.
type browser struct {
	t      *testing.T
	h      *pageHarness
	client *http.Client
	csrf   string
	header http.Header
}

func (h *pageHarness) browser(t *testing.T) *browser {
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	b := &browser{t: t, h: h, client: &http.Client{Jar: jar, Timeout: 20 * time.Second}, header: http.Header{}}
	r := b.get("/privacy")
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	b.csrf = formValue(t, r.body, "csrf")
	return b
}

func (b *browser) get(path string) response {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodGet, b.h.base+path, nil)
	require.NoError(b.t, err)
	return b.send(req)
}

func (b *browser) post(path string, form url.Values) response {
	b.t.Helper()
	if form.Get("csrf") == "" {
		form.Set("csrf", b.csrf)
	}
	req, err := http.NewRequest(http.MethodPost, b.h.base+path, strings.NewReader(form.Encode()))
	require.NoError(b.t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.send(req)
}

func (b *browser) send(req *http.Request) response {
	for k, v := range b.header {
		req.Header[k] = v
	}
	res, err := b.client.Do(req)
	require.NoError(b.t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(b.t, err)
	return response{status: res.StatusCode, header: res.Header, body: body}
}

// start submits the form and returns the verification's id from the code page.
func (b *browser) start(kind, email string) string {
	b.t.Helper()
	r := b.post("/privacy/start", url.Values{"type": {kind}, "email": {email}})
	require.Equal(b.t, http.StatusOK, r.status, "%s", r.body)
	require.Contains(b.t, string(r.body), `id="sent"`)
	return formValue(b.t, r.body, "flow")
}

func (b *browser) code(flow, code string) response {
	b.t.Helper()
	return b.post("/privacy/verify", url.Values{"flow": {flow}, "code": {code}})
}

func formValue(t *testing.T, body []byte, name string) string {
	t.Helper()
	m := regexp.MustCompile(`name="` + name + `" value="([^"]*)"`).FindSubmatch(body)
	require.NotNil(t, m, "no %s field in:\n%s", name, body)
	return string(m[1])
}

var (
	codePattern = regexp.MustCompile(`code: (\d{6})`)
	linkPattern = regexp.MustCompile(`http://\S+/privacy/confirm\?\S+`)
)

// mails waits for n emails to address and returns their texts, oldest first.
func (h *pageHarness) mails(t *testing.T, to string, n int) []string {
	t.Helper()
	var texts []string
	testkit.Eventually(t, 20*time.Second, func() bool {
		msgs, err := h.mail.Messages(t.Context())
		if err != nil {
			return false
		}
		texts = texts[:0]
		for i := len(msgs) - 1; i >= 0; i-- {
			if len(msgs[i].To) == 0 || msgs[i].To[0].Address != to {
				continue
			}
			res, err := http.Get(h.mail.APIURL + "/api/v1/message/" + msgs[i].ID)
			if err != nil {
				return false
			}
			var m struct{ Text string }
			err = json.NewDecoder(res.Body).Decode(&m)
			_ = res.Body.Close()
			if err != nil {
				return false
			}
			texts = append(texts, m.Text)
		}
		return len(texts) >= n
	}, "%d emails to %s", n, to)
	return texts
}

func (h *pageHarness) codeFor(t *testing.T, to string, nth int) string {
	t.Helper()
	m := codePattern.FindStringSubmatch(h.mails(t, to, nth+1)[nth])
	require.NotNil(t, m)
	return m[1]
}

func (h *pageHarness) submitted(t *testing.T) []event.RequestSubmitted {
	t.Helper()
	var out []event.RequestSubmitted
	for _, d := range h.take() {
		var env struct{ Body event.RequestSubmitted }
		require.NoError(t, json.Unmarshal(d.Body, &env.Body))
		out = append(out, env.Body)
	}
	return out
}

func wrongCode(right string) string {
	if right == "000000" {
		return "000001"
	}
	return "000000"
}

// TestPrivacyCodeIsRefusedWhenWrongExpiredOrOnTheFourthTry: a wrong code
// says how many tries are left and submits nothing; the third wrong one
// voids the code, so the fourth try fails even with the right code; a code
// past privacy.code_ttl (by the service's clock) is refused; only the right
// code in time becomes a request, verified by email, with a receipt.
func TestPrivacyCodeIsRefusedWhenWrongExpiredOrOnTheFourthTry(t *testing.T) {
	t.Parallel()
	h := newPageHarness(t, nil)
	b := h.browser(t)

	t.Run("fourth try", func(t *testing.T) {
		flow := b.start(event.KindAccess, "four@example.com")
		code := h.codeFor(t, "four@example.com", 0)
		r := b.code(flow, wrongCode(code))
		require.Equal(t, http.StatusBadRequest, r.status)
		require.Contains(t, string(r.body), `id="wrong"`)
		require.Contains(t, string(r.body), "Tries left: 2")
		r = b.code(flow, wrongCode(code))
		require.Contains(t, string(r.body), "Tries left: 1")
		r = b.code(flow, wrongCode(code))
		require.Equal(t, http.StatusBadRequest, r.status)
		require.Contains(t, string(r.body), "Too many wrong codes")
		r = b.code(flow, code)
		require.Equal(t, http.StatusGone, r.status, "the fourth try, with the right code")
		require.Contains(t, string(r.body), `id="gone"`)
		require.Empty(t, h.submitted(t))
	})
	t.Run("expired", func(t *testing.T) {
		flow := b.start(event.KindAccess, "late@example.com")
		code := h.codeFor(t, "late@example.com", 0)
		h.clock.add(10*time.Minute + time.Second)
		r := b.code(flow, code)
		require.Equal(t, http.StatusGone, r.status)
		require.Contains(t, string(r.body), "The code has expired")
		require.Empty(t, h.submitted(t))
	})
	t.Run("right code", func(t *testing.T) {
		flow := b.start(event.KindErasure, "right@example.com")
		code := h.codeFor(t, "right@example.com", 0)
		r := b.code(flow, wrongCode(code))
		require.Equal(t, http.StatusBadRequest, r.status)
		r = b.code(flow, code)
		require.Equal(t, http.StatusOK, r.status, "%s", r.body)
		require.Contains(t, string(r.body), `id="receipt"`)
		subs := h.submitted(t)
		require.Len(t, subs, 1)
		require.Equal(t, event.KindErasure, subs[0].Type)
		require.Equal(t, "right@example.com", subs[0].Subject.Email)
		require.True(t, subs[0].Receipt)
		require.Equal(t, "en", subs[0].Locale)
		require.NotNil(t, subs[0].Verification)
		require.Equal(t, event.VerificationEmail, subs[0].Verification.Method)
		require.Contains(t, string(r.body), subs[0].RequestID)
		// The code is spent.
		r = b.code(flow, code)
		require.Equal(t, http.StatusGone, r.status)
		require.Empty(t, h.submitted(t))
	})
	// Every try above, counted by result; none of it by address or code.
	for result, n := range map[string]float64{"wrong": 3, "void": 1, "gone": 2, "expired": 1, "verified": 1, "unavailable": 0, "failed": 0} {
		require.Equal(t, n, h.counter(t, "gdpr_selfservice_verifications_total", "method", "code", "result", result), "code %s", result)
	}
	require.Equal(t, 1.0, h.counter(t, "gdpr_selfservice_submissions_total", "type", "erasure"))
	require.Equal(t, 0.0, h.counter(t, "gdpr_selfservice_submissions_total", "type", "access"))
	h.noPersonalDataInMetrics(t, "four@example.com", "late@example.com", "right@example.com")
}

// counter is the value of the counter name whose labels include the given
// name/value pairs (summed over the rest).
func (h *harness) counter(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := h.reg.Gather()
	require.NoError(t, err)
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue metric
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// noPersonalDataInMetrics: no label value of any metric names an address.
func (h *harness) noPersonalDataInMetrics(t *testing.T, addresses ...string) {
	t.Helper()
	mfs, err := h.reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				require.NotContains(t, l.GetValue(), "@", "%s{%s}", mf.GetName(), l.GetName())
				for _, a := range addresses {
					require.NotContains(t, l.GetValue(), a)
				}
			}
		}
	}
}

// TestPrivacyReplayedLinkIsRefused: the emailed link confirms once; the
// same link again, or a link whose signature was altered, shows the
// "no longer works" page and submits nothing.
func TestPrivacyReplayedLinkIsRefused(t *testing.T) {
	t.Parallel()
	h := newPageHarness(t, nil)
	b := h.browser(t)
	b.start(event.KindAccess, "link@example.com")
	link := linkPattern.FindString(h.mails(t, "link@example.com", 1)[0])
	require.NotEmpty(t, link)
	u, err := url.Parse(link)
	require.NoError(t, err)

	forged := u.Query()
	forged.Set("token", forged.Get("token")+"x")
	r := b.get("/privacy/confirm?" + forged.Encode())
	require.Equal(t, http.StatusGone, r.status)

	r = b.get(u.RequestURI())
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	form := url.Values{"flow": {formValue(t, r.body, "flow")}, "token": {formValue(t, r.body, "token")}}
	r = b.post("/privacy/confirm", form)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	require.Contains(t, string(r.body), `id="receipt"`)
	require.Len(t, h.submitted(t), 1)

	r = b.post("/privacy/confirm", form)
	require.Equal(t, http.StatusGone, r.status, "a replayed link")
	require.Contains(t, string(r.body), `id="gone"`)
	r = b.get(u.RequestURI())
	require.Equal(t, http.StatusGone, r.status, "a used link's page")
	require.Empty(t, h.submitted(t))
	require.Equal(t, 1.0, h.counter(t, "gdpr_selfservice_verifications_total", "method", "link", "result", "verified"))
	require.Equal(t, 1.0, h.counter(t, "gdpr_selfservice_verifications_total", "method", "link", "result", "gone"), "the replay")
	require.Equal(t, 1.0, h.counter(t, "gdpr_selfservice_submissions_total", "type", "access"))
}

// TestPrivacySendLimits: beyond privacy.sends_per_email, and beyond
// privacy.sends_per_address from one client address, the page answers as
// always and sends nothing; X-Forwarded-For counts only from a proxy in
// serve.trusted_proxies (shared with the API's limits), or in the
// deprecated privacy.trusted_proxies, which still works.
func TestPrivacySendLimits(t *testing.T) {
	t.Parallel()
	for _, setting := range []string{"serve.trusted_proxies", "privacy.trusted_proxies"} {
		t.Run(setting, func(t *testing.T) {
			t.Parallel()
			testSendLimits(t, setting)
		})
	}
}

func testSendLimits(t *testing.T, proxiesSetting string) {
	limits := func(c *selfservice.Config) {
		c.SendsPerEmail = 2
		c.SendsPerAddress = 4
		if proxiesSetting == "privacy.trusted_proxies" {
			c.TrustedProxies = []string{"127.0.0.1"}
		}
	}
	var trusted []string
	if proxiesSetting == "serve.trusted_proxies" {
		trusted = []string{"127.0.0.1"}
	}
	h := newPageHarnessBehind(t, limits, trusted)
	b := h.browser(t)
	for range 5 {
		// start requires the usual code page each time: a limited send
		// answers like any other.
		b.start(event.KindAccess, "flood@example.com")
	}
	h.mails(t, "flood@example.com", 2)
	// Five starts from one address: the fifth has reached the address limit
	// too; a different client behind the trusted proxy is not limited.
	b.header.Set("X-Forwarded-For", "203.0.113.9")
	b.start(event.KindAccess, "other@example.com")
	h.mails(t, "other@example.com", 1)
	b.header.Set("X-Forwarded-For", "203.0.113.10")
	for i := range 5 {
		b.start(event.KindAccess, "many"+string(rune('a'+i))+"@example.com")
	}
	// Only the first four from 203.0.113.10 were sent.
	testkit.Eventually(t, 20*time.Second, func() bool {
		n, err := h.mail.Count(t.Context())
		return err == nil && n == 2+1+4
	}, "2 + 1 + 4 emails")
	require.NoError(t, h.page.Stop(t.Context()))
	n, err := h.mail.Count(t.Context())
	require.NoError(t, err)
	require.Equal(t, 7, n, "no email beyond the limits")
	// flood@: 3 over the address's limit (the fifth over the client's too);
	// 203.0.113.10: 1 over the client's.
	require.Equal(t, 7.0, h.counter(t, "gdpr_selfservice_verification_emails_total", "outcome", selfservice.EmailSent))
	require.Equal(t, 4.0, h.counter(t, "gdpr_selfservice_verification_emails_total", "outcome", selfservice.EmailLimited))
	require.Equal(t, 0.0, h.counter(t, "gdpr_selfservice_verification_emails_total", "outcome", selfservice.EmailFailed))
	h.noPersonalDataInMetrics(t, "flood@example.com", "203.0.113.9", "203.0.113.10")
	// Nor in the counters' Redis keys: addresses are keyed hashes there (a
	// probe found the client address in clear in privacy:rate:addr:*).
	keys, err := h.rdb.Keys(t.Context(), "*"+h.prefix+"*").Result()
	require.NoError(t, err)
	var rateKeys int
	for _, k := range keys {
		for _, pii := range []string{"flood@example.com", "203.0.113.9", "203.0.113.10", "127.0.0.1"} {
			require.NotContains(t, k, pii)
		}
		if strings.Contains(k, "privacy:rate:addr:") {
			rateKeys++
		}
	}
	require.Positive(t, rateKeys, "the address counters are in Redis")
}

// TestPrivacyWrongCodesAreCountedPerEmailAcrossVerifications: the wrong
// codes of one address are summed over all its verifications, so starting
// over does not buy new guesses at a 6-digit code (a probe found that
// code_tries per verification was the only bound: about 333,000 starts
// would guess a verified erasure for someone else's address). Beyond
// privacy.code_failures_per_email even the right code is refused until the
// window ends; other addresses are not held back.
func TestPrivacyWrongCodesAreCountedPerEmailAcrossVerifications(t *testing.T) {
	t.Parallel()
	h := newPageHarness(t, func(c *selfservice.Config) {
		c.CodeFailuresPerEmail = 4
		c.CodeFailureWindow = time.Hour
		c.SendsPerEmail = 10
	})
	b := h.browser(t)
	const victim = "victim@example.com"
	first := b.start(event.KindErasure, victim)
	code := h.codeFor(t, victim, 0)
	for range 3 {
		require.Equal(t, http.StatusBadRequest, b.code(first, wrongCode(code)).status)
	}
	second := b.start(event.KindErasure, victim)
	code = h.codeFor(t, victim, 1)
	r := b.code(second, wrongCode(code))
	require.Contains(t, string(r.body), "Tries left: 2", "a fresh verification has its own tries")

	third := b.start(event.KindErasure, victim)
	code = h.codeFor(t, victim, 2)
	r = b.code(third, code)
	require.Equal(t, http.StatusBadRequest, r.status, "the fifth guess for the address, although right")
	require.Contains(t, string(r.body), "Too many wrong codes")
	require.Empty(t, h.submitted(t))

	other := b.start(event.KindAccess, "bystander@example.com")
	r = b.code(other, h.codeFor(t, "bystander@example.com", 0))
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	require.Len(t, h.submitted(t), 1)

	h.clock.add(time.Hour)
	fourth := b.start(event.KindErasure, victim)
	r = b.code(fourth, h.codeFor(t, victim, 3))
	require.Equal(t, http.StatusOK, r.status, "a new window: %s", r.body)
	subs := h.submitted(t)
	require.Len(t, subs, 1)
	require.Equal(t, victim, subs[0].Subject.Email)
	require.Equal(t, 1.0, h.counter(t, "gdpr_selfservice_verifications_total", "method", "code", "result", "locked"))
	require.Equal(t, 4.0, h.counter(t, "gdpr_selfservice_verifications_total", "method", "code", "result", "wrong")+
		h.counter(t, "gdpr_selfservice_verifications_total", "method", "code", "result", "void"))
}

// TestPrivacyReceiptShowsTheRegulationsDeadline: the receipt page states
// the deadline of the regulation the page's requests are under (ccpa: 45
// days, lgpd: 15), as the stored request has it, not always GDPR's month.
func TestPrivacyReceiptShowsTheRegulationsDeadline(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		regulation string
		due        func(time.Time) time.Time
	}{
		{"", deadline.GDPR.DueAt},
		{"ccpa", func(t time.Time) time.Time { return t.UTC().AddDate(0, 0, 45) }},
		{"lgpd", func(t time.Time) time.Time { return t.UTC().AddDate(0, 0, 15) }},
	} {
		t.Run("regulation "+tc.regulation, func(t *testing.T) {
			t.Parallel()
			h := newPageHarnessWith(t, nil, nil, tc.regulation)
			b := h.browser(t)
			flow := b.start(event.KindAccess, "clock@example.com")
			r := b.code(flow, h.codeFor(t, "clock@example.com", 0))
			require.Equal(t, http.StatusOK, r.status, "%s", r.body)
			want := tc.due(h.clock.now()).Format("2 January 2006, 15:04 MST")
			require.Contains(t, string(r.body), `<dd id="deadline">`+want+`</dd>`)
			subs := h.submitted(t)
			require.Len(t, subs, 1)
			require.Equal(t, tc.regulation, subs[0].Regulation, "the request itself is under the same clock")
		})
	}
}

// TestPrivacyStartHeldBackByASendLimitStoresNothing: a start beyond a send
// limit is answered like any other but leaves no verification in Redis, so
// its code (never sent) cannot be guessed and a flood of starts does not
// fill Redis with addresses.
func TestPrivacyStartHeldBackByASendLimitStoresNothing(t *testing.T) {
	t.Parallel()
	h := newPageHarness(t, func(c *selfservice.Config) { c.SendsPerEmail = 1 })
	b := h.browser(t)
	sent := b.start(event.KindAccess, "once@example.com")
	held := b.start(event.KindAccess, "once@example.com")
	require.NotEqual(t, sent, held)
	keys, err := h.rdb.Keys(t.Context(), "*"+h.prefix+"*privacy:flow:*").Result()
	require.NoError(t, err)
	require.Len(t, keys, 1, "only the verification whose email went out: %v", keys)
	require.True(t, strings.HasSuffix(keys[0], ":"+sent))
	r := b.code(held, "123456")
	require.Equal(t, http.StatusGone, r.status)
	require.Contains(t, string(r.body), `id="gone"`)
	h.mails(t, "once@example.com", 1)
}

// TestPrivacyUnknownEmailIsAnsweredLikeAKnownOne: an address the company
// knows (it has a stored request) and one it never saw get the same answer:
// status, headers and page (but for the verification's own id), and the
// same email: subject, text and every header but for the address, the
// verification's id, its code and link, and the date; the page never looks
// anything up that could tell them apart.
func TestPrivacyUnknownEmailIsAnsweredLikeAKnownOne(t *testing.T) {
	t.Parallel()
	h := newPageHarness(t, nil)
	require.NoError(t, h.db.Exec(`INSERT INTO requests (id, type, state, subject_email, submitted_at, due_at)
		VALUES (gen_random_uuid(), 'access', 'completed', 'known@example.com', now(), now())`).Error)
	// Each address from its own visitor, so the answers differ in the
	// visitor's CSRF token and the verification's id, and in nothing else.
	flows := map[string]string{}
	answer := func(email string) response {
		b := h.browser(t)
		r := b.post("/privacy/start", url.Values{"type": {"access"}, "email": {email}})
		flow := formValue(t, r.body, "flow")
		flows[email] = flow
		require.Contains(t, string(r.body), b.csrf)
		r.body = []byte(strings.ReplaceAll(strings.ReplaceAll(string(r.body), flow, "FLOW"), b.csrf, "CSRF"))
		for _, k := range []string{"Date", "Traceparent"} {
			r.header.Del(k)
		}
		return r
	}
	known := answer("known@example.com")
	unknown := answer("unknown@example.com")
	require.Equal(t, known.status, unknown.status)
	require.Equal(t, known.header, unknown.header)
	require.Equal(t, string(known.body), string(unknown.body))
	knownMail := h.normalizedMail(t, "known@example.com", flows["known@example.com"])
	unknownMail := h.normalizedMail(t, "unknown@example.com", flows["unknown@example.com"])
	require.NotEmpty(t, knownMail.header.Get("Subject"))
	require.Equal(t, knownMail.header, unknownMail.header, "the emails' headers")
	require.Equal(t, knownMail.text, unknownMail.text, "the emails' text")
}

// normalized is an email's headers and text with what differs for every
// verification replaced.
type normalized struct {
	header mail.Header
	text   string
}

// normalizedMail is the one email to to, as sent, with the address, the
// verification's id flow, its code and link replaced and the dates left out.
func (h *pageHarness) normalizedMail(t *testing.T, to, flow string) normalized {
	t.Helper()
	h.mails(t, to, 1)
	msgs, err := h.mail.Messages(t.Context())
	require.NoError(t, err)
	var raw []byte
	for _, m := range msgs {
		if len(m.To) == 1 && m.To[0].Address == to {
			require.Nil(t, raw, "one email to %s", to)
			raw, err = h.mail.Raw(t.Context(), m.ID)
			require.NoError(t, err)
		}
	}
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	require.NoError(t, err)
	body, err := io.ReadAll(msg.Body)
	require.NoError(t, err)
	replace := func(s string) string {
		s = linkPattern.ReplaceAllStringFunc(s, func(link string) string {
			require.Contains(t, link, flow, "the link names its verification")
			return "LINK"
		})
		s = codePattern.ReplaceAllString(s, "code: CODE")
		return strings.ReplaceAll(strings.ReplaceAll(s, to, "ADDRESS"), flow, "FLOW")
	}
	header := mail.Header{}
	for k, vs := range msg.Header {
		// Received is Mailpit's own, stamped with the second it arrived.
		if k == "Date" || k == "Received" {
			continue
		}
		for _, v := range vs {
			header[k] = append(header[k], replace(v))
		}
	}
	require.Equal(t, "<verify.FLOW@gdpr.invalid>", header.Get("Message-Id"), "the Message-ID differs only in the verification's id")
	text := replace(string(body))
	require.Contains(t, text, "code: CODE")
	require.Contains(t, text, "LINK")
	return normalized{header: header, text: text}
}

// TestPrivacyFormNeedsItsCSRFToken: a post without the form's token (what
// another site can make a browser send) is refused and sends nothing.
func TestPrivacyFormNeedsItsCSRFToken(t *testing.T) {
	t.Parallel()
	h := newPageHarness(t, nil)
	b := h.browser(t)
	r := b.post("/privacy/start", url.Values{"csrf": {"forged"}, "type": {"access"}, "email": {"csrf@example.com"}})
	require.Equal(t, http.StatusForbidden, r.status)
	require.NoError(t, h.page.Stop(t.Context()))
	n, err := h.mail.Count(t.Context())
	require.NoError(t, err)
	require.Zero(t, n)
}

// TestPrivacyStatusPageShowsTheExtendedDeadline: once an operator extended
// a request's deadline (GDPR Art. 12(3)), the status page the subject's
// link opens shows the extended date, not the original one.
func TestPrivacyStatusPageShowsTheExtendedDeadline(t *testing.T) {
	t.Parallel()
	h := newPageHarness(t, nil)
	id := "0193a5c2-7e0b-7c4d-8f00-0000000000e1"
	received := h.clock.now().UTC().Truncate(time.Second)
	due := received.AddDate(0, 1, 0)
	until := received.AddDate(0, 3, 0)
	require.NoError(t, h.db.Exec(`INSERT INTO requests (id, type, state, submitted_at, received_at, due_at, attempts)
		VALUES (?, 'erasure', 'handed_over', ?, ?, ?, 1)`, id, received, received, due).Error)
	link := selfservice.StatusURL(h.base, h.key, id, time.Hour, h.clock.now())
	deadline := regexp.MustCompile(`<dd id="deadline">([^<]*)</dd>`)

	b := h.browser(t)
	r := b.get(strings.TrimPrefix(link, h.base))
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	m := deadline.FindSubmatch(r.body)
	require.NotNil(t, m, "no deadline in:\n%s", r.body)
	require.Equal(t, due.Format("2 January 2006, 15:04 MST"), string(m[1]))

	require.NoError(t, h.db.Exec(`UPDATE requests SET extended_until = ?, extension_reason = 'two archives',
		extended_by = 'olga', extended_at = now() WHERE id = ?`, until, id).Error)
	r = b.get(strings.TrimPrefix(link, h.base))
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	m = deadline.FindSubmatch(r.body)
	require.NotNil(t, m, "no deadline in:\n%s", r.body)
	require.Equal(t, until.Format("2 January 2006, 15:04 MST"), string(m[1]), "the extended deadline")
}

// writeFiles writes files (path relative to dir → content) under dir.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		path := filepath.Join(dir, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	}
}

// TestPrivacyTemplateOverridesChangeTheEmailAndThePage: an operator's
// privacy.template_dir replaces the shipped English verification email and
// the page footer; German, not overridden, stays as shipped.
func TestPrivacyTemplateOverridesChangeTheEmailAndThePage(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"pages/acme.html": `{{define "foot"}}<footer id="acme">Acme Privacy Office, Berlin</footer></main></body></html>{{end}}`,
		"email/en/verify.tmpl": `{{define "subject"}}Acme: your verification code{{end}}
{{define "body"}}Acme Privacy Office. Your code: {{.Code}} ({{.Minutes}} minutes)
{{.Link}}
{{end}}`,
	})
	h := newPageHarness(t, func(c *selfservice.Config) { c.TemplateDir = dir })
	b := h.browser(t)
	r := b.get("/privacy?lang=en")
	require.Contains(t, string(r.body), `<footer id="acme">Acme Privacy Office, Berlin</footer>`)
	flow := b.start(event.KindAccess, "acme@example.com")
	require.NotEmpty(t, flow)
	texts := h.mails(t, "acme@example.com", 1)
	require.Contains(t, texts[0], "Acme Privacy Office. Your code: ")
	require.Contains(t, texts[0], "(10 minutes)")
	require.NotContains(t, texts[0], "someone, probably you", "the shipped body is replaced")
	msgs, err := h.mail.Messages(t.Context())
	require.NoError(t, err)
	require.Equal(t, "Acme: your verification code", msgs[0].Subject)
	code := h.codeFor(t, "acme@example.com", 0)
	r = b.code(flow, code)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	require.Contains(t, string(r.body), `id="receipt"`)
	require.Contains(t, string(r.body), `id="acme"`, "every page has the operator's footer")

	de := h.browser(t)
	de.post("/privacy/start", url.Values{"type": {"access"}, "email": {"acme.de@example.com"}, "lang": {"de"}})
	require.Contains(t, h.mails(t, "acme.de@example.com", 1)[0], "Ihr Code", "German is not overridden")
}

// TestPrivacyBrokenTemplateOverrideIsRefusedNamingTheFile: an override that
// does not parse, or parses but could not render a page or an email, stops
// the service from starting, and the error names the file.
func TestPrivacyBrokenTemplateOverrideIsRefusedNamingTheFile(t *testing.T) {
	t.Parallel()
	rdb, prefix := testkit.Redis(t)
	cases := []struct {
		name, file, content, want string
	}{
		{"page does not parse", "pages/broken.html", `{{define "foot"}}{{if}}{{end}}`, "pages/broken.html"},
		{"page uses a field pages lack", "pages/field.html", `{{define "foot"}}{{.Nonesuch}}</main>{{end}}`, "pages"},
		{"page calls an undefined template", "pages/call.html", `{{define "gone"}}{{template "nonesuch" .}}{{end}}`, `page "gone"`},
		{"email does not parse", "email/de/verify.tmpl", `{{define "subject"}}{{.Code{{end}}`, "email/de/verify.tmpl"},
		{"email without a body", "email/en/verify.tmpl", `{{define "subject"}}Code{{end}}`, `email/en/verify.tmpl: defines no {{define "body"}}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			writeFiles(t, dir, map[string]string{tc.file: tc.content})
			cfg := selfservice.DefaultConfig()
			cfg.TemplateDir = dir
			_, err := selfservice.New(selfservice.Options{
				Config: cfg, Redis: rdb, KeyPrefix: prefix, Key: []byte("k"), PublicURL: "http://127.0.0.1",
				Intake: unreached{}, Sender: unreached{}, Logger: testkit.Logger(t),
			})
			require.Error(t, err)
			require.ErrorContains(t, err, tc.want)
			require.ErrorContains(t, err, "privacy.template_dir")
		})
	}
}

// unreached fills the service's required dependencies where construction
// is expected to fail before either is used.
type unreached struct{}

func (unreached) Submit(context.Context, string, string, intake.Submission) (intake.Accepted, error) {
	return intake.Accepted{}, errors.New("unreached")
}
func (unreached) Status(context.Context, string) (intake.Status, error) {
	return intake.Status{}, errors.New("unreached")
}
func (unreached) DownloadToken(string, string) error { return errors.New("unreached") }
func (unreached) ReportDeleted(context.Context, string) (*intake.GoneError, error) {
	return nil, errors.New("unreached")
}
func (unreached) Report(context.Context, string) ([]record.ReportSource, *intake.GoneError, error) {
	return nil, nil, errors.New("unreached")
}
func (unreached) Send(context.Context, selfservice.Email) error { return errors.New("unreached") }

// TestPrivacyPageNeverTakesAnUnverifiedAccountID: the page verifies only the
// email address, so nothing else a visitor types may name the subject. A
// probe asked with its own address and another customer's account id and
// was sent that customer's report: the id went on to sources and
// participants as subject.id. Now the form has no account field, and one
// forged into the post is not passed on: the request names only the
// verified address, for access and for erasure.
func TestPrivacyPageNeverTakesAnUnverifiedAccountID(t *testing.T) {
	t.Parallel()
	h := newPageHarness(t, nil)
	b := h.browser(t)

	form := b.get("/privacy")
	require.NotContains(t, string(form.body), `name="account"`)

	for _, kind := range []string{event.KindAccess, event.KindErasure} {
		email := kind + ".mallory@attacker.example"
		r := b.post("/privacy/start", url.Values{"type": {kind}, "email": {email}, "account": {"c-1003"}})
		require.Equal(t, http.StatusOK, r.status, "%s", r.body)
		flow := formValue(t, r.body, "flow")
		r = b.code(flow, h.codeFor(t, email, 0))
		require.Equal(t, http.StatusOK, r.status, "%s", r.body)
		subs := h.submitted(t)
		require.Len(t, subs, 1)
		require.Equal(t, email, subs[0].Subject.Email)
		require.Empty(t, subs[0].Subject.ID, "%s: an account id nobody verified named the subject", kind)
		require.Empty(t, subs[0].Subject.Phone)
		require.Empty(t, subs[0].Subject.Identifiers)
	}
}

// TestPrivacyAccountIDComesOnlyFromTheAccountLookup: with
// privacy.account_lookup (here a real PostgreSQL table), a verified address
// gets the one account id recorded for it, whatever id the post claims; an
// address of nobody, or of two accounts, gets none; a lookup that fails
// submits nothing and leaves the code to be confirmed again once it works.
func TestPrivacyAccountIDComesOnlyFromTheAccountLookup(t *testing.T) {
	t.Parallel()
	dsn := testkit.PostgresDSN(t)
	lookup := source.Config{
		Name: "account_lookup", Kind: "postgres", DSN: dsn,
		Query: "SELECT id AS subject_id, full_name FROM customers WHERE lower(email) = lower(@email)",
	}
	accounts, err := selfservice.NewSourceAccounts(lookup, source.Options{}, testkit.Logger(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = accounts.Close() })
	h := newPageHarnessFull(t, nil, nil, "", accounts)
	b := h.browser(t)

	verify := func(email string) response {
		t.Helper()
		r := b.post("/privacy/start", url.Values{"type": {event.KindAccess}, "email": {email}, "account": {"c-1003"}})
		require.Equal(t, http.StatusOK, r.status, "%s", r.body)
		return b.code(formValue(t, r.body, "flow"), h.codeFor(t, email, 0))
	}

	// No table yet: the lookup fails, the page says to try again, nothing
	// is submitted, and the same code works once the lookup does.
	r := b.post("/privacy/start", url.Values{"type": {event.KindErasure}, "email": {"early@example.com"}})
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	flow := formValue(t, r.body, "flow")
	code := h.codeFor(t, "early@example.com", 0)
	r = b.code(flow, code)
	require.Equal(t, http.StatusServiceUnavailable, r.status, "%s", r.body)
	require.Empty(t, h.submitted(t))

	conn, err := pgx.Connect(t.Context(), dsn)
	require.NoError(t, err)
	_, err = conn.Exec(t.Context(), `CREATE TABLE customers (id text, email text, full_name text);
		INSERT INTO customers VALUES ('c-1003', 'Grace@Example.com', 'Grace Hopper'), ('c-1004', 'early@example.com', 'Early Bird'),
			('c-2001', 'shared@example.com', 'One'), ('c-2002', 'shared@example.com', 'Two'), ('c-2001', 'shared@example.com', 'One again')`)
	require.NoError(t, conn.Close(t.Context()))
	require.NoError(t, err)
	r = b.code(flow, code)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	subs := h.submitted(t)
	require.Len(t, subs, 1)
	require.Equal(t, "c-1004", subs[0].Subject.ID)

	for _, tc := range []struct{ email, id string }{
		{"grace@example.com", "c-1003"},
		{"mallory@attacker.example", ""},
		{"shared@example.com", ""},
	} {
		r := verify(tc.email)
		require.Equal(t, http.StatusOK, r.status, "%s", r.body)
		subs := h.submitted(t)
		require.Len(t, subs, 1, tc.email)
		require.Equal(t, tc.email, subs[0].Subject.Email)
		require.Equal(t, tc.id, subs[0].Subject.ID, tc.email)
	}
}

// TestPrivacyAccountLookupMustUseOnlyTheEmail: a lookup keyed by anything
// but the verified address would trust an identifier nobody proved.
func TestPrivacyAccountLookupMustUseOnlyTheEmail(t *testing.T) {
	t.Parallel()
	dsn := testkit.PostgresDSN(t)
	for _, q := range []string{
		"SELECT id AS subject_id FROM customers WHERE id = @subject_id",
		"SELECT id AS subject_id FROM customers WHERE email = @email AND phone = @phone",
		"SELECT id AS subject_id FROM customers WHERE email = @email OR card = @identifier.loyalty_card",
	} {
		_, err := selfservice.NewSourceAccounts(source.Config{Name: "account_lookup", Kind: "postgres", DSN: dsn, Query: q}, source.Options{}, testkit.Logger(t))
		require.ErrorContains(t, err, "privacy.account_lookup must use only the email identifier", q)
	}
}

// TestPrivacyVerifiedRequestIsAcceptedOnlyOnceTheBrokerConfirmed: a right
// code whose request the broker does not confirm (it swallows the publish
// and never answers, or returns it as unroutable) shows no receipt and no
// request id: the page says to try again later (503, Retry-After), nothing
// is counted as submitted, and the verification stays, so the same code,
// confirmed again once the broker does confirm, becomes one request.
func TestPrivacyVerifiedRequestIsAcceptedOnlyOnceTheBrokerConfirmed(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"silent", "unroutable"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			cfg := selfservice.DefaultConfig()
			cfg.Enabled = true
			mail := testkit.StartMailpit(t)
			c := &clock{t: time.Now()}
			h := &pageHarness{harness: newHarness(t, harnessOptions{noValidation: true, viaProxy: true, confirmTimeout: time.Second,
				privacy: &privacyOptions{cfg: cfg, mail: mail, now: c.now}}), mail: mail, clock: c}
			b := h.browser(t)
			const email = "unconfirmed@example.com"
			flow := b.start(event.KindErasure, email)
			code := h.codeFor(t, email, 0)

			ch, err := h.bus.Channel(t.Context())
			require.NoError(t, err)
			t.Cleanup(func() { _ = ch.Close() })
			queue, key := h.bus.QueueName(requestsQueue), "request.submitted"
			if mode == "silent" {
				h.proxy.freeze()
			} else {
				require.NoError(t, ch.QueueUnbind(queue, key, h.bus.Exchange(), nil))
			}
			for range 2 {
				r := b.code(flow, code)
				require.Equal(t, http.StatusServiceUnavailable, r.status, "%s", r.body)
				require.Equal(t, "60", r.header.Get("Retry-After"))
				require.Contains(t, string(r.body), `id="problem"`)
				require.NotContains(t, string(r.body), `id="receipt"`)
				require.NotContains(t, string(r.body), "/privacy/status?", "no status link for a request nobody accepted")
			}
			require.Empty(t, h.submitted(t))
			require.Equal(t, 0.0, h.counter(t, "gdpr_selfservice_submissions_total", "type", event.KindErasure))
			require.Equal(t, 2.0, h.counter(t, "gdpr_selfservice_verifications_total", "method", "code", "result", "failed")+
				h.counter(t, "gdpr_selfservice_verifications_total", "method", "code", "result", "unavailable"))

			if mode == "silent" {
				h.proxy.thaw()
				testkit.Eventually(t, 20*time.Second, func() bool { return h.pubConn.Check(t.Context()) == nil }, "server reconnected")
			} else {
				require.NoError(t, ch.QueueBind(queue, key, h.bus.Exchange(), false, nil))
			}
			require.Empty(t, h.submitted(t), "nothing reached the queue while unconfirmed")
			r := b.code(flow, code)
			require.Equal(t, http.StatusOK, r.status, "%s", r.body)
			require.Contains(t, string(r.body), `id="receipt"`)
			subs := h.submitted(t)
			require.Len(t, subs, 1)
			require.Equal(t, email, subs[0].Subject.Email)
			require.Contains(t, string(r.body), subs[0].RequestID)
			require.Equal(t, 1.0, h.counter(t, "gdpr_selfservice_submissions_total", "type", event.KindErasure))
		})
	}
}

// TestPrivacyExpiredOrRevokedLinksSayHowToAskAgain: a status or download
// link that expired, that no key of gdpr's signed any more (revoked by a
// rotation of serve.download_key) or that was tampered with, and the status
// link of a request an operator cancelled (withdrawn: nothing more is done
// for it), open a 410 page that says the link no longer works and why, with
// the button to ask again, in the page's language. A denied request's
// status page names its state (it showed an empty one before).
func TestPrivacyExpiredOrRevokedLinksSayHowToAskAgain(t *testing.T) {
	t.Parallel()
	h := newPageHarness(t, nil)
	now := h.clock.now().UTC().Truncate(time.Second)
	ids := map[string]string{
		"completed": "0193a5c2-7e0b-7c4d-8f00-0000000000f1",
		"cancelled": "0193a5c2-7e0b-7c4d-8f00-0000000000f2",
		"denied":    "0193a5c2-7e0b-7c4d-8f00-0000000000f3",
	}
	require.NoError(t, h.db.Exec(`INSERT INTO requests (id, type, state, submitted_at, received_at, due_at, completed_at, attempts)
		VALUES (?, 'access', 'completed', ?, ?, ?, ?, 1)`, ids["completed"], now, now, now.AddDate(0, 1, 0), now).Error)
	require.NoError(t, h.db.Exec(`INSERT INTO requests (id, type, state, submitted_at, received_at, due_at, attempts, closed_reason, closed_by, closed_at)
		VALUES (?, 'erasure', 'cancelled', ?, ?, ?, 1, 'asked twice', 'olga', now())`, ids["cancelled"], now, now, now.AddDate(0, 1, 0)).Error)
	require.NoError(t, h.db.Exec(`INSERT INTO requests (id, type, state, submitted_at, received_at, due_at, attempts, denial_code, closed_reason, closed_by, closed_at)
		VALUES (?, 'access', 'denied', ?, ?, ?, 1, 'manifestly_unfounded', 'repeated', 'olga', now())`, ids["denied"], now, now, now.AddDate(0, 1, 0)).Error)
	path := func(link string) string { return strings.TrimPrefix(link, h.base) }
	past := now.Add(-2 * time.Hour)
	retired := []byte("a key serve.download_key no longer lists")
	tampered := func(link string) string { return link[:len(link)-2] + "xx" }

	b := h.browser(t)
	for _, tc := range []struct {
		name, link, want string
	}{
		{"expired status link", statusLink(h, ids["completed"], past), "The link has expired, was already used, or was withdrawn."},
		{"expired download link", selfservice.DownloadPageURL(h.base, h.key, ids["completed"], time.Hour, past), "The link has expired, was already used, or was withdrawn."},
		{"status link of a retired key", selfservice.StatusURL(h.base, retired, ids["completed"], time.Hour, now), "The link has expired"},
		{"download link of a retired key", selfservice.DownloadPageURL(h.base, retired, ids["completed"], time.Hour, now), "The link has expired"},
		{"tampered status link", tampered(statusLink(h, ids["completed"], now)), "The link has expired"},
		{"cancelled request's status link", statusLink(h, ids["cancelled"], now), "This request was withdrawn"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := b.get(path(tc.link) + "&lang=en")
			require.Equal(t, http.StatusGone, r.status, "%s", r.body)
			require.Contains(t, string(r.body), `id="gone"`)
			require.Contains(t, string(r.body), tc.want)
			require.Contains(t, string(r.body), `<a class="button" id="again" href="/privacy?lang=en">Ask again</a>`)
			require.NotContains(t, string(r.body), `id="request-id"`)
		})
	}
	t.Run("cancelled, in German", func(t *testing.T) {
		r := b.get(path(statusLink(h, ids["cancelled"], now)) + "&lang=de")
		require.Equal(t, http.StatusGone, r.status, "%s", r.body)
		require.Contains(t, string(r.body), "Diese Anfrage wurde zurückgezogen")
		require.Contains(t, string(r.body), `<a class="button" id="again" href="/privacy?lang=de">Erneut fragen</a>`)
	})
	t.Run("denied", func(t *testing.T) {
		r := b.get(path(statusLink(h, ids["denied"], now)) + "&lang=en")
		require.Equal(t, http.StatusOK, r.status, "%s", r.body)
		require.Regexp(t, `<dd id="state">[^<]+</dd>`, string(r.body), "the state is named")
	})
	t.Run("the valid link still works", func(t *testing.T) {
		r := b.get(path(statusLink(h, ids["completed"], now)))
		require.Equal(t, http.StatusOK, r.status, "%s", r.body)
		require.Contains(t, string(r.body), `<dd id="state">completed</dd>`)
	})
}

// statusLink is a status link of request id minted at mintedAt, valid for
// an hour.
func statusLink(h *pageHarness, id string, mintedAt time.Time) string {
	return selfservice.StatusURL(h.base, h.key, id, time.Hour, mintedAt)
}

// TestPrivacyCodePageStatesTheCodesLifetime: the code page says how long
// the code works as privacy.code_ttl says, in each language; it said 10
// minutes whatever code_ttl was.
func TestPrivacyCodePageStatesTheCodesLifetime(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		ttl        time.Duration
		lang, want string
	}{
		{ttl: 10 * time.Minute, lang: "en", want: "It works for 10 minutes."},
		{ttl: 15 * time.Minute, lang: "en", want: "It works for 15 minutes."},
		{ttl: 15 * time.Minute, lang: "de", want: "Er gilt 15 Minuten."},
	} {
		t.Run(tc.lang+" "+tc.ttl.String(), func(t *testing.T) {
			t.Parallel()
			h := newPageHarness(t, func(c *selfservice.Config) { c.CodeTTL = tc.ttl })
			b := h.browser(t)
			r := b.post("/privacy/start?lang="+tc.lang, url.Values{"type": {event.KindAccess}, "email": {"minutes@example.com"}, "lang": {tc.lang}})
			require.Equal(t, http.StatusOK, r.status, "%s", r.body)
			require.Contains(t, string(r.body), tc.want)
		})
	}
}
