package requests_test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/config"
	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/db"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// clockTick is the unit of utime and stime in /proc/<pid>/stat (USER_HZ,
// 100 on every Linux this runs on).
const clockTick = 10 * time.Millisecond

// procCPU is the user+system CPU time a process has used so far, from
// /proc/<pid>/stat; false once the process is gone.
func procCPU(pid int) (time.Duration, bool) {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// The command name (field 2) may hold spaces; fields count from its ")".
	rest := string(raw[strings.LastIndexByte(string(raw), ')')+2:])
	f := strings.Fields(rest)
	// utime and stime are fields 14 and 15 of the whole line, 12 and 13 after ")".
	if len(f) < 13 {
		return 0, false
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * clockTick, true
}

// pidsNamed lists the processes whose command name (comm) is name.
func pidsNamed(name string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err == nil && strings.TrimSpace(string(comm)) == name {
			pids = append(pids, pid)
		}
	}
	return pids
}

// cpuMeter sums the CPU time processes spend between start and stop, by
// group. Groups of fixed processes are read at both ends; PostgreSQL
// backends of the system's databases come and go with the connection pools,
// so they are looked up every 200 ms: a backend first seen after start is
// counted whole (it was born during the run).
type cpuMeter struct {
	db      *gorm.DB
	dbNames []string

	mu      sync.Mutex
	fixed   map[string][]int
	base    map[int]time.Duration
	last    map[int]time.Duration
	group   map[int]string
	started time.Time
	self    time.Duration
	stop    chan struct{}
	done    chan struct{}
}

func newCPUMeter(db *gorm.DB, dbNames []string, fixed map[string][]int) *cpuMeter {
	return &cpuMeter{db: db, dbNames: dbNames, fixed: fixed}
}

// backend is a PostgreSQL backend of one of the meter's databases.
type backend struct {
	PID     int    `gorm:"column:pid"`
	Datname string `gorm:"column:datname"`
}

func (m *cpuMeter) backends() []backend {
	var bs []backend
	// An error leaves bs empty and the meter without backends: the printed
	// PostgreSQL figure would be missing, not wrong.
	_ = m.db.Raw(`SELECT pid, datname FROM pg_stat_activity WHERE datname IN ? AND backend_type = 'client backend'`, m.dbNames).Scan(&bs).Error
	return bs
}

func (m *cpuMeter) sample(initial bool) {
	bs := m.backends()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, be := range bs {
		pid := be.PID
		cpu, ok := procCPU(pid)
		if !ok {
			continue
		}
		if _, seen := m.group[pid]; !seen {
			// The first database is gdpr's own; the others are the
			// report sources' (the company's data, not gdpr's work).
			m.group[pid] = "postgres"
			if len(m.dbNames) > 0 && be.Datname != m.dbNames[0] {
				m.group[pid] = "postgres source"
			}
			if initial {
				m.base[pid] = cpu
			}
		}
		m.last[pid] = cpu
	}
}

func (m *cpuMeter) start() {
	m.base, m.last, m.group = map[int]time.Duration{}, map[int]time.Duration{}, map[int]string{}
	for g, pids := range m.fixed {
		for _, pid := range pids {
			if cpu, ok := procCPU(pid); ok {
				m.group[pid], m.base[pid], m.last[pid] = g, cpu, cpu
			}
		}
	}
	m.sample(true)
	m.self = selfCPU()
	m.started = time.Now()
	m.stop, m.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(m.done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-m.stop:
				return
			case <-tick.C:
				m.sample(false)
			}
		}
	}()
}

// finish returns the CPU time of each group over the run, and the run's wall time.
func (m *cpuMeter) finish() (map[string]time.Duration, time.Duration) {
	close(m.stop)
	<-m.done
	m.sample(false)
	wall := time.Since(m.started)
	m.mu.Lock()
	defer m.mu.Unlock()
	for pid, g := range m.group {
		if strings.HasPrefix(g, "postgres") {
			continue
		}
		if cpu, ok := procCPU(pid); ok {
			m.last[pid] = cpu
		}
	}
	out := map[string]time.Duration{"driver+source": selfCPU() - m.self}
	for pid, g := range m.group {
		out[g] += m.last[pid] - m.base[pid]
	}
	return out, wall
}

// selfCPU is this process's CPU time: the benchmark's HTTP clients and the
// fake HTTP source.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// xactCommits is the number of committed transactions of the databases so far.
func xactCommits(t testing.TB, db *gorm.DB, names []string) int64 {
	t.Helper()
	// Statistics reach pg_stat_database when a backend goes idle, at most
	// once a second; a fresh snapshot is asked for.
	require.NoError(t, db.Exec(`SELECT pg_stat_clear_snapshot()`).Error)
	var n int64
	require.NoError(t, db.Raw(`SELECT coalesce(sum(xact_commit), 0) FROM pg_stat_database WHERE datname IN ?`, names).Scan(&n).Error)
	return n
}

