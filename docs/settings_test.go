package docs

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestArchitectureModulesDoNotImportConfig keeps settings the right way up:
// each module declares its own Config (defaults, Validate) and config
// composes them, so no package under modules/ may import config. Tests that
// run whole roles build their configuration with config/configtest.
//
// notYetMoved lists the packages whose sections (report, serve) still live in
// config while other work adds settings to them; it may only shrink: a listed
// package that no longer imports config fails the test too.
func TestArchitectureModulesDoNotImportConfig(t *testing.T) {
	t.Parallel()
	const configPkg = "github.com/gdpr-oss/gdpr/config"
	notYetMoved := map[string]bool{"modules/report": false, "modules/source": false}
	fset := token.NewFileSet()
	checked := 0
	err := filepath.WalkDir("../modules", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		checked++
		dir := strings.TrimPrefix(filepath.ToSlash(filepath.Dir(path)), "../")
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if _, listed := notYetMoved[dir]; listed && p == configPkg {
				notYetMoved[dir] = true
				continue
			}
			require.False(t, p == configPkg || strings.HasPrefix(p, configPkg+"/"),
				"%s imports %s: declare the module's settings as its own Config in its package, and compose it in config.Config", path, p)
		}
		return nil
	})
	require.NoError(t, err)
	require.Greater(t, checked, 50, "the walk found the modules")
	for dir, imports := range notYetMoved {
		require.True(t, imports, "%s no longer imports config: remove it from notYetMoved", dir)
	}
}
