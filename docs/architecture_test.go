package docs

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestArchitectureNamesExistingTests keeps docs/architecture.md honest: each
// invariant names the tests that guard it, and a renamed or deleted test
// would silently leave an invariant unguarded.
func TestArchitectureNamesExistingTests(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("architecture.md")
	require.NoError(t, err)
	named := regexp.MustCompile(`\bTest[A-Z][A-Za-z0-9]+\b`).FindAllString(string(doc), -1)
	require.NotEmpty(t, named, "architecture.md names the tests that guard its invariants")

	defined := map[string]bool{}
	decl := regexp.MustCompile(`(?m)^func (Test[A-Za-z0-9]+)\(t \*testing\.T\)`)
	err = filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range decl.FindAllStringSubmatch(string(src), -1) {
			defined[m[1]] = true
		}
		return nil
	})
	require.NoError(t, err)
	for _, name := range named {
		if name == "TestArchitectureNamesExistingTests" {
			continue
		}
		require.True(t, defined[name], "docs/architecture.md names %s, which no test file defines", name)
	}
}
