// Package prometheus holds the alerting rules; its tests validate them with
// promtool and check that every alert is unit-tested and every metric it
// reads is one the code exports.
package prometheus

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

// promtool returns the path of promtool, installing it from Debian's
// prometheus package (binary only, no server) when missing and running as
// root; otherwise the test is skipped with the reason.
func promtool(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("promtool"); err == nil {
		return p
	}
	gobin := goBin(t)
	if p := filepath.Join(gobin, "promtool"); fileExists(p) {
		return p
	}
	if os.Geteuid() != 0 {
		t.Skip("promtool is not installed and installing it needs root: run `make tools` (or apt-get install prometheus) and rerun")
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		t.Skip("promtool is not installed and apt-get is not available: install promtool (https://prometheus.io/download/) on PATH")
	}
	tmp := t.TempDir()
	download := func() error {
		cmd := exec.Command("apt-get", "download", "-qq", "prometheus")
		cmd.Dir = tmp
		return cmd.Run()
	}
	if download() != nil {
		out, err := exec.Command("apt-get", "update", "-qq").CombinedOutput()
		require.NoError(t, err, "apt-get update: %s", out)
		require.NoError(t, download(), "apt-get download prometheus")
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "prometheus_*.deb"))
	require.Len(t, debs, 1)
	out, err := exec.Command("dpkg-deb", "-x", debs[0], filepath.Join(tmp, "x")).CombinedOutput()
	require.NoError(t, err, "dpkg-deb: %s", out)
	require.NoError(t, os.MkdirAll(gobin, 0o755))
	dst := filepath.Join(gobin, "promtool")
	out, err = exec.Command("install", "-m", "0755", filepath.Join(tmp, "x/usr/bin/promtool"), dst).CombinedOutput()
	require.NoError(t, err, "installing promtool: %s", out)
	return dst
}

func goBin(t *testing.T) string {
	out, err := exec.Command("go", "env", "GOPATH").Output()
	require.NoError(t, err)
	return filepath.Join(strings.TrimSpace(string(out)), "bin")
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func TestPromtool(t *testing.T) {
	t.Parallel()
	bin := promtool(t)
	for _, args := range [][]string{
		{"check", "rules", "alerts.yml"},
		{"check", "config", "prometheus.yml"},
		{"test", "rules", "alerts_test.yml"},
	} {
		out, err := exec.Command(bin, args...).CombinedOutput()
		require.NoError(t, err, "promtool %s:\n%s", strings.Join(args, " "), out)
		t.Logf("promtool %s: %s", strings.Join(args, " "), strings.TrimSpace(string(out)))
	}
}

type ruleFile struct {
	Groups []struct {
		Rules []struct {
			Alert string `yaml:"alert"`
			Expr  string `yaml:"expr"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

type testFile struct {
	Tests []struct {
		AlertRuleTest []struct {
			Alertname string           `yaml:"alertname"`
			ExpAlerts []map[string]any `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(b, v))
}

// TestEveryAlertIsUnitTested requires, for each alert, a promtool case where
// it fires and one where it must stay silent.
func TestEveryAlertIsUnitTested(t *testing.T) {
	t.Parallel()
	var rules ruleFile
	var tests testFile
	readYAML(t, "alerts.yml", &rules)
	readYAML(t, "alerts_test.yml", &tests)
	fires, silent := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				silent[a.Alertname] = true
			}
		}
	}
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			n++
			require.True(t, fires[r.Alert], "alert %s has no promtool case where it fires", r.Alert)
			require.True(t, silent[r.Alert], "alert %s has no promtool case where it stays silent", r.Alert)
		}
	}
	require.Greater(t, n, 0)
}

var (
	metricInExpr = regexp.MustCompile(`\bgdpr_[a-z0-9_]+`)
	metricInCode = regexp.MustCompile(`"(gdpr_[a-z0-9_]+)"`)
)

// TestAlertsReadExportedMetrics catches a renamed metric or a typo in a rule:
// every gdpr_* series an alert reads must be registered somewhere in the code.
func TestAlertsReadExportedMetrics(t *testing.T) {
	t.Parallel()
	exported := map[string]bool{}
	err := filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "node_modules") {
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
	var rules ruleFile
	readYAML(t, "alerts.yml", &rules)
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			for _, name := range metricInExpr.FindAllString(r.Expr, -1) {
				base := name
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if trimmed, ok := strings.CutSuffix(name, suffix); ok && exported[trimmed] {
						base = trimmed
					}
				}
				require.True(t, exported[base], "alert %s reads %s, which no code registers", r.Alert, name)
			}
		}
	}
}