func dbName(t testing.TB, db *gorm.DB) string {
	t.Helper()
	var name string
	require.NoError(t, db.Raw(`SELECT current_database()`).Scan(&name).Error)
	return name
}

func formatSplit(split map[string]time.Duration, n int) string {
	groups := make([]string, 0, len(split))
	for g := range split {
		groups = append(groups, g)
	}
	sort.Slice(groups, func(i, j int) bool { return split[groups[i]] > split[groups[j]] })
	parts := make([]string, len(groups))
	for i, g := range groups {
		parts[i] = fmt.Sprintf("%s %.2f", g, split[g].Seconds()*1000/float64(n))
	}
	return strings.Join(parts, ", ")
}

// envProfileDir names a directory: when set, BenchmarkCPUPerAccessRequest
// takes a CPU profile of this build's worker (telemetry.pprof) over the
// first three seconds of each burst and writes it there.
const envProfileDir = "GDPR_BENCH_PROFILE_DIR"

// profile writes a CPU profile of role over d to file, then closes done.
func (s *system) profile(b *testing.B, role, file string, d time.Duration, done chan<- struct{}) {
	defer close(done)
	url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", s.admin[role], int(d.Seconds()))
	resp, err := http.Get(url)
	if err != nil {
		b.Logf("profiling %s: %v", role, err)
		return
	}
	defer resp.Body.Close()
	out, err := os.Create(file)
	if err != nil {
		b.Logf("profiling %s: %v", role, err)
		return
	}
	defer out.Close()
	if _, err := io.Copy(out, resp.Body); err != nil {
		b.Logf("profiling %s: %v", role, err)
		return
	}
	fmt.Printf("  CPU profile of the %s over %s: %s\n", role, d, file)
}

// envBaseline names a gdpr binary of an earlier commit; when set,
// BenchmarkCPUPerAccessRequest runs its burst with it too, alternating with
// this build (baseline, this, baseline, this), and prints the ratios.
const envBaseline = "GDPR_BENCH_BASELINE_BINARY"

// burstCost is what one burst of access requests cost.
type burstCost struct {
	perReq, gdpr, commits, messages, rate float64
}

// BenchmarkCPUPerAccessRequest submits a burst of access requests to the
// roles as separate processes (serve, worker, scheduler; one PostgreSQL and
// one HTTP source, Mailpit as the SMTP server) and prints the CPU time per
// request summed over every process involved, split by process, with the
// PostgreSQL commits and broker messages per request, next to what the
// machine's cores, the commit ceiling and the confirmed-publish ceiling of
// the same run would allow. RabbitMQ and Redis are shared with whatever
// else runs on the machine: their share is exact only on a quiet machine.
func BenchmarkCPUPerAccessRequest(b *testing.B) {
	baseline := os.Getenv(envBaseline)
	for b.Loop() {
		if baseline == "" {
			c := costOfBurst(b, "")
			b.ReportMetric(c.perReq, "cpu_ms/request")
			b.ReportMetric(c.gdpr, "gdpr_cpu_ms/request")
			b.ReportMetric(c.commits, "commits/request")
			b.ReportMetric(c.messages, "messages/request")
			b.ReportMetric(c.rate, "requests/s")
			continue
		}
		var base, this []burstCost
		for i, bin := range []string{baseline, "", baseline, ""} {
			var c burstCost
			// A sub-benchmark per burst, so each system's processes and
			// connections are gone before the next starts.
			name := fmt.Sprintf("%d-this", i)
			if bin != "" {
				name = fmt.Sprintf("%d-baseline", i)
			}
			b.Run(name, func(b *testing.B) {
				for b.Loop() {
					c = costOfBurst(b, bin)
				}
			})
			if bin == "" {
				this = append(this, c)
			} else {
				base = append(base, c)
			}
		}
		mean := func(cs []burstCost, f func(burstCost) float64) float64 {
			return (f(cs[0]) + f(cs[1])) / 2
		}
		cpuRatio := mean(this, func(c burstCost) float64 { return c.perReq }) / mean(base, func(c burstCost) float64 { return c.perReq })
		rateRatio := mean(this, func(c burstCost) float64 { return c.rate }) / mean(base, func(c burstCost) float64 { return c.rate })
		b.ReportMetric(cpuRatio, "cpu_vs_baseline")
		b.ReportMetric(rateRatio, "burst_rate_vs_baseline")
		fmt.Printf("this build vs %s (alternating, 2 bursts each): CPU per request x%.2f, burst throughput x%.2f\n", baseline, cpuRatio, rateRatio)
	}
}

