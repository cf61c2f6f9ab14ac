package report

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// BenchmarkReportMillionRows builds a report of one PostgreSQL source
// returning 1,000,000 rows and prints rows/s and memory next to the raw
// ceiling: the same query streamed with pgx into io.Discard, in the same run.
func BenchmarkReportMillionRows(b *testing.B) {
	dsn := seedRows(b, millionRows)
	ctx := context.Background()
	query := strings.Replace(bigQuery(), "@subject_id", "$1", 1)

	// Ceiling: the database and the driver alone. Measured before and after
	// the builds, the better of the two kept: a single pass swung by a factor
	// of two between runs on the shared machine.
	ceiling := func() float64 {
		conn, err := pgx.Connect(ctx, dsn)
		require.NoError(b, err)
		defer func() { _ = conn.Close(ctx) }()
		start := time.Now()
		rows, err := conn.Query(ctx, query, bigSubject.ID)
		require.NoError(b, err)
		var n int64
		for rows.Next() {
			for _, v := range rows.RawValues() {
				_, _ = io.Discard.Write(v)
			}
			n++
		}
		require.NoError(b, rows.Err())
		require.Equal(b, int64(millionRows), n)
		return float64(n) / time.Since(start).Seconds()
	}
	ceilBefore := ceiling()

	cfg := bigConfig(dsn, b.TempDir())
	// GDPR_BENCH_COMPRESS_CONCURRENCY compares report.compress_concurrency values.
	if v := os.Getenv("GDPR_BENCH_COMPRESS_CONCURRENCY"); v != "" {
		n, err := strconv.Atoi(v)
		require.NoError(b, err)
		cfg.CompressConcurrency = n
	}
	require.NoError(b, cfg.Validate())
	builder, err := New(cfg, nil, nil)
	require.NoError(b, err)
	defer builder.Close()
	runtime.GC()
	rssBefore := procStatusKB("VmRSS")
	heapBefore := heapObjects()
	sampler := startHeapSampler()
	b.ResetTimer()
	start := time.Now()
	cpuBefore := processCPU()
	var res Result
	for i := 0; i < b.N; i++ {
		res, err = builder.Build(ctx, fmt.Sprintf("bench-%d", i), bigSubject)
		require.NoError(b, err)
	}
	seconds := time.Since(start).Seconds() / float64(b.N)
	cpuSeconds := (processCPU() - cpuBefore).Seconds() / float64(b.N)
	b.StopTimer()
	heapPeak := sampler.finish()
	hwm := procStatusKB("VmHWM")
	ceilRate := max(ceilBefore, ceiling())

	reportRate := float64(millionRows) / seconds
	heapGrowthMB := float64(int64(heapPeak)-int64(heapBefore)) / (1 << 20)
	rssGrowthMB := float64(hwm-rssBefore) / 1024
	b.ReportMetric(reportRate, "rows/s")
	b.ReportMetric(ceilRate, "ceiling_rows/s")
	b.ReportMetric(reportRate/ceilRate, "ratio")
	b.ReportMetric(heapGrowthMB, "peak_heap_growth_MB")
	b.ReportMetric(rssGrowthMB, "peak_rss_growth_MB")
	// CPU of this process per build (not PostgreSQL's): a figure that holds
	// when the machine is shared, unlike the rates.
	b.ReportMetric(cpuSeconds, "cpu_s/build")
	b.Logf("1M-row report: %.0f rows/s vs pgx→io.Discard ceiling %.0f rows/s (ratio %.2f); ZIP %.1f MiB; %.2f s CPU in this process; "+
		"peak live heap +%.1f MiB, peak RSS (VmHWM) +%.1f MiB over %.1f MiB before the build",
		reportRate, ceilRate, reportRate/ceilRate, float64(res.Bytes)/(1<<20), cpuSeconds, heapGrowthMB, rssGrowthMB, float64(rssBefore)/1024)
}

// BenchmarkReportSmallCPU builds small reports (two PostgreSQL sources and
// one HTTP source, a few rows each, like a typical access request) one after
// another and prints the CPU time and the bytes allocated per build, read
// from the process's own counters: figures that hold on a busy machine,
// unlike wall time.
func BenchmarkReportSmallCPU(b *testing.B) {
	const builds = 300
	pg := seedPostgres(b)
	api := thirdPartyAPI(b)
	sources := goldenSources(pg, api.URL, "")[:4]
	// A nil logger: the test logger would make logging the bulk of the cost.
	builder, err := New(reportConfig(b, sources...), nil, nil)
	require.NoError(b, err)
	defer builder.Close()
	ctx := context.Background()
	// One warm-up build opens the sources' connections.
	_, err = builder.Build(ctx, "warm", subject)
	require.NoError(b, err)
	b.ResetTimer()
	for range b.N {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		cpuBefore := processCPU()
		for i := range builds {
			_, err := builder.Build(ctx, fmt.Sprintf("small-%d", i), subject)
			require.NoError(b, err)
		}
		cpu := processCPU() - cpuBefore
		runtime.ReadMemStats(&after)
		cpuMS := cpu.Seconds() * 1000 / builds
		allocKB := float64(after.TotalAlloc-before.TotalAlloc) / 1024 / builds
		b.ReportMetric(cpuMS, "cpu_ms/build")
		b.ReportMetric(allocKB, "alloc_KiB/build")
		b.ReportMetric(float64(after.NumGC-before.NumGC)/builds, "gc/build")
		b.Logf("small report (4 sources): %.2f ms CPU per build (this process: builder, HTTP fake, client side of PostgreSQL), %.0f KiB allocated per build",
			cpuMS, allocKB)
	}
}

// processCPU is the user+system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
