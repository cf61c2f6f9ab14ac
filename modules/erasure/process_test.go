package erasure_test

import (
	"context"
	"math/rand/v2"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/config/configtest"
	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/erasure"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// cancellerEnv is the child canceller's environment: the harness's
// resources and its participants.
func cancellerEnv(h *harness, participants string) []string {
	env := configtest.Env(h.cfg)
	return append(env,
		"GDPR_LOG_LEVEL=warn",
		"GDPR_POSTGRES_MAX_OPEN_CONNS=6",
		"GDPR_CANCELLER_ADMIN_ADDR=127.0.0.1:0",
		"GDPR_CANCELLER_PARTICIPANTS="+participants,
		"GDPR_CANCELLER_CONFIRM_TIMEOUT=30s",
		"GDPR_CANCELLER_RETRY_BACKOFF=100ms",
		"GDPR_CANCELLER_EMAIL_DELAY=0s",
		"GDPR_CANCELLER_CONCURRENCY=16",
	)
}

// child is one `gdpr canceller` process.
type child struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

func startChild(t testing.TB, bin string, env []string, args ...string) *child {
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = t.Output(), t.Output()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, cmd.Start())
	c := &child{cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() { c.kill(t) })
	return c
}

func (c *child) kill(t testing.TB) {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
		t.Errorf("child %d did not exit after SIGKILL", c.cmd.Process.Pid)
	}
}

// TestSIGKILLCancellerDuringFanOut kills the canceller process repeatedly
// while it fans out 50 erasures to three participants: afterwards every
// erasure completes, every participant got every command, no participant
// row is duplicated and no "deleted" email goes out twice.
func TestSIGKILLCancellerDuringFanOut(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := testkit.Build(t)
	names := []string{"alpha", "beta", "gamma"}
	var ps []erasure.Participant
	for _, n := range names {
		ps = append(ps, erasure.Participant{Name: n, Kind: "amqp"})
	}
	h := newHarness(t, ps, nil)
	// The child declares the whole application topology under the test's prefix.
	t.Cleanup(func() {
		testkit.DeleteTopology(t, h.cfg.AMQP, bus.Topology{Queues: []bus.Queue{
			{Name: "worker.requests"}, {Name: "worker.notify"}, {Name: "scheduler"}, {Name: "audit"}, {Name: "canceller"},
		}})
	})
	const n = 50
	subjects := newSubjects(n)
	h.storeRequests(subjects)

	var mu sync.Mutex
	commands := map[string]map[string]int{} // participant -> request -> commands
	for _, name := range names {
		commands[name] = map[string]int{}
		startParticipant(t, h, name, func(_ context.Context, s event.Subject) (string, error) {
			mu.Lock()
			defer mu.Unlock()
			commands[name][s.ID]++
			return event.OutcomeErased, nil
		}, nil)
	}
	mp := testkit.StartMailpit(t)
	h.startDispatcher()
	h.startNotifier(mp)
	for _, s := range subjects {
		h.request(s)
	}

	env := cancellerEnv(h, `[{name: alpha, kind: amqp}, {name: beta, kind: amqp}, {name: gamma, kind: amqp}]`)
	countErasures := func() int {
		var c int
		require.NoError(t, h.db.Raw(`SELECT count(*) FROM erasures`).Scan(&c).Error)
		return c
	}
	kills := 0
	for round := 0; round < 8 && countErasures() < n; round++ {
		before := countErasures()
		c := startChild(t, bin, env, "canceller")
		// Let it make some progress, then kill it at a random moment.
		testkit.Eventually(t, 60*time.Second, func() bool { return countErasures() > before }, "canceller made progress in round %d", round)
		time.Sleep(time.Duration(rand.N(150)) * time.Millisecond) //nolint:forbidigo // the kill moment, not a wait for an effect
		c.kill(t)
		kills++
	}
	require.Positive(t, kills)
	startChild(t, bin, env, "canceller")
	testkit.Eventually(t, 90*time.Second, func() bool { return h.countFinished() == n }, "every erasure finished after %d kills", kills)

	var rows, distinct int
	require.NoError(t, h.db.Raw(`SELECT count(*), count(DISTINCT (request_id, participant)) FROM erasure_participants`).Row().Scan(&rows, &distinct))
	require.Equal(t, n*len(names), rows)
	require.Equal(t, rows, distinct)
	mu.Lock()
	for _, name := range names {
		require.Len(t, commands[name], n, "%s got a command for every subject", name)
	}
	mu.Unlock()
	testkit.Eventually(t, 30*time.Second, func() bool { return len(h.events.distinct(event.TypeErasureCompleted)) == n }, "completed for every request")
	for id, c := range h.events.distinct(event.TypeErasureCompleted) {
		require.Equal(t, 1, c, "erasure.completed for %s", id)
	}
	testkit.Eventually(t, 30*time.Second, func() bool {
		c, err := mp.Count(context.Background())
		return err == nil && c >= n
	}, "a deleted email per subject")
	msgs, err := mp.Messages(context.Background())
	require.NoError(t, err)
	require.Len(t, msgs, n, "no duplicate deleted email")
	t.Logf("canceller killed %d times", kills)
}