// costOfBurst runs one burst against the binary bin (this build when empty)
// and prints its figures.
func costOfBurst(b *testing.B, bin string) burstCost {
	const n = 300
	profileDir := os.Getenv(envProfileDir)
	s := newSystem(b, n, func(c *config.Config) {
		c.Log.Level = "warn"
		c.Worker.Concurrency = 16
		c.Telemetry.Health.Pprof = profileDir != ""
	})
	label := "this build"
	if bin != "" {
		s.bin, label = bin, bin
		s.configFor(bin)
		// Builds before the field refuse subject.phone; the reports of
		// both sides then differ by the phone-keyed rows only.
		s.noPhone = true
	}
	procs, names := s.startMetered(b)
	// Warm up: connections, prepared statements, queues.
	warm := s.submitAll(5)
	s.waitStates(warm, "completed", 2*time.Minute)
	s.waitEmails(5)

	commitsBefore := xactCommits(b, s.db, names)
	meter := newCPUMeter(s.db, names, procs)
	profiled := make(chan struct{})
	if profileDir != "" && bin == "" {
		go s.profile(b, "worker", filepath.Join(profileDir, fmt.Sprintf("worker-%s.pprof", testkit.ID())), 3*time.Second, profiled)
	} else {
		close(profiled)
	}
	meter.start()
	ids := s.submitAll(n)
	s.waitStates(ids, "completed", 10*time.Minute)
	s.waitEmails(n + 5)
	split, wall := meter.finish()
	<-profiled
	// Let the last statistics reach pg_stat_database.
	time.Sleep(1500 * time.Millisecond) //nolint:forbidigo // PostgreSQL flushes statistics at most once a second; nothing to wait on
	commits := float64(xactCommits(b, s.db, names)-commitsBefore) / n
	var messages int64
	require.NoError(b, s.db.Raw(`SELECT count(*) FROM audit_events WHERE request_id IN ?`, ids).Scan(&messages).Error)

	var total, gdpr time.Duration
	for g, d := range split {
		total += d
		if strings.HasPrefix(g, "gdpr ") {
			gdpr += d
		}
	}
	c := burstCost{
		perReq: total.Seconds() * 1000 / n, gdpr: gdpr.Seconds() * 1000 / n,
		commits: commits, messages: float64(messages) / n, rate: float64(n) / wall.Seconds(),
	}
	commitCeiling := pgCommitsPerSecond(b, 16, 300)
	publishCeiling := confirmedPublishesPerSecond(b)
	cpuAllows := float64(runtime.NumCPU()) / (c.perReq / 1000)
	fmt.Printf("CPU per access request, %s (burst of %d, %.1f requests/s): %.2f ms in total, gdpr %.2f ms; by process (ms): %s\n",
		label, n, c.rate, c.perReq, c.gdpr, formatSplit(split, n))
	fmt.Printf("  %.2f commits and %.2f broker messages per request; the CPU (%d cores) allows %.0f requests/s, "+
		"the commit ceiling (%.0f/s, 16 clients) %.0f/s, the confirmed-publish ceiling (%.0f/s) %.0f/s; "+
		"achieved/CPU-bound %.2f\n",
		c.commits, c.messages, runtime.NumCPU(), cpuAllows, commitCeiling, commitCeiling/c.commits,
		publishCeiling, publishCeiling/c.messages, c.rate/cpuAllows)
	return c
}

// startMetered starts serve, worker and scheduler as processes and returns
// the processes a CPU meter reads (the roles, RabbitMQ, Redis, Mailpit) and
// the databases whose backends it reads (gdpr's first, then the source's).
func (s *system) startMetered(b *testing.B) (map[string][]int, []string) {
	b.Helper()
	procs := map[string][]int{}
	for _, role := range []string{"serve", "worker", "scheduler"} {
		procs["gdpr "+role] = []int{s.start(role).cmd.Process.Pid}
	}
	procs["rabbitmq"] = pidsNamed("beam.smp")
	procs["redis"] = pidsNamed("redis-server")
	procs["mailpit"] = []int{s.mail.PID}
	srcDB := openDSN(b, s.src.dsn)
	return procs, []string{dbName(b, s.db), dbName(b, srcDB)}
}

