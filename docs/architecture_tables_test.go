package docs

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/config"
)

// tableNames returns, row by row, the backticked names in the first cell of
// the table that follows heading in architecture.md.
func tableNames(t *testing.T, heading string) [][]string {
	t.Helper()
	doc, err := os.ReadFile("architecture.md")
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(doc), "\n"+heading+"\n")
	require.True(t, ok, "architecture.md lacks %q", heading)
	if next := strings.Index(section, "\n## "); next >= 0 {
		section = section[:next]
	}
	tick := regexp.MustCompile("`([^`]+)`")
	var rows [][]string
	for line := range strings.SplitSeq(section, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 3 || strings.HasPrefix(strings.TrimSpace(cells[1]), "---") {
			continue
		}
		var names []string
		for _, m := range tick.FindAllStringSubmatch(cells[1], -1) {
			names = append(names, m[1])
		}
		if len(names) > 0 {
			rows = append(rows, names)
		}
	}
	return rows
}

// TestArchitectureNamesEveryModule fails when a package under modules/ is
// missing from the module table of docs/architecture.md, is listed twice, or
// the table names a package that is gone.
func TestArchitectureNamesEveryModule(t *testing.T) {
	t.Parallel()
	listed := map[string]bool{}
	for _, row := range tableNames(t, "## Modules and what each owns") {
		for _, name := range row {
			require.False(t, listed[name], "module %s has two rows in docs/architecture.md", name)
			listed[name] = true
		}
	}
	dirs, err := os.ReadDir("../modules")
	require.NoError(t, err)
	var missing []string
	for _, d := range dirs {
		if !d.IsDir() {
			continue
		}
		if files, _ := filepath.Glob(filepath.Join("../modules", d.Name(), "*.go")); len(files) == 0 {
			continue
		}
		if !listed[d.Name()] {
			missing = append(missing, d.Name())
		}
		delete(listed, d.Name())
	}
	require.Empty(t, missing, "modules missing from the module table of docs/architecture.md")
	require.Empty(t, listed, "docs/architecture.md lists modules that are not under modules/")
}

// TestArchitectureNamesEverySettingsSection fails when a section of
// config.Config has no owner in the settings table of docs/architecture.md,
// or the table names a section config does not have.
func TestArchitectureNamesEverySettingsSection(t *testing.T) {
	t.Parallel()
	listed := map[string]bool{}
	for _, row := range tableNames(t, "## Settings") {
		for _, name := range row {
			listed[name] = true
		}
	}
	typ := reflect.TypeFor[config.Config]()
	for i := range typ.NumField() {
		name, _, _ := strings.Cut(typ.Field(i).Tag.Get("yaml"), ",")
		require.True(t, listed[name], "settings section %s has no owner in docs/architecture.md", name)
		delete(listed, name)
	}
	require.Empty(t, listed, "docs/architecture.md names settings sections config.Config lacks")
}
