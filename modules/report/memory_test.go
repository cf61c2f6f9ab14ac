package report

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/source"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

const (
	millionRows = 1_000_000
	// memoryBudget is how much a build may grow the process, whatever the row count.
	memoryBudget = 50 << 20

	envChildDSN  = "GDPR_REPORT_CHILD_DSN"
	envChildDir  = "GDPR_REPORT_CHILD_DIR"
	envChildMode = "GDPR_REPORT_CHILD_MODE"
)

var bigSubject = event.Subject{ID: "u-big", Email: "big@example.com"}

// seedRows creates a database whose events table has n rows for bigSubject.
func seedRows(t testing.TB, n int) string {
	t.Helper()
	dsn := testkit.PostgresDSN(t)
	conn, err := pgx.Connect(context.Background(), dsn)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	_, err = conn.Exec(context.Background(), `
		CREATE TABLE events AS
		SELECT g AS id, 'u-big'::text AS subject_id, md5(g::text) AS payload,
		       'page_view'::text AS kind, timestamptz '2024-01-01' + g * interval '1 second' AS at
		FROM generate_series(1, `+strconv.Itoa(n)+`) g`)
	require.NoError(t, err)
	// Hint bits and statistics set once here, so that neither the first
	// read (the benchmark's ceiling) nor the report pays for them.
	_, err = conn.Exec(context.Background(), `VACUUM ANALYZE events`)
	require.NoError(t, err)
	return dsn
}

func bigQuery() string {
	return "SELECT id, kind, payload, at FROM events WHERE subject_id = @subject_id ORDER BY id"
}

func bigConfig(dsn, dir string) Config {
	cfg := DefaultConfig()
	cfg.StorageDir = filepath.Join(dir, "reports")
	cfg.SpoolDir = dir
	cfg.EncryptionKey = testKey
	cfg.SourceTimeout = 10 * time.Minute
	cfg.Sources = []source.Config{{Name: "events", Kind: "postgres", DSN: dsn, Query: bigQuery()}}
	return cfg
}

// procStatusKB reads a field such as VmHWM or VmRSS of this process, in KiB.
func procStatusKB(field string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return -1
}

// heapSampler records the peak of live heap objects while it runs.
type heapSampler struct {
	stop chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	peak uint64
}

func heapObjects() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func startHeapSampler() *heapSampler {
	h := &heapSampler{stop: make(chan struct{})}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			v := heapObjects()
			h.mu.Lock()
			h.peak = max(h.peak, v)
			h.mu.Unlock()
			select {
			case <-h.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return h
}

func (h *heapSampler) finish() uint64 {
	close(h.stop)
	h.wg.Wait()
	return h.peak
}

// TestReportChildProcess is not a test of its own: the tests below run the
// test binary again with it selected, so memory is measured in a fresh
// process (its VmHWM) and the process can be killed mid-build.
func TestReportChildProcess(t *testing.T) {
	dsn := os.Getenv(envChildDSN)
	if dsn == "" {
		t.Skip("helper process for TestBuildMillionRows")
	}
	cfg := bigConfig(dsn, os.Getenv(envChildDir))
	b, err := New(cfg, nil, nil)
	require.NoError(t, err)
	defer b.Close()
	runtime.GC()
	rssBefore := procStatusKB("VmRSS")
	heapBefore := heapObjects()
	sampler := startHeapSampler()
	started := time.Now()
	fmt.Println("CHILD building")
	res, err := b.Build(context.Background(), "big-report", bigSubject)
	elapsed := time.Since(started)
	heapPeak := sampler.finish()
	require.NoError(t, err)
	fmt.Printf("CHILD rows=%d bytes=%d seconds=%.2f rss_before_kb=%d hwm_kb=%d heap_before=%d heap_peak=%d\n",
		res.Rows()["events"], res.Bytes, elapsed.Seconds(), rssBefore, procStatusKB("VmHWM"), heapBefore, heapPeak)
}

type childResult struct {
	rows, rssBeforeKB, hwmKB int64
	heapBefore, heapPeak     uint64
	seconds                  float64
}

func parseChild(t *testing.T, out string) childResult {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "CHILD rows=") {
			continue
		}
		var r childResult
		var bytes int64
		_, err := fmt.Sscanf(line, "CHILD rows=%d bytes=%d seconds=%f rss_before_kb=%d hwm_kb=%d heap_before=%d heap_peak=%d",
			&r.rows, &bytes, &r.seconds, &r.rssBeforeKB, &r.hwmKB, &r.heapBefore, &r.heapPeak)
		require.NoError(t, err, line)
		return r
	}
	t.Fatalf("child printed no result:\n%s", out)
	return childResult{}
}

