// Package docs checks that the operator documentation keeps up with the
// code: every log event the code writes is listed in operations.md.
package docs

import (
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the log event list in operations.md from the code")

const (
	beginMarker        = "<!-- log-events:begin (generated: go test ./docs -update) -->"
	endMarker          = "<!-- log-events:end -->"
	metricsBeginMarker = "<!-- metrics:begin (generated: go test ./docs -update) -->"
	metricsEndMarker   = "<!-- metrics:end -->"
)

var levels = map[string]string{
	"Debug": "debug", "DebugContext": "debug",
	"Info": "info", "InfoContext": "info",
	"Warn": "warn", "WarnContext": "warn",
	"Error": "error", "ErrorContext": "error",
}

// logEvent is one static log message and where it is written.
type logEvent struct {
	msg    string
	levels map[string]bool
	where  map[string]bool
	attrs  map[string]bool
}

// scanLogEvents finds every slog call with a literal message in the
// module's non-test Go files.
func scanLogEvents(t *testing.T) map[string]*logEvent {
	t.Helper()
	events := map[string]*logEvent{}
	fset := token.NewFileSet()
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata" || d.Name() == "testkit") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		pkg := filepath.ToSlash(filepath.Dir(strings.TrimPrefix(path, "../")))
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			level, ok := levels[sel.Sel.Name]
			if !ok {
				return true
			}
			i := 0
			if strings.HasSuffix(sel.Sel.Name, "Context") {
				i = 1
			}
			if len(call.Args) <= i {
				return true
			}
			msg, ok := stringLit(call.Args[i])
			if !ok {
				return true
			}
			e := events[msg]
			if e == nil {
				e = &logEvent{msg: msg, levels: map[string]bool{}, where: map[string]bool{}, attrs: map[string]bool{}}
				events[msg] = e
			}
			e.levels[level] = true
			e.where[pkg] = true
			for j := i + 1; j < len(call.Args); j += 2 {
				if k, ok := stringLit(call.Args[j]); ok {
					e.attrs[k] = true
				}
			}
			return true
		})
		return nil
	})
	require.NoError(t, err)
	return events
}

func stringLit(e ast.Expr) (string, bool) {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return s, err == nil
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func renderTable(events map[string]*logEvent) string {
	msgs := keys(func() map[string]bool {
		m := map[string]bool{}
		for k := range events {
			m[k] = true
		}
		return m
	}())
	sort.SliceStable(msgs, func(a, b int) bool {
		wa, wb := keys(events[msgs[a]].where)[0], keys(events[msgs[b]].where)[0]
		if wa != wb {
			return wa < wb
		}
		return msgs[a] < msgs[b]
	})
	var b strings.Builder
	b.WriteString("| message (`msg`) | level | written by | attributes besides request_id, message_id, trace_id |\n|---|---|---|---|\n")
	for _, m := range msgs {
		e := events[m]
		var attrs []string
		for _, a := range keys(e.attrs) {
			attrs = append(attrs, "`"+a+"`")
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", strings.ReplaceAll(m, "|", `\|`), strings.Join(keys(e.levels), ", "),
			strings.Join(keys(e.where), ", "), strings.Join(attrs, " "))
	}
	return b.String()
}

// TestLogEvents requires every log message in the code to be listed in
// operations.md, and no log attribute to be named after personal data.
func TestLogEvents(t *testing.T) {
	// Not parallel: with -update both tests rewrite operations.md.
	events := scanLogEvents(t)
	require.NotEmpty(t, events)
	for _, e := range events {
		for a := range e.attrs {
			lower := strings.ToLower(a)
			for _, pii := range []string{"email", "subject", "name", "address", "phone"} {
				if strings.Contains(lower, pii) && !slices.Contains([]string{"conn_name", "queue_name"}, lower) {
					t.Errorf("log event %q (%s) has attribute %q: log ids, never personal data", e.msg, strings.Join(keys(e.where), ","), a)
				}
			}
		}
	}
	raw, err := os.ReadFile("operations.md")
	require.NoError(t, err)
	doc := string(raw)
	begin, end := strings.Index(doc, beginMarker), strings.Index(doc, endMarker)
	require.True(t, begin >= 0 && end > begin, "operations.md lacks the log event markers")
	if *update {
		doc = doc[:begin+len(beginMarker)] + "\n" + renderTable(events) + doc[end:]
		require.NoError(t, os.WriteFile("operations.md", []byte(doc), 0o644))
		return
	}
	listed := doc[begin:end]
	for _, m := range keys(func() map[string]bool {
		out := map[string]bool{}
		for k := range events {
			out[k] = true
		}
		return out
	}()) {
		if !strings.Contains(listed, "`"+strings.ReplaceAll(m, "|", `\|`)+"`") {
			t.Errorf("log event %q (%s) is not listed in docs/operations.md; run `go test ./docs -update`", m, strings.Join(keys(events[m].where), ","))
		}
	}
}
