package source_test

import (
	"bufio"
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/source"
)

// junkAPI is a real net/http upstream that answers every request with
// prefix and then unit over and over, up to total bytes or until the
// client goes away; sent counts what it wrote.
func junkAPI(t testing.TB, prefix, unit string, total int64, sent *atomic.Int64) *httptest.Server {
	t.Helper()
	chunk := []byte(strings.Repeat(unit, max(1, 32<<10/len(unit))))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Elastic-Product", "Elasticsearch")
		n, err := w.Write([]byte(prefix))
		sent.Add(int64(n))
		for written := int64(n); err == nil && written < total; written += int64(n) {
			n, err = w.Write(chunk)
			sent.Add(int64(n))
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

type junkCase struct {
	name, kind, prefix, unit, recordsPath string
	// bound is the setting the read must name.
	bound string
}

func junkCases() []junkCase {
	return []junkCase{
		{name: "endless string", kind: "http", prefix: `[{"data":"`, unit: "aaaaaaaa", bound: "report.max_value_bytes"},
		{name: "endless array", kind: "http", prefix: `[`, unit: `{"a":1},`, bound: "report.max_response_bytes"},
		{name: "endless object record", kind: "http", prefix: `{`, unit: `"k":1,`, bound: "report.max_value_bytes"},
		{name: "endless member before records_path", kind: "http", prefix: `{"skip":["`, unit: `aaaa","`, recordsPath: "data", bound: "report.max_value_bytes"},
		{name: "endless key", kind: "http", prefix: `{"`, unit: "kkkkkkkk", bound: "report.max_value_bytes"},
		{name: "endless _source", kind: "elasticsearch", prefix: `{"hits":{"hits":[{"_source":{"v":"`, unit: "aaaaaaaa", bound: "report.max_value_bytes"},
		{name: "endless hits", kind: "elasticsearch", prefix: `{"hits":{"hits":[`, unit: `{"_source":{"a":1}},`, bound: "report.max_response_bytes"},
	}
}

func junkSource(t testing.TB, c junkCase, url string, limits source.Limits) source.Source {
	t.Helper()
	cfg := source.Config{Name: "junk", Kind: c.kind, URL: url + "/users/{subject_id}", RecordsPath: c.recordsPath}
	if c.kind == "elasticsearch" {
		cfg.URL, cfg.Index, cfg.Query = url, "people", `{"query":{"term":{"user_id":"{subject_id}"}}}`
	}
	s, err := source.New(cfg, source.Options{Limits: limits})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// discard is a Sink that keeps nothing.
type discard struct{ rows int }

func (d *discard) Columns([]string) error { return nil }
func (d *discard) Row([]byte) error       { d.rows++; return nil }

// A source that streams junk (one endless JSON value, or endless small
// ones) is cut off at report.max_value_bytes or report.max_response_bytes
// with the class source_too_large, long before it has sent everything.
func TestSourceResponsesAreBounded(t *testing.T) {
	t.Parallel()
	limits := source.Limits{MaxResponseBytes: 4 << 20, MaxValueBytes: 256 << 10}
	const total = 64 << 20
	for _, c := range junkCases() {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var sent atomic.Int64
			srv := junkAPI(t, c.prefix, c.unit, total, &sent)
			s := junkSource(t, c, srv.URL, limits)
			err := s.Read(t.Context(), event.Subject{ID: "u1"}, &discard{})
			require.ErrorIs(t, err, source.ErrTooLarge)
			require.Equal(t, source.ClassTooLarge, source.Class(err))
			require.ErrorContains(t, err, c.bound)
			require.Less(t, sent.Load(), int64(total), "the read stopped before the upstream had sent everything")
		})
	}
}

// Responses within the bounds are read whole.
func TestSourceResponsesWithinTheBoundsAreRead(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		var b bytes.Buffer
		b.WriteString(`[{"data":"` + strings.Repeat("a", 200<<10) + `"}`)
		for b.Len() < 3<<20 {
			b.WriteString(`,{"a":1}`)
		}
		b.WriteString("]")
		_, _ = w.Write(b.Bytes())
	}))
	t.Cleanup(srv.Close)
	s := junkSource(t, junkCase{kind: "http"}, srv.URL, source.Limits{MaxResponseBytes: 4 << 20, MaxValueBytes: 256 << 10})
	var d discard
	require.NoError(t, s.Read(t.Context(), event.Subject{ID: "u1"}, &d))
	require.Greater(t, d.rows, 300_000)
}

// BenchmarkJunkSourceRSS streams 1 GiB of junk from a real net/http
// upstream into an http source with the default bounds and prints the
// growth of the process's peak RSS (VmHWM, reset before each read)
// against the 64 MB the issue allows.
func BenchmarkJunkSourceRSS(b *testing.B) {
	for _, c := range junkCases()[:2] {
		b.Run(strings.ReplaceAll(c.name, " ", "_"), func(b *testing.B) {
			var sent atomic.Int64
			srv := junkAPI(b, c.prefix, c.unit, 1<<30, &sent)
			s := junkSource(b, c, srv.URL, source.Limits{})
			var peak float64
			for b.Loop() {
				runtime.GC()
				debug.FreeOSMemory()
				before := resetPeakRSS(b)
				err := s.Read(b.Context(), event.Subject{ID: "u1"}, &discard{})
				require.ErrorIs(b, err, source.ErrTooLarge)
				peak = max(peak, float64(procStatus(b, "VmHWM")-before)/1e6)
			}
			b.ReportMetric(peak, "peak_rss_growth_MB")
			b.ReportMetric(64, "limit_MB")
			b.ReportMetric(float64(sent.Load())/float64(b.N)/1e6, "upstream_sent_MB")
		})
	}
}

// resetPeakRSS resets VmHWM to the current RSS and returns it in bytes.
func resetPeakRSS(b *testing.B) int64 {
	b.Helper()
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		b.Skipf("cannot reset the peak RSS: %v", err)
	}
	return procStatus(b, "VmHWM")
}

// procStatus reads one kB field of /proc/self/status, in bytes.
func procStatus(b *testing.B, field string) int64 {
	b.Helper()
	f, err := os.Open("/proc/self/status")
	require.NoError(b, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			require.NoError(b, err)
			return kb << 10
		}
	}
	b.Fatalf("no %s in /proc/self/status", field)
	return 0
}