func childCommand(ctx context.Context, dsn, dir string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestReportChildProcess$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), envChildDSN+"="+dsn, envChildDir+"="+dir)
	return cmd
}

// TestBuildMillionRows builds a 1,000,000-row report in a child process and
// bounds its memory. Under the race detector (make test), which slows this
// CPU-bound path about ten times, it builds 250,000 rows so the package stays
// within its time budget; run
// `go test -run TestBuildMillionRows ./modules/report` for the full check.
func TestBuildMillionRows(t *testing.T) {
	t.Parallel()
	rows := millionRows
	if raceEnabled {
		rows = 250_000
	}
	dsn := seedRows(t, rows)

	t.Run("bounded memory", func(t *testing.T) {
		dir := t.TempDir()
		out, err := childCommand(t.Context(), dsn, dir).CombinedOutput()
		require.NoError(t, err, "%s", out)
		r := parseChild(t, string(out))
		require.Equal(t, int64(rows), r.rows)
		growth := (r.hwmKB - r.rssBeforeKB) << 10
		heapGrowth := int64(r.heapPeak) - int64(r.heapBefore)
		t.Logf("%d rows in %.1fs: peak RSS growth %.1f MiB (VmHWM %d KiB), peak live heap growth %.1f MiB, race detector %v",
			r.rows, r.seconds, float64(growth)/(1<<20), r.hwmKB, float64(heapGrowth)/(1<<20), raceEnabled)
		require.Less(t, heapGrowth, int64(memoryBudget), "live heap grew with the row count")
		rssBudget := int64(memoryBudget)
		if raceEnabled {
			// The race detector's shadow memory adds to RSS (measured +18 to +25
			// MiB); the bound still fails if rows are held in memory.
			rssBudget *= 2
		}
		require.Less(t, growth, rssBudget, "process RSS grew with the row count")
		entries, err := os.ReadDir(dir)
		require.NoError(t, err)
		for _, e := range entries {
			require.Equal(t, "reports", e.Name(), "spool files are unlinked")
		}
	})

	t.Run("SIGKILL mid-build leaves no report and sweepable temp files", func(t *testing.T) {
		dir := t.TempDir()
		cmd := childCommand(t.Context(), dsn, dir)
		require.NoError(t, cmd.Start())
		reports := filepath.Join(dir, "reports")
		// Kill once the ZIP is being written: the encrypted temp file exists.
		testkit.Eventually(t, 5*time.Minute, func() bool {
			m, _ := filepath.Glob(filepath.Join(reports, ".tmp-*"))
			return len(m) > 0
		}, "the child started writing the report")
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		_ = cmd.Wait()

		_, err := os.Stat(filepath.Join(reports, "big-report.zip.enc"))
		require.ErrorIs(t, err, os.ErrNotExist, "a killed build leaves no visible report")
		b := newBuilder(t, bigConfig(dsn, dir))
		_, _, err = b.Open(t.Context(), "big-report")
		require.ErrorIs(t, err, ErrNotFound)
		n, err := b.Sweep(t.Context(), 0)
		require.NoError(t, err)
		require.Equal(t, 1, n)
		require.Empty(t, storedFiles(t, reports))
		entries, err := os.ReadDir(dir)
		require.NoError(t, err)
		require.Len(t, entries, 1, "only the reports directory: spool files died with the process")
	})
}