func openDSN(t testing.TB, dsn string) *gorm.DB {
	t.Helper()
	gdb, err := db.Open(t.Context(), db.Config{DSN: dsn, MaxOpenConns: 1})
	require.NoError(t, err)
	t.Cleanup(func() {
		if sqlDB, err := gdb.DB(); err == nil {
			_ = sqlDB.Close()
		}
	})
	return gdb
}

// confirmedPublishesPerSecond is the broker's ceiling for the roles'
// messages: 64 publishers of 512 B persistent messages, each awaiting its
// confirm, through modules/bus (which matches bare amqp091, see
// BenchmarkPublishConfirmed), into one queue of this run's own prefix.
func confirmedPublishesPerSecond(b *testing.B) float64 {
	b.Helper()
	const publishers, total = 64, 6400
	cfg := testkit.AMQP(b)
	topo := bus.Topology{Queues: []bus.Queue{{Name: "ceiling", Bindings: []string{"bench.ceiling"}}}}
	conn := testkit.Bus(b, cfg, topo)
	pub := bus.NewPublisher(conn)
	defer pub.Close()
	template, err := message.New("bench.ceiling", map[string]string{"pad": strings.Repeat("x", 500)}, nil)
	require.NoError(b, err)
	template.CorrelationID = "bench"
	var left, failed atomic.Int64
	left.Store(total)
	var wg sync.WaitGroup
	begin := time.Now()
	for range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for left.Add(-1) >= 0 {
				m := template
				m.ID = testkit.ID()
				if err := pub.Publish(b.Context(), m); err != nil {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	require.Zero(b, failed.Load())
	return total / time.Since(begin).Seconds()
}

// BenchmarkSteadyLoad submits access requests at a steady 50 and then 100
// per second for 30 s to the roles as processes, and prints p50/p99 of
// submit→completed and submit→email (the notification's sent_at), with the
// CPU time per request over every process of the run.
func BenchmarkSteadyLoad(b *testing.B) {
	rates := []int{50, 100}
	if env := os.Getenv(envSteadyRates); env != "" {
		rates = nil
		for f := range strings.SplitSeq(env, ",") {
			r, err := strconv.Atoi(strings.TrimSpace(f))
			require.NoError(b, err, envSteadyRates)
			rates = append(rates, r)
		}
	}
	for _, rate := range rates {
		b.Run(fmt.Sprintf("%drps", rate), func(b *testing.B) {
			for b.Loop() {
				steadyLoad(b, rate, 30*time.Second, nil)
			}
		})
	}
}

// BenchmarkSteadyLoadSMTPSessions runs the 50/s steady load four times,
// alternating one email per SMTP session (notify.session_messages 1: a
// connection, greeting and QUIT per email, as before sessions were reused)
// with the default reuse, and prints the ratios of their means.
func BenchmarkSteadyLoadSMTPSessions(b *testing.B) {
	for b.Loop() {
		var one, reused []steadyFigures
		for i := range 4 {
			perSession := 0 // the default
			if i%2 == 0 {
				perSession = 1
			}
			b.Run(fmt.Sprintf("%d-session_messages=%d", i, perSession), func(b *testing.B) {
				for b.Loop() {
					f := steadyLoad(b, 50, 30*time.Second, func(c *config.Config) {
						if perSession > 0 {
							c.Notify.SessionMessages = perSession
						}
					})
					if perSession == 1 {
						one = append(one, f)
					} else {
						reused = append(reused, f)
					}
				}
			})
		}
		if len(one) < 2 || len(reused) < 2 {
			// A -bench pattern ran only some of the four.
			continue
		}
		mean := func(fs []steadyFigures, f func(steadyFigures) float64) float64 {
			return (f(fs[0]) + f(fs[1])) / 2
		}
		p99 := mean(reused, func(f steadyFigures) float64 { return f.emailP99 }) / mean(one, func(f steadyFigures) float64 { return f.emailP99 })
		p50 := mean(reused, func(f steadyFigures) float64 { return f.emailP50 }) / mean(one, func(f steadyFigures) float64 { return f.emailP50 })
		cpu := mean(reused, func(f steadyFigures) float64 { return f.cpu }) / mean(one, func(f steadyFigures) float64 { return f.cpu })
		mail := mean(reused, func(f steadyFigures) float64 { return f.mailpit }) / mean(one, func(f steadyFigures) float64 { return f.mailpit })
		b.ReportMetric(p99, "email_p99_vs_one_per_session")
		b.ReportMetric(cpu, "cpu_vs_one_per_session")
		fmt.Printf("reused SMTP sessions vs one per email (50/s, alternating, 2 runs each): submit→email p50 x%.2f, p99 x%.2f; CPU per request x%.2f (Mailpit's x%.2f); load average %s\n",
			p50, p99, cpu, mail, loadAverage())
	}
}

// envNotifyConcurrency, when set, is the steady runs' notify.concurrency
// and notify.sessions (to compare settings run against run).
const envNotifyConcurrency = "GDPR_BENCH_NOTIFY_CONCURRENCY"

// envNotifySessions, when set, overrides notify.sessions after
// envNotifyConcurrency (more handlers than SMTP sessions).
const envNotifySessions = "GDPR_BENCH_NOTIFY_SESSIONS"

// envPGConns, when set, is the steady runs' postgres.max_open_conns (one
// pool per process, which the worker's notifier shares with the requests
// manager's workers).
const envPGConns = "GDPR_BENCH_PG_CONNS"

// envOutboxWorkers, when set, is the steady runs' outbox.workers (the
// relay loops of every role).
const envOutboxWorkers = "GDPR_BENCH_OUTBOX_WORKERS"

// envReconcileInterval, when set, is the steady runs'
// telemetry.reconcile_interval (0 turns the periodic in-sync check off).
const envReconcileInterval = "GDPR_BENCH_RECONCILE_INTERVAL"

// envSteadyRates, when set, lists BenchmarkSteadyLoad's rates (requests/s,
// comma-separated) instead of 50 and 100.
const envSteadyRates = "GDPR_BENCH_STEADY_RATES"

// steadyFigures is what one steady run measured (ms).
type steadyFigures struct {
	emailP50, emailP99, cpu, mailpit float64
}

// loadAverage is /proc/loadavg's first three fields.
func loadAverage() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(raw))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func steadyLoad(b *testing.B, rate int, d time.Duration, mutate func(*config.Config)) steadyFigures {
	n := rate * int(d/time.Second)
	s := newSystem(b, n, func(c *config.Config) {
		c.Log.Level = "warn"
		c.Worker.Concurrency = 16
		if v, err := strconv.Atoi(os.Getenv(envNotifyConcurrency)); err == nil && v > 0 {
			c.Notify.Concurrency, c.Notify.Sessions = v, v
		}
		if v, err := strconv.Atoi(os.Getenv(envNotifySessions)); err == nil && v > 0 {
			c.Notify.Sessions = v
		}
		if v, err := strconv.Atoi(os.Getenv(envPGConns)); err == nil && v > 0 {
			c.Postgres.MaxOpenConns = v
		}
		if v, err := strconv.Atoi(os.Getenv(envOutboxWorkers)); err == nil && v > 0 {
			c.Outbox.Workers = v
		}
		if v, err := time.ParseDuration(os.Getenv(envReconcileInterval)); err == nil {
			c.Telemetry.Reconcile.Interval = v
		}
		if mutate != nil {
			mutate(c)
		}
	})
	procs, names := s.startMetered(b)
	meter := newCPUMeter(s.db, names, procs)
	meter.start()
	stallBefore := cpuStall()

	ids := make([]string, n)
	var wg sync.WaitGroup
	var failed atomic.Int64
	tick := time.NewTicker(time.Second / time.Duration(rate))
	for i := range n {
		<-tick.C
		wg.Add(1)
		go func() {
			defer wg.Done()
			id, err := s.submit(b.Context(), "access", i)
			if err != nil {
				failed.Add(1)
				return
			}
			ids[i] = id
		}()
	}
	tick.Stop()
	wg.Wait()
	require.Zero(b, failed.Load(), "submissions failed")
	s.waitStates(ids, "completed", 10*time.Minute)
	s.waitEmails(n)
	split, wall := meter.finish()
	stall := cpuStall() - stallBefore

	var lat []struct {
		Completed float64
		Email     float64
	}
	require.NoError(b, s.db.Raw(`SELECT extract(epoch FROM r.completed_at - r.submitted_at) AS completed,
			extract(epoch FROM n.sent_at - r.submitted_at) AS email
		FROM requests r JOIN notifications n ON n.request_id = r.id AND n.state = 'sent'
		WHERE r.id IN ?`, ids).Scan(&lat).Error)
	require.Len(b, lat, n)
	completed, email := make([]float64, n), make([]float64, n)
	for i, l := range lat {
		completed[i], email[i] = l.Completed*1000, l.Email*1000
	}
	sort.Float64s(completed)
	sort.Float64s(email)
	p := func(v []float64, q float64) float64 { return v[int(q*float64(len(v)-1))] }
	var total time.Duration
	for _, c := range split {
		total += c
	}
	perReq := total.Seconds() * 1000 / float64(n)
	b.ReportMetric(p(completed, 0.5), "completed_p50_ms")
	b.ReportMetric(p(completed, 0.99), "completed_p99_ms")
	b.ReportMetric(p(email, 0.5), "email_p50_ms")
	b.ReportMetric(p(email, 0.99), "email_p99_ms")
	b.ReportMetric(perReq, "cpu_ms/request")
	fmt.Printf("steady %d access requests/s for %s: submit→completed p50 %.0f ms, p99 %.0f ms; submit→email p50 %.0f ms, p99 %.0f ms (target p99 < 500 ms at 50/s); "+
		"CPU %.2f ms per request, by process (ms): %s; load average %s\n",
		rate, d, p(completed, 0.5), p(completed, 0.99), p(email, 0.5), p(email, 0.99), perReq, formatSplit(split, n), loadAverage())
	fmt.Printf("  CPU pressure (/proc/pressure/cpu some): runnable tasks waited for a core %.0f%% of the run's wall time\n",
		100*stall.Seconds()/wall.Seconds())
	printStages(b, s, ids)
	return steadyFigures{emailP50: p(email, 0.5), emailP99: p(email, 0.99), cpu: perReq, mailpit: split["mailpit"].Seconds() * 1000 / float64(n)}
}

// cpuStall is the system's cumulative "some" CPU pressure stall time: how
// long at least one runnable task waited for a core (/proc/pressure/cpu);
// 0 where PSI is not available.
func cpuStall() time.Duration {
	raw, err := os.ReadFile("/proc/pressure/cpu")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, "total="); ok {
			us, _ := strconv.ParseInt(v, 10, 64)
			return time.Duration(us) * time.Microsecond
		}
	}
	return 0
}

