package outbox_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/config/configtest"
	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/db"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/outbox"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// sinkTopology is the test's queue for the messages it writes to the
// outbox, and the queues the canceller role declares (so they are deleted).
var sinkTopology = bus.Topology{Queues: []bus.Queue{
	{Name: "sink", Bindings: []string{"outbox.test"}},
}}

var roleQueues = bus.Topology{Queues: []bus.Queue{
	{Name: "sink"}, {Name: "worker.requests"}, {Name: "worker.notify"}, {Name: "canceller"}, {Name: "scheduler"}, {Name: "audit"},
}}

type arrival struct {
	id string
	at time.Time
}

// relayChild is one `gdpr canceller` process: the canceller and, with it,
// the outbox relay of the messages it writes.
type relayChild struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startRelay(t *testing.T, bin string, env []string, logPath string) *relayChild {
	t.Helper()
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	require.NoError(t, err)
	cmd := exec.Command(bin, "canceller")
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logFile, logFile
	require.NoError(t, cmd.Start())
	c := &relayChild{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		_ = logFile.Close()
		close(c.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-c.done
		}
	})
	return c
}

// TestSIGKILLOfTheRelayMidPublishLosesNothing writes messages to the outbox
// and lets two canceller processes relay them, SIGKILLing one of them (in
// the middle of a batch: publishes in flight, nothing committed) three
// times: every message arrives, each again only if it straddles a kill and
// always with its one message id (which consumers deduplicate on), and the
// outbox ends empty with every message in its history once.
func TestSIGKILLOfTheRelayMidPublishLosesNothing(t *testing.T) {
	t.Parallel()
	const n = 3000
	bin := testkit.Build(t)
	cfg := configtest.Config(t)
	conn := testkit.Bus(t, cfg.AMQP, sinkTopology)
	t.Cleanup(func() { testkit.DeleteTopology(t, cfg.AMQP, roleQueues) })
	gdb, err := db.Open(t.Context(), db.Config{DSN: cfg.Postgres.DSN, MaxOpenConns: 4})
	require.NoError(t, err)
	t.Cleanup(func() {
		if sqlDB, err := gdb.DB(); err == nil {
			_ = sqlDB.Close()
		}
	})

	var mu sync.Mutex
	var log []arrival
	counts := map[string]int{}
	sink := bus.NewConsumer(conn, bus.ConsumerOptions{Queue: "sink", Concurrency: 4, Prefetch: 500}, func(_ context.Context, m message.Message) error {
		mu.Lock()
		defer mu.Unlock()
		counts[m.ID]++
		log = append(log, arrival{id: m.ID, at: time.Now()})
		return nil
	}, testkit.Logger(t))
	require.NoError(t, sink.Start(t.Context()))
	t.Cleanup(func() { _ = sink.Stop(context.Background()) })
	distinct := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(counts)
	}

	store := outbox.NewStore(gdb)
	ids := make([]string, 0, n)
	require.NoError(t, gdb.Transaction(func(tx *gorm.DB) error {
		for i := range n {
			m, err := message.New("outbox.test", map[string]int{"n": i}, nil)
			if err != nil {
				return err
			}
			ids = append(ids, m.ID)
			if err := store.Enqueue(t.Context(), tx, m); err != nil {
				return err
			}
		}
		return nil
	}))

	env := append(configtest.Env(cfg),
		"GDPR_CANCELLER_ADMIN_ADDR=127.0.0.1:0",
		"GDPR_CANCELLER_NO_PARTICIPANTS=true",
		"GDPR_OUTBOX_BATCH_SIZE=25",
		"GDPR_OUTBOX_WORKERS=1",
		"GDPR_LOG_LEVEL=warn",
	)
	logPath := filepath.Join(t.TempDir(), "children.log")
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("children's output:\n%s", b)
		}
	})
	procs := []*relayChild{startRelay(t, bin, env, logPath), startRelay(t, bin, env, logPath)}
	var kills []time.Time
	for i, at := range []int{n / 6, n / 2, 5 * n / 6} {
		testkit.Eventually(t, 2*time.Minute, func() bool { return distinct() >= at }, "%d consumed before kill %d", at, i+1)
		victim := i % 2
		kills = append(kills, time.Now())
		require.NoError(t, procs[victim].cmd.Process.Signal(syscall.SIGKILL))
		<-procs[victim].done
		procs[victim] = startRelay(t, bin, env, logPath)
	}
	testkit.Eventually(t, 3*time.Minute, func() bool { return distinct() >= n }, "all %d consumed", n)

	mu.Lock()
	first, last := map[string]time.Time{}, map[string]time.Time{}
	for _, a := range log {
		if _, ok := first[a.id]; !ok {
			first[a.id] = a.at
		}
		last[a.id] = a.at
	}
	got := make(map[string]int, len(counts))
	for id, c := range counts {
		got[id] = c
	}
	mu.Unlock()
	dups := 0
	for _, id := range ids {
		require.GreaterOrEqual(t, got[id], 1, "message %s lost", id)
		if got[id] == 1 {
			continue
		}
		dups += got[id] - 1
		explained := false
		for _, k := range kills {
			// Published by the process that died, and again after it.
			if !first[id].After(k.Add(2*time.Second)) && !last[id].Before(k) {
				explained = true
			}
		}
		require.True(t, explained, "duplicate %s not explained by a kill", id)
	}
	require.Len(t, got, n, "only the ids written were published")
	testkit.Eventually(t, 30*time.Second, func() bool {
		var pending int64
		require.NoError(t, gdb.Raw(`SELECT count(*) FROM outbox_messages`).Scan(&pending).Error)
		return pending == 0
	}, "nothing left in the outbox")
	var sent int64
	require.NoError(t, gdb.Raw(`SELECT count(DISTINCT message_id) FROM outbox_messages_sent`).Scan(&sent).Error)
	require.EqualValues(t, n, sent)
	t.Logf("%d messages, %d kills, %d duplicates", n, len(kills), dups)
}
