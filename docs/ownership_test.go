package docs

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// sqlTable finds the table after each keyword that names one. Keywords are
// matched in any case, so a lower-case query cannot slip past.
var sqlTable = regexp.MustCompile(`(?i)\b(?:FROM|JOIN|INTO|UPDATE|REFERENCES|TABLE)\s+(?:ONLY\s+)?("?[a-z_][a-z0-9_]*"?(?:\."?[a-z_][a-z0-9_]*"?)?)`)

// sqlTables returns the names after FROM, JOIN, INTO, UPDATE (DELETE FROM
// included), REFERENCES and TABLE in one string, unquoted, without a
// "public." schema.
func sqlTables(s string) []string {
	var out []string
	for _, m := range sqlTable.FindAllStringSubmatch(s, -1) {
		name := strings.ToLower(strings.ReplaceAll(m[1], `"`, ""))
		out = append(out, strings.TrimPrefix(name, "public."))
	}
	return out
}

// ownedTables reads the ownership table of architecture.md: module name ->
// the tables (those created by migrations/) its "owns" column names.
func ownedTables(t *testing.T, tables map[string]bool) map[string]string {
	t.Helper()
	doc, err := os.ReadFile("architecture.md")
	require.NoError(t, err)
	section := string(doc)
	start := strings.Index(section, "## Modules and what each owns")
	require.GreaterOrEqual(t, start, 0, "architecture.md has the section \"Modules and what each owns\"")
	section = section[start:]
	if end := strings.Index(section[2:], "\n## "); end >= 0 {
		section = section[:end+2]
	}
	ticked := regexp.MustCompile("`([^`]+)`")
	owner := map[string]string{}
	for _, line := range strings.Split(section, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) != 5 || strings.Contains(cells[1], "---") || strings.TrimSpace(cells[1]) == "module" {
			continue
		}
		var modules []string
		for _, m := range ticked.FindAllStringSubmatch(cells[1], -1) {
			modules = append(modules, m[1])
		}
		for _, m := range ticked.FindAllStringSubmatch(cells[3], -1) {
			if !tables[m[1]] {
				continue // a queue, a Redis key, a directory
			}
			require.Len(t, modules, 1, "architecture.md: table %s is owned by one module, not %v", m[1], modules)
			prev, dup := owner[m[1]]
			require.False(t, dup, "architecture.md: table %s has two owners, %s and %s", m[1], prev, modules[0])
			owner[m[1]] = modules[0]
		}
	}
	return owner
}

// migratedTables are the tables migrations/ creates.
func migratedTables(t *testing.T) map[string]bool {
	t.Helper()
	files, err := filepath.Glob("../migrations/*.sql")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	create := regexp.MustCompile(`(?i)CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?([a-z_][a-z0-9_]*)`)
	tables := map[string]bool{}
	for _, f := range files {
		src, err := os.ReadFile(f)
		require.NoError(t, err)
		for _, m := range create.FindAllStringSubmatch(string(src), -1) {
			tables[strings.ToLower(m[1])] = true
		}
	}
	return tables
}

// moduleOf is the module a Go file belongs to: modules/<name>/... is
// <name> (subpackages included); anything else (app, config, docs) is not a
// module and owns no table.
func moduleOf(path string) string {
	parts := strings.Split(filepath.ToSlash(path), "/")
	if len(parts) >= 3 && parts[0] == "modules" {
		return parts[1]
	}
	return ""
}

type tableUse struct {
	pos   token.Position
	table string
}

