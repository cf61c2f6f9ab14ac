// Package grafana holds the dashboard; its test checks the JSON is a usable
// dashboard that reads only metrics the code exports and shows the seed's
// counts side by side.
package grafana

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

type dashboard struct {
	UID    string `json:"uid"`
	Title  string `json:"title"`
	Panels []struct {
		ID      int    `json:"id"`
		Type    string `json:"type"`
		Title   string `json:"title"`
		GridPos struct {
			H, W, X, Y int
		} `json:"gridPos"`
		Targets []struct {
			RefID string `json:"refId"`
			Expr  string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

var (
	metricInExpr = regexp.MustCompile(`\bgdpr_[a-z0-9_]+`)
	metricInCode = regexp.MustCompile(`"(gdpr_[a-z0-9_]+)"`)
)

func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	exported := map[string]bool{}
	err := filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == ".git" {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range metricInCode.FindAllStringSubmatch(string(b), -1) {
			exported[m[1]] = true
		}
		return nil
	})
	require.NoError(t, err)
	return exported
}

func TestDashboard(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("gdpr.json")
	require.NoError(t, err)
	var d dashboard
	require.NoError(t, json.Unmarshal(b, &d))
	require.NotEmpty(t, d.UID)
	require.NotEmpty(t, d.Title)
	exported := exportedMetrics(t)
	ids := map[int]bool{}
	var firstPanel []string
	for _, p := range d.Panels {
		require.False(t, ids[p.ID], "panel id %d repeats", p.ID)
		ids[p.ID] = true
		require.LessOrEqual(t, p.GridPos.X+p.GridPos.W, 24, "panel %q is wider than the grid", p.Title)
		if p.Type == "row" {
			continue
		}
		require.NotEmpty(t, p.Targets, "panel %q has no query", p.Title)
		for _, tg := range p.Targets {
			for _, name := range metricInExpr.FindAllString(tg.Expr, -1) {
				base := name
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if trimmed, ok := strings.CutSuffix(name, suffix); ok && exported[trimmed] {
						base = trimmed
					}
				}
				require.True(t, exported[base], "panel %q reads %s, which no code registers", p.Title, name)
			}
			if p.ID == d.Panels[1].ID {
				firstPanel = append(firstPanel, tg.Expr)
			}
		}
	}
	// The seed: "How many requests users submitted? How many were received by
	// the requests manager? How many emails were sent or data reports
	// generated?" — side by side in the first panel.
	joined := strings.Join(firstPanel, "\n")
	for _, m := range []string{"gdpr_requests_submitted_total", "gdpr_requests_received_total", "gdpr_reports_generated_total", "gdpr_erasures_completed_total", "gdpr_emails_sent_total"} {
		require.Contains(t, joined, m)
	}
}
