package requests_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/config"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// pgCommitsPerSecond measures single-row INSERT commits per second on the
// local PostgreSQL, from one client and from clients concurrent ones: the
// ceiling the requests manager's transactions compete for.
func pgCommitsPerSecond(b *testing.B, clients int, perClient int) float64 {
	b.Helper()
	dsn := testkit.PostgresDSN(b)
	ctx := b.Context()
	setup, err := pgx.Connect(ctx, dsn)
	require.NoError(b, err)
	_, err = setup.Exec(ctx, `CREATE TABLE commits (id bigserial PRIMARY KEY, v text NOT NULL)`)
	require.NoError(b, err)
	_ = setup.Close(ctx)
	conns := make([]*pgx.Conn, clients)
	for i := range conns {
		conns[i], err = pgx.Connect(ctx, dsn)
		require.NoError(b, err)
		defer conns[i].Close(context.Background())
	}
	var wg sync.WaitGroup
	begin := time.Now()
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < perClient; k++ {
				if _, err := c.Exec(ctx, `INSERT INTO commits (v) VALUES ($1)`, "x"); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return float64(clients*perClient) / time.Since(begin).Seconds()
}

// BenchmarkEndToEndAccess submits access requests over HTTP to `gdpr all`
// (one PostgreSQL and one HTTP source, real SMTP) and measures completed
// requests per second and submission→completed latency, next to the
// PostgreSQL commit ceiling measured in the same run.
func BenchmarkEndToEndAccess(b *testing.B) {
	const n = 400
	for b.Loop() {
		s := newSystem(b, n, func(c *config.Config) {
			c.Log.Level = "warn"
			c.Worker.Concurrency = 16
		})
		s.start("all")
		begin := time.Now()
		ids := s.submitAll(n)
		s.waitStates(ids, "completed", 5*time.Minute)
		elapsed := time.Since(begin)

		var lat []float64
		require.NoError(b, s.db.Raw(`SELECT extract(epoch FROM completed_at - submitted_at) FROM requests`).Scan(&lat).Error)
		sort.Float64s(lat)
		p := func(q float64) float64 { return lat[int(q*float64(len(lat)-1))] * 1000 }
		rate := float64(n) / elapsed.Seconds()
		seq := pgCommitsPerSecond(b, 1, 2000)
		par := pgCommitsPerSecond(b, 16, 300)
		b.ReportMetric(rate, "requests/s")
		b.ReportMetric(p(0.5), "p50_ms")
		b.ReportMetric(p(0.99), "p99_ms")
		b.ReportMetric(seq, "pg_commits/s")
		b.ReportMetric(par, "pg_commits_16clients/s")
		b.ReportMetric(rate/par, "ratio_vs_pg16")
		fmt.Printf("end-to-end access: %d requests in %s = %.1f completed/s, p50 %.0f ms, p99 %.0f ms; "+
			"PostgreSQL single-row commits: %.0f/s (1 client), %.0f/s (16 clients); requests per 16-client commit ceiling: %.4f\n",
			n, elapsed.Round(time.Millisecond), rate, p(0.5), p(0.99), seq, par, rate/par)
	}
}

// BenchmarkWorkerPeakRSS1MRows builds one report of a subject with one
// million rows in a PostgreSQL source and reports the worker process's peak
// RSS (VmHWM) before and after.
func BenchmarkWorkerPeakRSS1MRows(b *testing.B) {
	for b.Loop() {
		s := newSystem(b, 1, func(c *config.Config) {
			c.Log.Level = "warn"
			c.Worker.Concurrency = 1
		})
		ctx := b.Context()
		conn, err := pgx.Connect(ctx, s.src.dsn)
		require.NoError(b, err)
		_, err = conn.Exec(ctx, `INSERT INTO orders (customer_id, item, amount)
			SELECT 'cust-0000', 'bulk-' || g, g FROM generate_series(1, 1000000) g`)
		require.NoError(b, err)
		_ = conn.Close(ctx)
		// The source query's ORDER BY sorts a million rows in PostgreSQL, not in the worker.
		s.start("serve")
		s.start("scheduler")
		w := s.start("worker")
		before := vmHWM(b, w.cmd.Process.Pid)
		begin := time.Now()
		id, err := s.submit(ctx, "access", 0)
		require.NoError(b, err)
		s.waitStates([]string{id}, "completed", 10*time.Minute)
		took := time.Since(begin)
		after := vmHWM(b, w.cmd.Process.Pid)
		var bytes int64
		require.NoError(b, s.db.Raw(`SELECT bytes FROM reports WHERE request_id = ?`, id).Scan(&bytes).Error)
		b.ReportMetric(float64(after)/1024, "peak_rss_MB")
		b.ReportMetric(float64(after-before)/1024, "rss_growth_MB")
		fmt.Printf("1M-row report: %s, %d bytes stored; worker peak RSS %.1f MB (%.1f MB when idle, growth %.1f MB)\n",
			took.Round(time.Millisecond), bytes, float64(after)/1024, float64(before)/1024, float64(after-before)/1024)
	}
}

// vmHWM returns a process's peak resident set size in KiB.
func vmHWM(b *testing.B, pid int) int64 {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	require.NoError(b, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			require.NoError(b, err)
			return kb
		}
	}
	b.Fatalf("no VmHWM for pid %d", pid)
	return 0
}