// emailStages are the stages of submit→email, in order, as the database
// recorded them: the request's submitted_at (the intake's clock) and
// received_at (its row's insert), the first attempt's start (the claim),
// completed_at, the report.ready outbox row's write and confirmed publish
// (outbox_messages_sent), the notifier's 'sending' row (its handler's
// first write) and the notification's sent_at (the commit after the SMTP
// server accepted the message).
var emailStages = []string{"submit→received", "received→claimed", "claimed→completed", "completed→ready written",
	"written→published", "published→notifier handled", "handled→SMTP accepted+recorded"}

// printStages prints p50/p99 of each stage of submit→email, and the mean of
// each over the slowest 1% of emails: which stage owns the tail.
func printStages(b *testing.B, s *system, ids []string) {
	b.Helper()
	var rows []struct {
		S0, S1, S2, S3, S4, S5, S6, Total float64
		// Audit is when the audit consumer stored the same report.ready
		// (its own queue) after its confirmed publish: a broker-side stall
		// shows there too, a notifier-side one does not.
		Audit *float64
	}
	require.NoError(b, s.db.Raw(`SELECT
			extract(epoch FROM r.received_at - r.submitted_at) * 1000 AS s0,
			extract(epoch FROM a.started_at - r.received_at) * 1000 AS s1,
			extract(epoch FROM r.completed_at - a.started_at) * 1000 AS s2,
			extract(epoch FROM o.deliver_at - r.completed_at) * 1000 AS s3,
			extract(epoch FROM o.sent_at - o.deliver_at) * 1000 AS s4,
			extract(epoch FROM n.created_at - o.sent_at) * 1000 AS s5,
			extract(epoch FROM n.sent_at - n.created_at) * 1000 AS s6,
			extract(epoch FROM n.sent_at - r.submitted_at) * 1000 AS total,
			(SELECT extract(epoch FROM min(e.received_at) - o.sent_at) * 1000 FROM audit_events e
				WHERE e.request_id = r.id::text AND e.type = 'report.ready') AS audit
		FROM requests r
		JOIN notifications n ON n.request_id = r.id AND n.state = 'sent' AND n.template = 'report_ready'
		JOIN LATERAL (SELECT min(started_at) AS started_at FROM request_attempts WHERE request_id = r.id) a ON true
		JOIN LATERAL (SELECT deliver_at, min(sent_at) AS sent_at FROM outbox_messages_sent
			WHERE correlation_id = r.id::text AND type = 'report.ready' GROUP BY deliver_at ORDER BY deliver_at LIMIT 1) o ON true
		WHERE r.id IN ?`, ids).Scan(&rows).Error)
	if len(rows) == 0 {
		fmt.Println("  stages: no rows (outbox history pruned?)")
		return
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Total < rows[j].Total })
	tail := rows[len(rows)-max(1, len(rows)/100):]
	for k, name := range emailStages {
		get := func(i int) float64 {
			r := rows[i]
			return [...]float64{r.S0, r.S1, r.S2, r.S3, r.S4, r.S5, r.S6}[k]
		}
		v := make([]float64, len(rows))
		for i := range rows {
			v[i] = get(i)
		}
		var tailSum float64
		for i := len(rows) - len(tail); i < len(rows); i++ {
			tailSum += get(i)
		}
		sort.Float64s(v)
		fmt.Printf("  stage %-32s p50 %7.1f ms, p99 %7.1f ms, max %7.1f ms; mean in the slowest 1%% of emails %7.1f ms\n",
			name, v[len(v)/2], v[int(0.99*float64(len(v)-1))], v[len(v)-1], tailSum/float64(len(tail)))
	}
	var tailTotal, tailAudit float64
	audited := 0
	for _, r := range tail {
		tailTotal += r.Total
		if r.Audit != nil {
			tailAudit += *r.Audit
			audited++
		}
	}
	if audited > 0 {
		fmt.Printf("  the same report.ready stored by the audit consumer after its publish: mean in the slowest 1%% of emails %.1f ms\n", tailAudit/float64(audited))
	}
	fmt.Printf("  (%d emails with every stage recorded; slowest 1%%: %d emails, mean submit→email %.0f ms)\n", len(rows), len(tail), tailTotal/float64(len(tail)))
}

