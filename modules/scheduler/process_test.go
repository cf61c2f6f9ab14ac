package scheduler_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/config/configtest"
	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/db"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// appQueues are the queues `gdpr scheduler` declares (app/modules.go), so
// that the test can delete them afterwards.
var appQueues = bus.Topology{Queues: []bus.Queue{
	{Name: "worker.requests"}, {Name: "worker.notify"}, {Name: "canceller"}, {Name: "scheduler"}, {Name: "audit"},
}}

// child is one `gdpr scheduler` process.
type child struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startChild(t testing.TB, bin string, env []string, logPath string) *child {
	t.Helper()
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	require.NoError(t, err)
	cmd := exec.Command(bin, "scheduler")
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logFile, logFile
	require.NoError(t, cmd.Start())
	c := &child{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		_ = logFile.Close()
		close(c.done)
	}()
	t.Cleanup(func() { c.stop() })
	return c
}

func (c *child) kill() {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
}

func (c *child) stop() {
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(20 * time.Second):
		c.kill()
	}
}

// crashRun dispatches n due messages with two `gdpr scheduler` processes,
// SIGKILLs one of them at each of killAt (counts of consumed messages) and
// restarts it, calls restart (if any) after kill number restartAt, and checks that nothing
// was lost and that every duplicate straddles a kill or the restart.
func crashRun(t *testing.T, n int, killAt []int, restartAt int, restart func(testing.TB)) {
	bin := testkit.Build(t)
	cfg := configtest.Config(t)
	conn := testkit.Bus(t, cfg.AMQP, testTopology)
	t.Cleanup(func() { testkit.DeleteTopology(t, cfg.AMQP, appQueues) })
	gdb, err := db.Open(t.Context(), db.Config{DSN: cfg.Postgres.DSN, MaxOpenConns: 2})
	require.NoError(t, err)
	t.Cleanup(func() {
		if sqlDB, err := gdb.DB(); err == nil {
			_ = sqlDB.Close()
		}
	})
	f := &fixture{db: gdb, dsn: cfg.Postgres.DSN, amqp: cfg.AMQP, conn: conn}
	s := f.sink(t)
	ids := copyDue(t, f.dsn, n, time.Time{})

	env := append(configtest.Env(cfg),
		"GDPR_SCHEDULER_ADMIN_ADDR=127.0.0.1:0",
		"GDPR_SCHEDULER_BATCH_SIZE=25",
		"GDPR_SCHEDULER_WORKERS=1",
		"GDPR_LOG_LEVEL=warn",
	)
	logPath := filepath.Join(t.TempDir(), "children.log")
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("children's output:\n%s", b)
		}
	})
	procs := []*child{startChild(t, bin, env, logPath), startChild(t, bin, env, logPath)}

	var events []time.Time // kills and the restart
	for i, at := range killAt {
		testkit.Eventually(t, 2*time.Minute, func() bool { d, _ := s.tally(); return d >= at }, "%d consumed before kill %d", at, i+1)
		victim := i % 2
		// An event's time is taken before it begins: the survivor may
		// re-publish the victim's batch before kill() (or restart) returns,
		// which can take a while on a loaded machine.
		events = append(events, time.Now())
		procs[victim].kill()
		procs[victim] = startChild(t, bin, env, logPath)
		if restartAt == i {
			events = append(events, time.Now())
			restart(t)
		}
	}
	testkit.Eventually(t, 3*time.Minute, func() bool { d, _ := s.tally(); return d >= n }, "all %d consumed", n)
	lastEvent := events[len(events)-1]

	first, last := map[string]time.Time{}, map[string]time.Time{}
	s.mu.Lock()
	for _, r := range s.log {
		if _, ok := first[r.id]; !ok {
			first[r.id] = r.at
		}
		last[r.id] = r.at
	}
	counts := map[string]int{}
	for id, c := range s.counts {
		counts[id] = c
	}
	s.mu.Unlock()

	dups := 0
	for _, id := range ids {
		require.GreaterOrEqual(t, counts[id], 1, "message %s lost", id)
		if counts[id] == 1 {
			continue
		}
		dups += counts[id] - 1
		explained := false
		for _, e := range events {
			// Published by the process that died (arrival up to a moment
			// after the kill), published again after it.
			if !first[id].After(e.Add(2*time.Second)) && !last[id].Before(e) {
				explained = true
			}
		}
		require.True(t, explained, "duplicate %s (first %s, last %s) not explained by a kill or restart", id, first[id].Format(time.StampMicro), last[id].Format(time.StampMicro))
		require.False(t, first[id].After(lastEvent.Add(2*time.Second)), "duplicate %s after the last kill", id)
	}
	require.Len(t, counts, n, "unknown message ids consumed")
	testkit.Eventually(t, 30*time.Second, func() bool { return countRows(t, gdb, "scheduled_messages") == 0 }, "nothing pending")
	require.EqualValues(t, n, countRows(t, gdb, "scheduled_messages_sent"))
	t.Logf("%d messages, %d kills, %d duplicates", n, len(killAt), dups)
}

func TestSIGKILLOfOneOfTwoSchedulersDuringDispatchLosesNothing(t *testing.T) {
	t.Parallel()
	crashRun(t, 5000, []int{400, 1600, 2800}, -1, nil)
}
