package app

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/adminui"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// consoleBrowser starts a headless Chromium at a laptop's screen size.
func consoleBrowser(t *testing.T) context.Context {
	t.Helper()
	return testkit.Browser(t, 1366, 900)
}

// do runs steps with a bound, so a page that never shows an element fails
// the test instead of hanging it.
func do(ctx context.Context, t *testing.T, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	step, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(step, steps...); err != nil {
		look, stop := context.WithTimeout(ctx, 5*time.Second)
		defer stop()
		where, _ := chromedp.Run(look, chromedp.Location())
		body, _ := chromedp.Run(look, chromedp.Text(chromedp.CSS("body")))
		t.Fatalf("browser steps failed at %s: %v\npage text:\n%s", where, err, body)
	}
}

func brun[T any](ctx context.Context, t *testing.T, a chromedp.Action[T]) T {
	t.Helper()
	step, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(step, a)
	require.NoError(t, err)
	return v
}

func screenshot(ctx context.Context, t *testing.T, name string) {
	t.Helper()
	png := brun(ctx, t, chromedp.FullScreenshot(100))
	dir := filepath.Join("..", "docs", "img")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, name), png, 0o644))
}

// postForm posts form as a browser would, with the console's cookie.
func postForm(t *testing.T, base, path, cookie string, form url.Values) int {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, base+path, strings.NewReader(form.Encode()))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(&http.Cookie{Name: adminui.CookieName, Value: cookie})
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	return resp.StatusCode
}

func sessionCookie(ctx context.Context, t *testing.T) *network.Cookie {
	t.Helper()
	res := brun(ctx, t, func(ctx context.Context, tg *chromedp.Target) (network.GetCookiesResult, error) {
		return cdp.Call(ctx, tg, network.GetCookies, network.GetCookiesParams{})
	})
	for _, c := range res.Cookies {
		if c.Name == adminui.CookieName {
			return c
		}
	}
	t.Fatal("no console session cookie")
	return nil
}

func signIn(ctx context.Context, t *testing.T, base, token string) {
	t.Helper()
	do(ctx, t,
		chromedp.Navigate(base+"/admin/"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), token),
		// Keyboard only: Enter submits the form.
		chromedp.SendKeys(chromedp.ID("token"), "\r"),
		chromedp.WaitVisible(chromedp.ID("who")),
	)
}