// unknownField is how an older build's strict config parser names a
// setting it does not have (yaml.v3's KnownFields error).
var unknownField = regexp.MustCompile(`line (\d+): field \S+ not found in type`)

// configFor writes, for the gdpr binary bin of an earlier commit, the
// system's config file without the settings bin does not know (settings
// added since: bin runs with what it had instead), and makes the system use
// it. It asks bin itself (`gdpr config print`), so the file is what that
// build accepts whatever it lacks.
func (s *system) configFor(bin string) {
	s.t.Helper()
	// The schema is bin's own: an empty database that its roles migrate
	// (today's migrations changed tables an older build writes to).
	s.cfg.Postgres.DSN = testkit.PostgresDSN(s.t)
	s.cfg.Postgres.MigrateOnStart = true
	gdb, err := db.Open(s.t.Context(), db.Config{DSN: s.cfg.Postgres.DSN, MaxOpenConns: 4})
	require.NoError(s.t, err)
	s.t.Cleanup(func() {
		if sqlDB, err := gdb.DB(); err == nil {
			_ = sqlDB.Close()
		}
	})
	s.db = gdb
	raw, err := yaml.Marshal(s.cfg)
	require.NoError(s.t, err)
	file := s.file + "." + filepath.Base(bin)
	defaults := defaultsOf(s.t, bin, file)
	raw = withMissing(s.t, raw, defaults)
	for range 5 {
		require.NoError(s.t, os.WriteFile(file, raw, 0o600))
		cmd := exec.Command(bin, "config", "print")
		cmd.Env = append(os.Environ(), "GDPR_CONFIG="+file)
		out, err := cmd.CombinedOutput()
		if err == nil {
			s.file = file
			return
		}
		lines := map[int]bool{}
		for _, m := range unknownField.FindAllStringSubmatch(string(out), -1) {
			n, _ := strconv.Atoi(m[1])
			lines[n] = true
		}
		var doc yaml.Node
		require.NoError(s.t, yaml.Unmarshal(raw, &doc))
		if len(lines) == 0 {
			// A setting both builds have, whose value today's build leaves
			// zero (removed since, kept only to be refused) and bin refuses:
			// bin gets its own default.
			m := refusedSetting.FindStringSubmatch(string(out))
			require.True(s.t, m != nil && setFrom(doc.Content[0], defaults, strings.Split(m[1], ".")),
				"%s refuses the config for another reason:\n%s", bin, out)
		}
		dropKeys(&doc, lines)
		raw, err = yaml.Marshal(&doc)
		require.NoError(s.t, err)
	}
	s.t.Fatalf("%s still refuses the config after removing the settings it does not know", bin)
}

