package app

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestLanguagesFollowTheBrowserAndTheAPILocale runs gdpr all. A browser
// that prefers German (Accept-Language, no ?lang) gets the page in German,
// and so the verification email, the receipt and the report email of the
// request it verifies; ?lang=en then wins over the browser's preference. An
// API caller's `locale` goes with its request to the request's emails: de
// gets the German report email (here the operator's override of it from
// privacy.template_dir/email/de), a request without a locale the shipped
// English one, which the German override does not touch.
func TestLanguagesFollowTheBrowserAndTheAPILocale(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs gdpr all")
	}
	dir := t.TempDir()
	override := filepath.Join(dir, "email", "de", "report_ready.tmpl")
	require.NoError(t, os.MkdirAll(filepath.Dir(override), 0o755))
	require.NoError(t, os.WriteFile(override, []byte(`{{define "subject"}}Acme Datenschutz: Ihr Bericht ist bereit{{end}}
{{define "body"}}Acme Datenschutz, Anfrage {{.RequestID}}:
{{.Link}}
{{end}}`), 0o600))
	run := startOpsRun(t, "GDPR_PRIVACY_ENABLED=true", "GDPR_PRIVACY_TEMPLATE_DIR="+dir)
	base := "http://" + run.api

	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	client := &http.Client{Jar: jar, Timeout: 20 * time.Second}
	send := func(method, path string, form url.Values, lang string) (int, string) {
		t.Helper()
		var body io.Reader
		if form != nil {
			body = strings.NewReader(form.Encode())
		}
		req, err := http.NewRequestWithContext(t.Context(), method, base+path, body)
		require.NoError(t, err)
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		req.Header.Set("Accept-Language", lang)
		res, err := client.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		return res.StatusCode, string(b)
	}
	field := func(page, name string) string {
		t.Helper()
		m := regexp.MustCompile(`name="` + name + `" value="([^"]*)"`).FindStringSubmatch(page)
		require.NotNil(t, m, "no %s field in:\n%s", name, page)
		return m[1]
	}

	// The browser's language, with no lang parameter and none posted.
	const german = "de-CH, de;q=0.9, en;q=0.5"
	status, page := send(http.MethodGet, "/privacy", nil, german)
	require.Equal(t, http.StatusOK, status, page)
	require.Contains(t, page, `<html lang="de">`)
	require.Contains(t, page, "Meine Daten löschen")
	csrf := field(page, "csrf")
	status, page = send(http.MethodPost, "/privacy/start", url.Values{"csrf": {csrf}, "type": {"access"}, "email": {"hans@example.com"}}, german)
	require.Equal(t, http.StatusOK, status, page)
	require.Contains(t, page, `<html lang="de">`)
	verify := mailText(t, run.mail, "hans@example.com", "Ihr Bestätigungscode")
	code := browserCode.FindStringSubmatch(verify)
	require.NotNil(t, code, "a code in the German verification email:\n%s", verify)
	status, page = send(http.MethodPost, "/privacy/verify", url.Values{"csrf": {csrf}, "flow": {field(page, "flow")}, "code": {code[1]}}, german)
	require.Equal(t, http.StatusOK, status, page)
	require.Contains(t, page, `id="receipt"`)
	require.Contains(t, page, "Anfrage erhalten")
	pageID := regexp.MustCompile(`<dd id="request-id">([^<]+)</dd>`).FindStringSubmatch(page)
	require.NotNil(t, pageID, page)
	require.Contains(t, mailText(t, run.mail, "hans@example.com", "Wir haben Ihre Anfrage "+pageID[1]), "Guten Tag")
	require.Contains(t, mailText(t, run.mail, "hans@example.com", "Acme Datenschutz: Ihr Bericht ist bereit"), "Anfrage "+pageID[1])
	var locale string
	require.NoError(t, run.gdb.Raw(`SELECT locale FROM requests WHERE id = ?`, pageID[1]).Scan(&locale).Error)
	require.Equal(t, "de", locale)

	// ?lang wins over the browser's language, and is remembered.
	status, page = send(http.MethodGet, "/privacy?lang=en", nil, german)
	require.Equal(t, http.StatusOK, status, page)
	require.Contains(t, page, `<html lang="en">`)
	status, page = send(http.MethodGet, "/privacy", nil, german)
	require.Equal(t, http.StatusOK, status, page)
	require.Contains(t, page, `<html lang="en">`, "the chosen language is remembered over the browser's")
	status, page = send(http.MethodPost, "/privacy/start", url.Values{"csrf": {csrf}, "type": {"access"}, "email": {"jane@example.com"}}, german)
	require.Equal(t, http.StatusOK, status, page)
	require.Contains(t, mailText(t, run.mail, "jane@example.com", "Your verification code"), "Your code: ")

	// The API's locale travels with the request to its emails.
	ids := map[string]string{}
	for email, body := range map[string]map[string]any{
		"api.de@example.com": {"type": "access", "subject": map[string]string{"id": "c-de", "email": "api.de@example.com"}, "locale": "de"},
		"api.en@example.com": {"type": "access", "subject": map[string]string{"id": "c-en", "email": "api.en@example.com"}},
	} {
		code, resp := run.do(t, http.MethodPost, "/v1/requests", opsAPIToken, body)
		require.Equal(t, http.StatusAccepted, code, "%s", resp)
		m := regexp.MustCompile(`"id":"([^"]+)"`).FindSubmatch(resp)
		require.NotNil(t, m, "%s", resp)
		ids[email] = string(m[1])
	}
	de := mailText(t, run.mail, "api.de@example.com", "Acme Datenschutz: Ihr Bericht ist bereit")
	require.Contains(t, de, "Anfrage "+ids["api.de@example.com"], "the operator's German report email")
	en := mailText(t, run.mail, "api.en@example.com", "Your personal data report is ready")
	require.Contains(t, en, "Hello,", "the shipped English report email, which the German override does not replace")
	require.NotContains(t, en, "Acme")
}
