package erasure_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/erasure"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/participant"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// cpuOf is the user+system CPU time process pid used so far (/proc/<pid>/stat,
// in USER_HZ ticks of 10 ms); false once it is gone.
func cpuOf(pid int) (time.Duration, bool) {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	if len(f) < 13 {
		return 0, false
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond, true
}

// beamPIDs are RabbitMQ's Erlang VMs.
func beamPIDs() []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if comm, err := os.ReadFile("/proc/" + e.Name() + "/comm"); err == nil && strings.TrimSpace(string(comm)) == "beam.smp" {
			pids = append(pids, pid)
		}
	}
	return pids
}

// BenchmarkCPUPerErasure: a burst of 200 erasures with ten SDK participants
// (no-op erase, email delay 0) in a process of their own, canceller, relay
// and dispatcher in this process. It prints the CPU time per erasure summed
// over both processes (and without the participants', which stand for other
// teams' services), the PostgreSQL backends of its database and RabbitMQ,
// by process; the confirmation wait (how long the canceller's handler of
// one erasure.confirmed took, the row lock or the batch included), p50 and
// p99; the commits per erasure; and the broker messages per second next to
// the bare confirmed-publish ceiling measured in the same run.
func BenchmarkCPUPerErasure(b *testing.B) {
	const erasures = 200
	const participants = 10
	var ps []erasure.Participant
	for i := range participants {
		ps = append(ps, erasure.Participant{Name: fmt.Sprintf("svc%02d", i), Kind: "amqp"})
	}
	h := newHarness(b, ps, func(c *erasure.Config) { c.Concurrency = 32 })
	ceiling := publishCeiling(b, h)

	var mu sync.Mutex
	var waits []time.Duration
	left := map[string]bool{}
	done := make(chan struct{})
	finished := bus.Queue{Name: "bench.finished", Bindings: []string{event.TypeErasureFinished}}
	require.NoError(b, h.conn.DeclareQueue(context.Background(), finished))
	b.Cleanup(func() { testkit.DeleteTopology(b, h.cfg.AMQP, bus.Topology{Queues: []bus.Queue{finished}}) })
	fin := bus.NewConsumer(h.conn, bus.ConsumerOptions{Queue: finished.Name, Concurrency: 8}, func(_ context.Context, m message.Message) error {
		mu.Lock()
		defer mu.Unlock()
		if left[m.CorrelationID] {
			delete(left, m.CorrelationID)
			if len(left) == 0 {
				close(done)
			}
		}
		return nil
	}, h.logger)
	require.NoError(b, fin.Start(context.Background()))
	b.Cleanup(func() { _ = fin.Stop(context.Background()) })
	participantsPID := startParticipantProcess(b, h, ps)
	h.startDispatcher()
	c, err := erasure.New(h.db, h.store, h.outbox, h.cfg.Canceller, nil, h.logger)
	require.NoError(b, err)
	timed := func(ctx context.Context, m message.Message) error {
		t0 := time.Now()
		err := c.Handle(ctx, m)
		if m.Type == event.TypeErasureConfirmed {
			mu.Lock()
			waits = append(waits, time.Since(t0))
			mu.Unlock()
		}
		return err
	}
	consumer := bus.NewConsumer(h.conn, bus.ConsumerOptions{Queue: erasure.QueueCanceller, Concurrency: h.cfg.Canceller.Concurrency}, timed, h.logger)
	require.NoError(b, consumer.Start(context.Background()))
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = consumer.Stop(ctx)
	})

	var dbName string
	require.NoError(b, h.db.Raw(`SELECT current_database()`).Scan(&dbName).Error)
	backends := func() []int {
		var pids []int
		require.NoError(b, h.db.Raw(`SELECT pid FROM pg_stat_activity WHERE datname = ? AND backend_type = 'client backend'`, dbName).Scan(&pids).Error)
		return pids
	}
	commits := func() int64 {
		require.NoError(b, h.db.Exec(`SELECT pg_stat_clear_snapshot()`).Error)
		var n int64
		require.NoError(b, h.db.Raw(`SELECT xact_commit FROM pg_stat_database WHERE datname = ?`, dbName).Scan(&n).Error)
		return n
	}
	const participantsGroup = "participants (SDK, own process)"
	groups := map[string][]int{"this process (canceller, relay, dispatcher)": {os.Getpid()}, "rabbitmq": beamPIDs(), participantsGroup: {participantsPID}}
	base := map[int]time.Duration{}
	for _, pids := range groups {
		for _, pid := range pids {
			base[pid], _ = cpuOf(pid)
		}
	}
	for _, pid := range backends() {
		base[pid], _ = cpuOf(pid)
	}
	commits0 := commits()

	subjects := newSubjects(erasures)
	for _, s := range subjects {
		left[s.RequestID] = true
	}
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for _, s := range subjects {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			m, err := message.New(event.TypeErasureRequested, event.ErasureRequested{RequestID: s.RequestID, Subject: s.Subject}, nil)
			if err != nil {
				b.Error(err)
				return
			}
			m.CorrelationID = s.RequestID
			if err := h.pub.Publish(context.Background(), m); err != nil {
				b.Error(err)
			}
		})
	}
	wg.Wait()
	select {
	case <-done:
	case <-time.After(10 * time.Minute):
		b.Fatal("not every erasure finished")
	}
	elapsed := time.Since(start)
	b.StopTimer()

	split := map[string]time.Duration{}
	for g, pids := range groups {
		for _, pid := range pids {
			if cpu, ok := cpuOf(pid); ok {
				split[g] += cpu - base[pid]
			}
		}
	}
	for _, pid := range backends() {
		if cpu, ok := cpuOf(pid); ok {
			split["postgres"] += cpu - base[pid] // a backend born during the burst counts whole
		}
	}
	commitsPer := float64(commits()-commits0) / erasures
	var total time.Duration
	names := make([]string, 0, len(split))
	for g, d := range split {
		total += d
		names = append(names, g)
	}
	slices.SortFunc(names, func(x, y string) int { return int(split[y] - split[x]) })
	parts := make([]string, len(names))
	for i, g := range names {
		parts[i] = fmt.Sprintf("%s %.2f", g, split[g].Seconds()*1000/erasures)
	}
	slices.Sort(waits)
	p := func(q float64) time.Duration { return waits[int(q*float64(len(waits)-1))] }
	perErasure := total.Seconds() * 1000 / erasures
	gdprShare := (total - split[participantsGroup]).Seconds() * 1000 / erasures
	msgs := float64(2+2*participants+2) * erasures / elapsed.Seconds()
	b.ReportMetric(perErasure, "cpu_ms/erasure")
	b.ReportMetric(gdprShare, "cpu_ms/erasure_without_participants")
	b.ReportMetric(float64(p(0.5).Milliseconds()), "confirm_wait_p50_ms")
	b.ReportMetric(float64(p(0.99).Milliseconds()), "confirm_wait_p99_ms")
	b.ReportMetric(commitsPer, "commits/erasure")
	b.ReportMetric(msgs/ceiling, "broker_ratio")
	floor := erasureFloor(b, h, erasures, max(1, int(commitsPer+0.5)))
	b.ReportMetric(perErasure/floor, "x_floor")
	fmt.Printf("achieved %.2f ms per erasure (%.2f without the participants) = %.2fx the floor of the same work on bare amqp091 and pgx (%.2f ms)\n",
		perErasure, gdprShare, perErasure/floor, floor)
	fmt.Printf("%d erasures x %d participants: CPU %.2f ms per erasure, %.2f without the participants' process (target <= 15), by process (ms): %s; confirmation wait p50 %s, p99 %s (%d confirmations); "+
		"%.1f commits per erasure; %.1f erasures/s, %.0f broker messages/s vs bare confirmed-publish ceiling %.0f msg/s (ratio %.2f); load average %s\n",
		erasures, participants, perErasure, gdprShare, strings.Join(parts, ", "), p(0.5), p(0.99), len(waits), commitsPer,
		erasures/elapsed.Seconds(), msgs, ceiling, msgs/ceiling, loadavg())
}