// tablesNamed returns the tables a Go file names: in SQL in its string
// literals, and as a gorm Table("...") argument or a Table: "..." field
// (lock.Fence).
func tablesNamed(t *testing.T, fset *token.FileSet, path string) []tableUse {
	t.Helper()
	f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
	require.NoError(t, err)
	var uses []tableUse
	literal := func(e ast.Expr) (string, bool) {
		lit, ok := e.(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING {
			return "", false
		}
		s, err := strconv.Unquote(lit.Value)
		return s, err == nil
	}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.BasicLit:
			if s, ok := literal(n); ok {
				for _, name := range sqlTables(s) {
					uses = append(uses, tableUse{fset.Position(n.Pos()), name})
				}
			}
		case *ast.CallExpr:
			if sel, ok := n.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "Table" && len(n.Args) > 0 {
				if s, ok := literal(n.Args[0]); ok {
					uses = append(uses, tableUse{fset.Position(n.Pos()), strings.ToLower(strings.Fields(s + " x")[0])})
				}
			}
		case *ast.KeyValueExpr:
			if key, ok := n.Key.(*ast.Ident); ok && key.Name == "Table" {
				if s, ok := literal(n.Value); ok {
					uses = append(uses, tableUse{fset.Position(n.Pos()), strings.ToLower(s)})
				}
			}
		}
		return true
	})
	return uses
}

// TestPackagesQueryOnlyTablesTheyOwn keeps the ownership table of
// docs/architecture.md true: every table migrations/ creates has exactly
// one owning module there, and no package's code names a table of another
// module in its SQL. Other modules go through the owner's store, behind an
// interface they declare. Tests (_test.go) are not checked: their fixtures
// seed and inspect other owners' rows on purpose.
func TestPackagesQueryOnlyTablesTheyOwn(t *testing.T) {
	t.Parallel()
	tables := migratedTables(t)
	owner := ownedTables(t, tables)
	for table := range tables {
		require.Contains(t, owner, table, "migrations/ creates table %s, which no module owns in architecture.md", table)
	}

	// Documented exceptions: package -> table -> why. Keep it tiny; the
	// answer to a new cross-read is an owner's store method.
	allowed := map[string]map[string]string{
		"modules/notify": {
			"requests": "notify.DeleteRecords (the retention sweeper's batch) deletes notifications whose request record " +
				"is gone with one anti-join on requests.id; split across two stores, a batch of rows whose request " +
				"still exists would starve it",
		},
	}

	fset := token.NewFileSet()
	root := ".."
	var violations []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); name == ".git" || name == "testdata" || name == "node_modules" {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		mod := moduleOf(rel)
		for _, u := range tablesNamed(t, fset, path) {
			own, known := owner[u.table]
			if !known || own == mod || allowed[filepath.Dir(filepath.ToSlash(rel))][u.table] != "" {
				continue
			}
			who := "package " + filepath.Dir(filepath.ToSlash(rel))
			violations = append(violations, strings.TrimPrefix(u.pos.String(), "../")+": "+who+
				" names table "+u.table+", which module "+own+" owns; read or change it through "+own+"'s store")
		}
		return nil
	})
	require.NoError(t, err)
	slices.Sort(violations)
	violations = slices.Compact(violations)
	if len(violations) > 0 {
		t.Fatalf("SQL across an owner's boundary (docs/architecture.md, \"Modules and what each owns\"):\n%s",
			strings.Join(violations, "\n"))
	}
}

// TestOwnershipScannerFindsEveryKindOfReference: the scanner above is only as good
// as this.
func TestOwnershipScannerFindsEveryKindOfReference(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		sql  string
		want []string
	}{
		{`SELECT id FROM reports WHERE request_id = ?`, []string{"reports"}},
		{`select state from requests r join notifications n using (id)`, []string{"requests", "notifications"}},
		{`INSERT INTO inbox (consumer) VALUES (?)`, []string{"inbox"}},
		{`UPDATE ONLY public."erasures" SET state = ?`, []string{"erasures"}},
		{`DELETE FROM scheduled_messages_sent WHERE key = ?`, []string{"scheduled_messages_sent"}},
		{`request_id uuid REFERENCES requests (id)`, []string{"requests"}},
		{`ALTER TABLE audit_events ADD COLUMN x int`, []string{"audit_events"}},
		{`SELECT now()`, nil},
	} {
		require.Equal(t, tc.want, sqlTables(tc.sql), tc.sql)
	}
}