// defaultsOf is bin's default configuration, as bin prints it for a file
// that sets only a DSN.
func defaultsOf(t testing.TB, bin, file string) *yaml.Node {
	t.Helper()
	minimal := file + ".defaults"
	require.NoError(t, os.WriteFile(minimal, []byte("postgres:\n  dsn: postgres://defaults.invalid/x\n"), 0o600))
	cmd := exec.Command(bin, "config", "print")
	cmd.Env = append(os.Environ(), "GDPR_CONFIG="+minimal)
	out, err := cmd.Output()
	require.NoError(t, err, "%s config print with only a DSN", bin)
	var doc yaml.Node
	require.NoError(t, yaml.Unmarshal(out, &doc))
	require.NotEmpty(t, doc.Content, "%s config print printed nothing", bin)
	return doc.Content[0]
}

// withMissing adds to the config raw every setting of defaults that raw
// lacks: bin runs with its own default for a setting today's build does
// not write.
func withMissing(t testing.TB, raw []byte, defaults *yaml.Node) []byte {
	t.Helper()
	var ours yaml.Node
	require.NoError(t, yaml.Unmarshal(raw, &ours))
	addMissing(ours.Content[0], defaults)
	merged, err := yaml.Marshal(&ours)
	require.NoError(t, err)
	return merged
}

