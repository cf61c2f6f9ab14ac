package app

import (
	"archive/zip"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// mailText waits for an email to to whose subject contains subject and
// returns its text.
func mailText(t *testing.T, mp *testkit.Mailpit, to, subject string) string {
	t.Helper()
	var text string
	testkit.Eventually(t, 90*time.Second, func() bool {
		msgs, err := mp.Messages(t.Context())
		if err != nil {
			return false
		}
		for _, m := range msgs {
			if len(m.To) == 0 || m.To[0].Address != to || !strings.Contains(m.Subject, subject) {
				continue
			}
			res, err := http.Get(mp.APIURL + "/api/v1/message/" + m.ID)
			if err != nil {
				return false
			}
			var body struct{ Text string }
			err = json.NewDecoder(res.Body).Decode(&body)
			_ = res.Body.Close()
			text = body.Text
			return err == nil
		}
		return false
	}, "an email to %s about %q", to, subject)
	return text
}

var (
	browserCode = regexp.MustCompile(`(?:code|Code): (\d{6})`)
	browserLink = func(path string) *regexp.Regexp {
		return regexp.MustCompile(`http://\S+` + regexp.QuoteMeta(path) + `\?\S+`)
	}
)

// TestPrivacyPageInBrowser drives the self-service page in a real headless
// Chromium, as a person with nothing but an email address would: an access
// request verified with the emailed code, followed through the receipt's
// status link, and the report downloaded from the "report ready" email's
// download page; then, in German, an erasure verified with the emailed link,
// completed by every participant; the spent link shows the "no longer
// works" page. Each page's screenshot is written to docs/img/privacy-*.png
// (docs/privacy-page.md shows them).
func TestPrivacyPageInBrowser(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs gdpr all and a browser")
	}
	testkit.ChromiumPath(t) // fail before starting gdpr when the browser is missing
	run := startOpsRun(t, "GDPR_PRIVACY_ENABLED=true", "GDPR_PRIVACY_REQUIRE_VERIFICATION="+opsCaller())
	require.NoError(t, run.gdb.Exec(`INSERT INTO crm_customers VALUES ('c-4711', 'ada@example.com', 'Ada Lovelace', 'pro')`).Error)
	base := "http://" + run.api

	downloads := t.TempDir()
	ctx := testkit.Browser(t, 900, 760)
	ctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	t.Cleanup(cancel)

	shot := func(name string) chromedp.Action[chromedp.Void] {
		return func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
			png, err := chromedp.FullScreenshot(100)(ctx, tg)
			if err != nil {
				return chromedp.Void{}, err
			}
			return chromedp.Void{}, os.WriteFile(filepath.Join("..", "docs", "img", "privacy-"+name+".png"), png, 0o644)
		}
	}
	text := func(id string) string {
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID(id)))
		require.NoError(t, err)
		return strings.TrimSpace(s)
	}

	// Access, verified with the code.
	_, err := chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: downloads,
	})
	require.NoError(t, err)
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(base+"/privacy?lang=en"),
		chromedp.WaitVisible(chromedp.ID("email")),
		chromedp.Click(chromedp.ID("type-access")),
		chromedp.SendKeys(chromedp.ID("email"), "ada@example.com"),
		shot("form"),
		chromedp.Click(chromedp.ID("start")),
		chromedp.WaitVisible(chromedp.ID("sent")),
		shot("code"),
	))
	code := browserCode.FindStringSubmatch(mailText(t, run.mail, "ada@example.com", "verification code"))
	require.NotNil(t, code, "a code in the verification email")
	require.NoError(t, chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.ID("code"), code[1]),
		chromedp.Click(chromedp.ID("verify")),
		chromedp.WaitVisible(chromedp.ID("receipt")),
		shot("receipt"),
	))
	accessID := text("request-id")
	require.Len(t, accessID, 36)
	verifiedBy := time.Now()

	// The receipt email, at once, with the id, the deadline and the status link.
	receipt := mailText(t, run.mail, "ada@example.com", "We received your request")
	require.Contains(t, receipt, accessID)
	require.Contains(t, receipt, "We must answer by")
	statusLink := browserLink("/privacy/status").FindString(receipt)
	require.NotEmpty(t, statusLink)

	// The report email links to the download page; its button downloads the ZIP.
	ready := mailText(t, run.mail, "ada@example.com", "report is ready")
	downloadPage := browserLink("/privacy/download").FindString(ready)
	require.NotEmpty(t, downloadPage, "a download page link in:\n%s", ready)
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(statusLink),
		chromedp.WaitVisible(chromedp.ID("status")),
		chromedp.WaitVisible(chromedp.ID("download-page")),
		shot("status"),
		chromedp.Navigate(downloadPage),
		chromedp.WaitVisible(chromedp.ID("download-button")),
		shot("download"),
	))
	require.Contains(t, text("until"), time.Now().Add(7*24*time.Hour).UTC().Format("2 January 2006"))
	// The page says what the archive holds: each source and its records.
	require.Regexp(t, `crm\s+1\b`, text("contents"))
	require.NoError(t, chromedp.Do(ctx, chromedp.Click(chromedp.ID("download-button"))))
	var names []string
	var crm []byte
	testkit.Eventually(t, 30*time.Second, func() bool {
		zr, err := zip.OpenReader(filepath.Join(downloads, "gdpr-report-"+accessID+".zip"))
		if err != nil {
			return false
		}
		defer zr.Close()
		names = names[:0]
		for _, f := range zr.File {
			names = append(names, f.Name)
			if f.Name == "crm.json" {
				rc, err := f.Open()
				if err != nil {
					return false
				}
				crm, err = io.ReadAll(rc)
				_ = rc.Close()
				if err != nil {
					return false
				}
			}
		}
		return true
	}, "the browser downloaded the report")
	require.Contains(t, names, "manifest.json")
	// The page asked only for the address; the account id the crm source
	// is keyed by came from privacy.account_lookup.
	require.Contains(t, string(crm), "Ada Lovelace", "the crm source found the account the lookup named")

	// Erasure, in German, verified with the link.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(base+"/privacy"),
		chromedp.WaitVisible(chromedp.ID("lang-de")),
		chromedp.Click(chromedp.ID("lang-de")),
		chromedp.WaitVisible(chromedp.ID("email")),
		chromedp.Click(chromedp.ID("type-erasure")),
		chromedp.SendKeys(chromedp.ID("email"), "ada@example.com"),
		shot("form-de"),
		chromedp.Click(chromedp.ID("start")),
		chromedp.WaitVisible(chromedp.ID("sent")),
	))
	verify := mailText(t, run.mail, "ada@example.com", "Bestätigungscode")
	link := browserLink("/privacy/confirm").FindString(verify)
	require.NotEmpty(t, link, "a link in the verification email:\n%s", verify)
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(link),
		chromedp.WaitVisible(chromedp.ID("confirm")),
		shot("link"),
		chromedp.Click(chromedp.ID("confirm")),
		chromedp.WaitVisible(chromedp.ID("receipt")),
	))
	erasureID := text("request-id")
	require.Len(t, erasureID, 36)
	require.NotEqual(t, accessID, erasureID)
	testkit.Eventually(t, 90*time.Second, func() bool { return run.storedState(t, erasureID) == "completed" }, "the erasure completed")
	deleted := mailText(t, run.mail, "ada@example.com", "gelöscht")
	require.Contains(t, deleted, erasureID)
	german := mailText(t, run.mail, "ada@example.com", "Anfrage "+erasureID)
	statusDE := browserLink("/privacy/status").FindString(german)
	require.NotEmpty(t, statusDE)
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(statusDE),
		chromedp.WaitVisible(chromedp.ID("status")),
	))
	require.Equal(t, "abgeschlossen", text("state"))
	require.NoError(t, chromedp.Do(ctx, shot("status-de")))

	// The spent link: the page says so and how to ask again.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(link),
		chromedp.WaitVisible(chromedp.ID("gone")),
		chromedp.WaitVisible(chromedp.ID("again")),
		shot("gone"),
	))
	require.Equal(t, "completed", run.storedState(t, accessID))
	checkVerificationsAudited(t, run, accessID, verifiedBy)
}
