package app

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/adminui"
)

// consoleSignIn posts a token to the console's sign-in form, with extra
// headers, and returns the answer (its body closed) without following the
// redirect.
func consoleSignIn(t *testing.T, base, token string, header ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, base+"/admin/signin", strings.NewReader(url.Values{"token": {token}}.Encode()))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := client.Do(req)
	require.NoError(t, err)
	require.NoError(t, res.Body.Close())
	return res
}

// TestConsoleSignInSpendsTheFailedAuthenticationBudget: a token guessed on
// the console's sign-in page is a token guessed, so wrong ones spend the
// address's serve.rate_limits.auth_failures_per_address like wrong bearer
// tokens do, in the same budget. A probe sent 40 wrong tokens to
// /admin/signin and got 40 answers of 401, none 429, and an address the
// API had blocked could still sign in.
func TestConsoleSignInSpendsTheFailedAuthenticationBudget(t *testing.T) {
	t.Parallel()
	r := startConsoleRun(t,
		"GDPR_SERVE_RATE_LIMITS_AUTH_FAILURES_PER_ADDRESS_RATE=1",
		"GDPR_SERVE_RATE_LIMITS_AUTH_FAILURES_PER_ADDRESS_PERIOD=1h",
		"GDPR_SERVE_RATE_LIMITS_AUTH_FAILURES_PER_ADDRESS_BURST=3")
	base := "http://" + r.api

	ok := consoleSignIn(t, base, consoleOperatorToken)
	require.Equal(t, http.StatusSeeOther, ok.StatusCode, "a right token spends nothing")
	for i := range 3 {
		require.Equal(t, http.StatusUnauthorized, consoleSignIn(t, base, "wrong-"+strconv.Itoa(i)).StatusCode)
	}
	blocked := consoleSignIn(t, base, "wrong-again")
	require.Equal(t, http.StatusTooManyRequests, blocked.StatusCode)
	secs, err := strconv.Atoi(blocked.Header.Get("Retry-After"))
	require.NoError(t, err, "Retry-After is whole seconds")
	require.GreaterOrEqual(t, secs, 1)
	require.Equal(t, http.StatusTooManyRequests, consoleSignIn(t, base, consoleOperatorToken).StatusCode,
		"a blocked address learns nothing from a right token either")
	code, body := r.do(t, http.MethodGet, "/v1/requests/0193a5c2-7e0b-7c4d-8f00-000000000001", consoleAPIToken, nil)
	require.Equal(t, http.StatusTooManyRequests, code, "the API shares the budget: %s", body)
}

// TestConsoleCookieIsSecureByThePublicURLNotByTheClient: the session cookie's
// Secure flag follows serve.public_url. It once followed the client's
// X-Forwarded-Proto, which any client can send (a probe's finding), so a
// plain-HTTP console could be told to set a cookie the browser would then
// never send back, and an https deployment behind a proxy that does not
// set the header sent its session cookie without Secure.
func TestConsoleCookieIsSecureByThePublicURLNotByTheClient(t *testing.T) {
	t.Parallel()
	plain := startConsoleRun(t)
	res := consoleSignIn(t, "http://"+plain.api, consoleOperatorToken, "X-Forwarded-Proto", "https")
	require.Equal(t, http.StatusSeeOther, res.StatusCode)
	ck := sessionCookieOf(t, res)
	require.False(t, ck.Secure, "public_url is http: a client's X-Forwarded-Proto does not make the cookie Secure")

	tls := startConsoleRun(t, "GDPR_SERVE_PUBLIC_URL=https://privacy.example.test",
		"GDPR_SERVE_DOWNLOAD_KEY=console-cookie-test-download-key-0123456789abcdef",
		"GDPR_REPORT_ENCRYPTION_KEY=Y29uc29sZS1jb29raWUtdGVzdC1lbmNyeXB0aW9uLWs=")
	res = consoleSignIn(t, "http://"+tls.api, consoleOperatorToken)
	require.Equal(t, http.StatusSeeOther, res.StatusCode)
	require.True(t, sessionCookieOf(t, res).Secure, "public_url is https: Secure without any header")
}

func sessionCookieOf(t *testing.T, res *http.Response) *http.Cookie {
	t.Helper()
	for _, c := range res.Cookies() {
		if c.Name == adminui.CookieName {
			return c
		}
	}
	t.Fatalf("no %s cookie in %v", adminui.CookieName, res.Header.Values("Set-Cookie"))
	return nil
}
