package testkit

import (
	"context"
	"os/exec"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"
)

// ChromiumPath finds Debian's chromium (deploy/tools.sh test installs it)
// and fails the test, naming the fix, when it is missing: a browser test
// that skipped itself would pass without having run.
func ChromiumPath(t testing.TB) string {
	t.Helper()
	for _, c := range []string{"chromium", "chromium-browser", "/usr/bin/chromium"} {
		if p, err := exec.LookPath(c); err == nil {
			return p
		}
	}
	t.Fatal("chromium is missing: run deploy/tools.sh test (apt-get install chromium)")
	return ""
}

// Browser starts a headless Chromium with a fresh profile and a window of
// width×height for one test, and returns a chromedp context on its first
// tab. The browser lives until the test ends. Background networking,
// component updates and sync are off so the browser reaches no server but
// the test's.
func Browser(t testing.TB, width, height int) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(ChromiumPath(t)),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(width, height),
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(t.Context(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(cancel)
	// The first action starts the browser; it lives as long as ctx.
	require.NoError(t, chromedp.Do(ctx), "starting chromium")
	return ctx
}
