package docs

import (
	"fmt"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// modulePath is the import path of the repository's root package.
const modulePath = "github.com/gdpr-oss/gdpr"

// boundary is one of the import rules of docs/architecture.md ("Domain code
// imports neither echo nor amqp091"): pkg may be reached only from the
// directories in allowed. The same rules are depguard's in .golangci.yml;
// this check also follows imports through the repository's own packages,
// which depguard does not (a domain module importing modules/api would
// carry echo in without naming it).
type boundary struct {
	pkg        string
	allowed    []string // directories relative to the root, and their subdirectories
	transitive bool
}

// boundaries returns the rules.
func boundaries() []boundary {
	return []boundary{
		{pkg: "github.com/labstack/echo", allowed: []string{"modules/api"}, transitive: true},
		// bus is imported by every consumer, so amqp091 is checked where it is
		// named: only bus, the conformance check (which must send what bus
		// refuses to) and the test kit.
		{pkg: "github.com/rabbitmq/amqp091-go", allowed: []string{"modules/bus", "modules/participant/conformance", "modules/testkit"}},
	}
}

// boundaryViolations parses the non-test Go files under root/modules and
// returns one line per package under modules/ that reaches a bounded
// package from outside the directories allowed to.
func boundaryViolations(root string, rules []boundary) ([]string, error) {
	imports := map[string]map[string]bool{} // directory relative to root -> imported paths
	fset := token.NewFileSet()
	err := filepath.WalkDir(filepath.Join(root, "modules"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return fmt.Errorf("parsing %s: %w", path, err)
		}
		rel, err := filepath.Rel(root, filepath.Dir(path))
		if err != nil {
			return fmt.Errorf("locating %s: %w", path, err)
		}
		rel = filepath.ToSlash(rel)
		if imports[rel] == nil {
			imports[rel] = map[string]bool{}
		}
		for _, imp := range f.Imports {
			p, err := strconv.Unquote(imp.Path.Value)
			if err != nil {
				return fmt.Errorf("reading an import of %s: %w", path, err)
			}
			imports[rel][p] = true
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	within := func(dir string, dirs []string) bool {
		for _, a := range dirs {
			if dir == a || strings.HasPrefix(dir, a+"/") {
				return true
			}
		}
		return false
	}
	names := func(p, want string) bool { return p == want || strings.HasPrefix(p, want+"/") }
	// reach returns the bounded import a directory reaches and through which
	// of the repository's packages ("" when it names it itself).
	var reach func(dir, want string, seen map[string]bool) (via string, ok bool)
	reach = func(dir, want string, seen map[string]bool) (string, bool) {
		if seen[dir] {
			return "", false
		}
		seen[dir] = true
		for p := range imports[dir] {
			if names(p, want) {
				return "", true
			}
		}
		for p := range imports[dir] {
			sub, ok := strings.CutPrefix(p, modulePath+"/")
			if !ok || imports[sub] == nil {
				continue
			}
			if _, ok := reach(sub, want, seen); ok {
				return sub, true
			}
		}
		return "", false
	}
	var out []string
	for dir := range imports {
		for _, r := range rules {
			if within(dir, r.allowed) {
				continue
			}
			if !r.transitive {
				for p := range imports[dir] {
					if names(p, r.pkg) {
						out = append(out, fmt.Sprintf("%s imports %s (allowed only in %s)", dir, p, strings.Join(r.allowed, ", ")))
					}
				}
				continue
			}
			if via, ok := reach(dir, r.pkg, map[string]bool{}); ok {
				if via == "" {
					out = append(out, fmt.Sprintf("%s imports %s (allowed only in %s)", dir, r.pkg, strings.Join(r.allowed, ", ")))
				} else {
					out = append(out, fmt.Sprintf("%s reaches %s through %s (allowed only in %s)", dir, r.pkg, via, strings.Join(r.allowed, ", ")))
				}
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// TestDomainModulesImportNeitherEchoNorAMQP keeps the HTTP framework in the
// HTTP layer and the broker client in bus, for every package under modules/.
func TestDomainModulesImportNeitherEchoNorAMQP(t *testing.T) {
	t.Parallel()
	got, err := boundaryViolations("..", boundaries())
	require.NoError(t, err)
	require.Empty(t, got, "handlers and consumers decode, call the module and map errors: docs/architecture.md")
}

// TestBoundaryCheckFindsPlantedViolations plants each kind of violation in a
// tree of its own, so the check above is shown to fail when it should.
func TestBoundaryCheckFindsPlantedViolations(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	plant := func(path string, imports ...string) {
		t.Helper()
		var b strings.Builder
		fmt.Fprintf(&b, "package %s\n\nimport (\n", filepath.Base(filepath.Dir(path)))
		for _, p := range imports {
			fmt.Fprintf(&b, "\t_ %q\n", p)
		}
		b.WriteString(")\n")
		full := filepath.Join(root, path)
		require.NoError(t, os.MkdirAll(filepath.Dir(full), 0o750))
		require.NoError(t, os.WriteFile(full, []byte(b.String()), 0o600))
	}
	plant("modules/api/api.go", "github.com/labstack/echo/v4", modulePath+"/modules/intake")
	plant("modules/bus/bus.go", "github.com/rabbitmq/amqp091-go")
	plant("modules/intake/intake.go", "errors")
	plant("modules/erasure/erasure.go", "github.com/rabbitmq/amqp091-go", modulePath+"/modules/bus")
	plant("modules/adminui/ui.go", modulePath+"/modules/api")
	plant("modules/selfservice/page.go", "github.com/labstack/echo/v4/middleware")
	plant("modules/notify/notify_test.go", "github.com/labstack/echo/v4") // tests may

	got, err := boundaryViolations(root, boundaries())
	require.NoError(t, err)
	require.Equal(t, []string{
		"modules/adminui reaches github.com/labstack/echo through modules/api (allowed only in modules/api)",
		"modules/erasure imports github.com/rabbitmq/amqp091-go (allowed only in modules/bus, modules/participant/conformance, modules/testkit)",
		"modules/selfservice imports github.com/labstack/echo (allowed only in modules/api)",
	}, got)
}