// refusedSetting is how a build's Validate names a setting it refuses.
var refusedSetting = regexp.MustCompile(`config: ([a-z_]+(?:\.[a-z_]+)+) must be`)

// setFrom sets the member at path of the mapping dst to its value in src,
// reporting whether both have it.
func setFrom(dst, src *yaml.Node, path []string) bool {
	if dst.Kind != yaml.MappingNode || src.Kind != yaml.MappingNode {
		return false
	}
	var from *yaml.Node
	for i := 0; i+1 < len(src.Content); i += 2 {
		if src.Content[i].Value == path[0] {
			from = src.Content[i+1]
		}
	}
	for i := 0; from != nil && i+1 < len(dst.Content); i += 2 {
		if dst.Content[i].Value != path[0] {
			continue
		}
		if len(path) == 1 {
			dst.Content[i+1] = from
			return true
		}
		return setFrom(dst.Content[i+1], from, path[1:])
	}
	return false
}

// addMissing copies into the mapping dst every member of the mapping src
// whose key dst does not have, recursing into members both have.
func addMissing(dst, src *yaml.Node) {
	if dst.Kind != yaml.MappingNode || src.Kind != yaml.MappingNode {
		return
	}
	have := map[string]*yaml.Node{}
	for i := 0; i+1 < len(dst.Content); i += 2 {
		have[dst.Content[i].Value] = dst.Content[i+1]
	}
	for i := 0; i+1 < len(src.Content); i += 2 {
		if v, ok := have[src.Content[i].Value]; ok {
			addMissing(v, src.Content[i+1])
			continue
		}
		dst.Content = append(dst.Content, src.Content[i], src.Content[i+1])
	}
}

// dropKeys removes from n's mappings every member whose key is on one of lines.
func dropKeys(n *yaml.Node, lines map[int]bool) {
	if n.Kind == yaml.MappingNode {
		kept := n.Content[:0]
		for i := 0; i+1 < len(n.Content); i += 2 {
			if lines[n.Content[i].Line] {
				continue
			}
			kept = append(kept, n.Content[i], n.Content[i+1])
		}
		n.Content = kept
	}
	for _, c := range n.Content {
		dropKeys(c, lines)
	}
}

// BenchmarkIdleCost starts the roles as processes, lets five requests warm
// them up, then submits nothing for 10 s and prints the CPU each process
// spends per second of idleness (tickers, pollers, heartbeats, the
// meter's own sampling query in the PostgreSQL figure), and what that adds
// to each request at a steady 50/s: the part of BenchmarkSteadyLoad's CPU
// per request that is not the requests' own.
func BenchmarkIdleCost(b *testing.B) {
	for b.Loop() {
		s := newSystem(b, 5, func(c *config.Config) {
			c.Log.Level = "warn"
			c.Worker.Concurrency = 16
		})
		procs, names := s.startMetered(b)
		warm := s.submitAll(5)
		s.waitStates(warm, "completed", 2*time.Minute)
		s.waitEmails(5)
		meter := newCPUMeter(s.db, names, procs)
		meter.start()
		// Idleness is what is measured: there is no condition to wait on.
		time.Sleep(10 * time.Second) //nolint:forbidigo // the benchmark measures 10 s of doing nothing
		split, wall := meter.finish()
		var total time.Duration
		perSecond := map[string]time.Duration{}
		for g, d := range split {
			total += d
			perSecond[g] = time.Duration(float64(d) / wall.Seconds())
		}
		msPerSecond := total.Seconds() * 1000 / wall.Seconds()
		fmt.Printf("idle: %.1f ms CPU per second over every process (%.1f%% of one core), by process (ms/s): %s; "+
			"at a steady 50 requests/s that is %.2f ms per request\n",
			msPerSecond, msPerSecond/10, formatSplit(perSecond, 1), msPerSecond/50)
		b.ReportMetric(msPerSecond, "idle_cpu_ms/s")
	}
}