// TestConsoleInARealBrowser drives the web console in headless Chromium
// against `gdpr all`: sign in, filter the list, open a request, extend its
// deadline, see the email at Mailpit and the extension in the timeline; a
// viewer sees no action buttons and a viewer's forged action is refused; a
// form without the CSRF token is refused; sign-out and session expiry end
// the session. It writes docs/img/console-dashboard.png and
// docs/img/console-request.png, which docs/console.md shows.
func TestConsoleInARealBrowser(t *testing.T) {
	t.Parallel()
	r := startConsoleRun(t)
	base := "http://" + r.api
	tag := testkit.ID()
	email := "olga." + tag + "@example.org"
	target := r.submitAs(t, "access", "ccpa", "olga-"+tag, email)
	other := r.submitAs(t, "access", "gdpr", "paul-"+tag, "paul."+tag+"@example.org")
	shop := r.submitWith(t, consoleShopToken, "access", "ccpa", "sam-"+tag, "sam."+tag+"@example.org")
	r.waitState(t, target, "failed")
	r.waitState(t, other, "failed")
	r.waitState(t, shop, "failed")

	ctx := consoleBrowser(t)
	signIn(ctx, t, base, consoleOperatorToken)
	do(ctx, t, chromedp.WaitVisible(chromedp.ID("chart")), chromedp.WaitVisible(chromedp.ID("sync")))
	who := brun(ctx, t, chromedp.Text(chromedp.ID("who")))
	states := brun(ctx, t, chromedp.Text(chromedp.ID("states")))
	require.Equal(t, "ana (operator)", who)
	require.Contains(t, states, "failed")
	ck := sessionCookie(ctx, t)
	require.True(t, ck.HTTPOnly, "the session cookie is HttpOnly")
	require.Equal(t, network.CookieSameSiteStrict, ck.SameSite)
	require.False(t, ck.Secure, "plain HTTP here; Secure is set behind TLS")
	screenshot(ctx, t, "console-dashboard.png")

	// Filter the list by the API client: only the shop's request is left.
	do(ctx, t,
		chromedp.Navigate(base+"/admin/requests"),
		chromedp.WaitVisible(chromedp.ID("f-client")),
		chromedp.SetValue(chromedp.ID("f-client"), "shop"),
		chromedp.Click(chromedp.ID("apply")),
		chromedp.WaitReady(chromedp.CSS(`option[value="shop"][selected]`)),
	)
	list := brun(ctx, t, chromedp.Text(chromedp.ID("requests")))
	require.Contains(t, list, shop)
	require.NotContains(t, list, target)
	require.NotContains(t, list, other)

	// Filter the list by regulation and client: only the CCPA request
	// the other client submitted is left.
	do(ctx, t,
		chromedp.Navigate(base+"/admin/requests"),
		chromedp.WaitVisible(chromedp.ID("f-reg")),
		chromedp.SetValue(chromedp.ID("f-reg"), "ccpa"),
		chromedp.SetValue(chromedp.ID("f-state"), "failed"),
		chromedp.SetValue(chromedp.ID("f-client"), r.detail(t, target).Request.Client),
		chromedp.Click(chromedp.ID("apply")),
		chromedp.WaitReady(chromedp.CSS(`option[value="ccpa"][selected]`)),
	)
	list = brun(ctx, t, chromedp.Text(chromedp.ID("requests")))
	require.Contains(t, list, target)
	require.NotContains(t, list, other)
	require.NotContains(t, list, shop)

	// Open it and extend its deadline.
	do(ctx, t,
		chromedp.Click(chromedp.CSS(`a[href="/admin/requests/`+target+`"]`)),
		chromedp.WaitVisible(chromedp.ID("facts")),
	)
	require.Contains(t, brun(ctx, t, chromedp.Text(chromedp.ID("facts"))), "ccpa")
	do(ctx, t,
		chromedp.SendKeys(chromedp.ID("extend-reason"), "We must search two archived mail systems."),
		chromedp.Click(chromedp.ID("do-extend")),
		chromedp.WaitVisible(chromedp.ID("flash")),
		chromedp.WaitVisible(chromedp.ID("extension")),
	)
	extension := brun(ctx, t, chromedp.Text(chromedp.ID("extension")))
	require.Contains(t, extension, "by ana")
	require.Contains(t, extension, "two archived mail systems")
	mail := r.mailTo(t, email, "more time")
	require.Contains(t, mail, "two archived mail systems")
	testkit.Eventually(t, 30*time.Second, func() bool {
		do(ctx, t, chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("timeline")))
		timeline := brun(ctx, t, chromedp.Text(chromedp.ID("timeline")))
		return strings.Contains(timeline, "request.extended") && strings.Contains(timeline, "operator=ana")
	}, "the extension is in the timeline")
	screenshot(ctx, t, "console-request.png")

	// A form without the CSRF token (or with a wrong one) is refused.
	cookie := sessionCookie(ctx, t).Value
	require.Equal(t, http.StatusForbidden, postForm(t, base, "/admin/requests/"+target+"/retry", cookie, url.Values{}))
	require.Equal(t, http.StatusForbidden, postForm(t, base, "/admin/requests/"+target+"/retry", cookie, url.Values{"csrf": {"forged"}}))
	require.Equal(t, "failed", string(r.detail(t, target).Request.State), "nothing changed")

	// Sign out: the cookie no longer opens anything.
	do(ctx, t, chromedp.Click(chromedp.ID("signout")), chromedp.WaitVisible(chromedp.ID("token")))
	require.Equal(t, http.StatusUnauthorized, postForm(t, base, "/admin/requests/"+target+"/retry", cookie, url.Values{"csrf": {"x"}}))

	// A viewer sees no action buttons, and a forged action is refused.
	signIn(ctx, t, base, consoleViewerToken)
	do(ctx, t, chromedp.Navigate(base+"/admin/requests/"+target), chromedp.WaitVisible(chromedp.ID("facts")))
	forms := brun(ctx, t, chromedp.Nodes(chromedp.CSSAll(`form[action^="/admin/requests/"]`), chromedp.AtLeast(0)))
	require.Empty(t, forms, "a viewer's request page has no action forms")
	buttons := brun(ctx, t, chromedp.Nodes(chromedp.CSSAll(`main button`), chromedp.AtLeast(0)))
	require.Empty(t, buttons, "nor any button")
	csrf := brun(ctx, t, chromedp.Value(chromedp.CSS(`header form input[name="csrf"]`)))
	viewerCookie := sessionCookie(ctx, t).Value
	require.Equal(t, http.StatusForbidden, postForm(t, base, "/admin/requests/"+target+"/deny", viewerCookie,
		url.Values{"csrf": {csrf}, "reason_code": {"excessive"}, "reason": {"forged"}, "confirm": {"yes"}}))
	require.Equal(t, "failed", string(r.detail(t, target).Request.State), "the viewer's forged deny changed nothing")

	// An expired session sends the browser back to the sign-in page.
	require.NoError(t, r.gdb.Exec(`UPDATE console_sessions SET expires_at = now() - interval '1 second'`).Error)
	do(ctx, t, chromedp.Navigate(base+"/admin/"), chromedp.WaitVisible(chromedp.ID("token")))
	path := brun(ctx, t, chromedp.Location())
	require.True(t, strings.HasSuffix(path, "/admin/signin"), path)

	// The sign-in page shows only its own messages: a link cannot put text
	// of its choosing in the console's page (a probe's phishing finding).
	res, err := http.Get(base + "/admin/signin?error=" + url.QueryEscape("Token rotated: call IT at 555-0100"))
	require.NoError(t, err)
	page, err := io.ReadAll(res.Body)
	require.NoError(t, res.Body.Close())
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, res.StatusCode)
	require.NotContains(t, string(page), "555-0100")
}
