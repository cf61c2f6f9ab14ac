package docs

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestPrivacyPageScreenshotsAreTheBrowserTests keeps docs/privacy-page.md's
// pictures real: every screenshot it shows is a PNG in docs/img that
// TestPrivacyPageInBrowser writes (shot("name") after the page was waited
// for), and every screenshot the test takes is shown.
func TestPrivacyPageScreenshotsAreTheBrowserTests(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("privacy-page.md")
	require.NoError(t, err)
	src, err := os.ReadFile(filepath.Join("..", "app", "privacy_browser_test.go"))
	require.NoError(t, err)
	var shown []string
	for _, m := range regexp.MustCompile(`!\[[^\]]*\]\(img/privacy-([a-z-]+)\.png\)`).FindAllSubmatch(doc, -1) {
		shown = append(shown, string(m[1]))
	}
	var taken []string
	for _, m := range regexp.MustCompile(`shot\("([a-z-]+)"\)`).FindAllSubmatch(src, -1) {
		taken = append(taken, string(m[1]))
	}
	require.NotEmpty(t, shown)
	require.NotEmpty(t, taken)
	for _, name := range shown {
		require.Contains(t, taken, name, "privacy-page.md shows img/privacy-%s.png, which the browser test does not take", name)
		png, err := os.ReadFile(filepath.Join("img", "privacy-"+name+".png"))
		require.NoError(t, err)
		require.True(t, bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")), "img/privacy-%s.png is a PNG", name)
		require.Greater(t, len(png), 4096, "img/privacy-%s.png is a screenshot, not a placeholder", name)
	}
	for _, name := range taken {
		require.True(t, slices.Contains(shown, name), "the browser test takes privacy-%s.png, which privacy-page.md does not show", name)
	}
}