// participantsEnv carries the AMQP settings and participant names to the
// participants' process of BenchmarkCPUPerErasure.
const participantsEnv = "GDPR_BENCH_PARTICIPANTS"

// startParticipantProcess runs ps as SDK participants (no-op erase) in a
// process of their own, this test binary running
// TestBenchParticipantProcess, so that their CPU is counted apart from
// gdpr's: they stand for other teams' services. It returns the pid once
// every participant consumes; the process stops when b ends.
func startParticipantProcess(b *testing.B, h *harness, ps []erasure.Participant) int {
	var names []string
	for _, p := range ps {
		names = append(names, p.Name)
	}
	env, err := json.Marshal(participantsSpec{AMQP: h.cfg.AMQP, Names: names})
	require.NoError(b, err)
	cmd := exec.Command(os.Args[0], "-test.run=^TestBenchParticipantProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), participantsEnv+"="+string(env))
	stdin, err := cmd.StdinPipe()
	require.NoError(b, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(b, err)
	cmd.Stderr = os.Stderr
	require.NoError(b, cmd.Start())
	b.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	})
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if sc.Text() == participantsReady {
			go func() { _, _ = io.Copy(io.Discard, stdout) }()
			return cmd.Process.Pid
		}
	}
	b.Fatal("the participants' process ended before it was ready")
	return 0
}

type participantsSpec struct {
	AMQP  bus.Config
	Names []string
}

const participantsReady = "participants ready"

// TestBenchParticipantProcess is the participants' process of
// BenchmarkCPUPerErasure; run by anything else, it skips.
func TestBenchParticipantProcess(t *testing.T) {
	raw := os.Getenv(participantsEnv)
	if raw == "" {
		t.Skip("runs only as BenchmarkCPUPerErasure's participants' process")
	}
	var spec participantsSpec
	require.NoError(t, json.Unmarshal([]byte(raw), &spec))
	logger := quietLogger(t)
	conn, err := bus.Dial(t.Context(), spec.AMQP, "gdpr-bench-participants", bus.Topology{}, logger)
	require.NoError(t, err)
	defer conn.Close()
	var running []*participant.Participant
	for _, name := range spec.Names {
		p, err := participant.New(conn, name, func(context.Context, event.Subject) (string, error) { return event.OutcomeErased, nil },
			participant.Options{Concurrency: 8, Logger: logger})
		require.NoError(t, err)
		require.NoError(t, p.Start(t.Context()))
		running = append(running, p)
	}
	fmt.Println(participantsReady)
	_, _ = io.Copy(io.Discard, os.Stdin) // until the benchmark closes stdin
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, p := range running {
		_ = p.Stop(ctx)
	}
}

func loadavg() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(raw))
	return strings.Join(f[:min(3, len(f))], " ")
}
