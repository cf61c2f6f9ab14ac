package docs

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

type metric struct {
	name, kind, help string
	labels           []string
	where            map[string]bool
}

var metricKinds = map[string]string{
	"NewCounter": "counter", "NewCounterVec": "counter",
	"NewGauge": "gauge", "NewGaugeVec": "gauge",
	"NewHistogram": "histogram", "NewHistogramVec": "histogram",
	"NewSummary": "summary", "NewSummaryVec": "summary",
	"NewDesc": "gauge",
}

// scanMetrics finds every metric the code defines with a literal name.
func scanMetrics(t *testing.T) map[string]*metric {
	t.Helper()
	out := map[string]*metric{}
	fset := token.NewFileSet()
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testkit") {
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
			kind, ok := metricKinds[sel.Sel.Name]
			if !ok || len(call.Args) == 0 {
				return true
			}
			m := &metric{kind: kind, where: map[string]bool{pkg: true}}
			labelArg := 1
			if sel.Sel.Name == "NewDesc" {
				if len(call.Args) < 3 {
					return true
				}
				m.name, _ = stringLit(call.Args[0])
				m.help, _ = stringLit(call.Args[1])
				labelArg = 2
			} else {
				lit, ok := call.Args[0].(*ast.CompositeLit)
				if !ok {
					return true
				}
				for _, el := range lit.Elts {
					kv, ok := el.(*ast.KeyValueExpr)
					if !ok {
						continue
					}
					switch fmt.Sprint(kv.Key) {
					case "Name":
						m.name, _ = stringLit(kv.Value)
					case "Help":
						m.help, _ = stringLit(kv.Value)
					}
				}
			}
			if !strings.HasPrefix(m.name, "gdpr_") {
				return true
			}
			if len(call.Args) > labelArg {
				if lit, ok := call.Args[labelArg].(*ast.CompositeLit); ok {
					for _, el := range lit.Elts {
						if s, ok := stringLit(el); ok {
							m.labels = append(m.labels, s)
						}
					}
				}
			}
			if prev, ok := out[m.name]; ok {
				prev.where[pkg] = true
				return true
			}
			out[m.name] = m
			return true
		})
		return nil
	})
	require.NoError(t, err)
	return out
}

func renderMetrics(ms map[string]*metric) string {
	names := make([]string, 0, len(ms))
	for n := range ms {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("| metric | type | labels | defined in | meaning |\n|---|---|---|---|---|\n")
	for _, n := range names {
		m := ms[n]
		labels := make([]string, 0, len(m.labels))
		for _, l := range m.labels {
			labels = append(labels, "`"+l+"`")
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s |\n", n, m.kind, strings.Join(labels, " "), strings.Join(keys(m.where), ", "), strings.ReplaceAll(m.help, "|", `\|`))
	}
	return b.String()
}

// TestMetricsDocumented requires every gdpr_* metric to be listed in
// operations.md, and no label to be named after personal data.
func TestMetricsDocumented(t *testing.T) {
	// Not parallel: with -update both tests rewrite operations.md.
	ms := scanMetrics(t)
	require.NotEmpty(t, ms)
	for _, m := range ms {
		for _, l := range m.labels {
			for _, pii := range []string{"email", "subject", "name", "user"} {
				require.NotContains(t, strings.ToLower(l), pii, "metric %s has label %q: labels never carry personal data", m.name, l)
			}
		}
	}
	raw, err := os.ReadFile("operations.md")
	require.NoError(t, err)
	doc := string(raw)
	begin, end := strings.Index(doc, metricsBeginMarker), strings.Index(doc, metricsEndMarker)
	require.True(t, begin >= 0 && end > begin, "operations.md lacks the metrics markers")
	if *update {
		doc = doc[:begin+len(metricsBeginMarker)] + "\n" + renderMetrics(ms) + doc[end:]
		require.NoError(t, os.WriteFile("operations.md", []byte(doc), 0o644))
		return
	}
	for n, m := range ms {
		if !strings.Contains(doc[begin:end], "`"+n+"`") {
			t.Errorf("metric %s (%s) is not listed in docs/operations.md; run `go test ./docs -update`", n, strings.Join(keys(m.where), ","))
		}
	}
}
