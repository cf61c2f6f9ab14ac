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
func TestArchitectureModulesDoNotImportConfig(t *testing.T) {
	t.Parallel()
	const configPkg = "github.com/gdpr-oss/gdpr/config"
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
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			require.False(t, p == configPkg || strings.HasPrefix(p, configPkg+"/"),
				"%s imports %s: declare the module's settings as its own Config in its package, and compose it in config.Config", path, p)
		}
		return nil
	})
	require.NoError(t, err)
	require.Greater(t, checked, 50, "the walk found the modules")
}
