package testkit

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// RabbitConnections lists the broker's client connections whose name
// contains substr, as pid → name, using rabbitmqctl (the test must run as a
// user allowed to use it).
func RabbitConnections(t testing.TB, substr string) map[string]string {
	t.Helper()
	out := rabbitmqctl(t, "list_connections", "-q", "--no-table-headers", "pid", "name")
	conns := map[string]string{}
	for line := range strings.SplitSeq(out, "\n") {
		pid, name, ok := strings.Cut(strings.TrimSpace(line), "\t")
		if ok && strings.Contains(name, substr) {
			conns[pid] = name
		}
	}
	return conns
}

// CloseRabbitConnections closes, from the broker's side, every client
// connection whose name contains substr, and returns how many it closed.
// Pass something unique to the test (its AMQP prefix) so that no other
// test's or process's connection is touched.
func CloseRabbitConnections(t testing.TB, substr string) int {
	t.Helper()
	require.NotEmpty(t, substr, "closing every connection of the broker is not allowed")
	conns := RabbitConnections(t, substr)
	for pid := range conns {
		// A connection that went away by itself in the meantime is fine.
		_, _ = runRabbitmqctl("close_connection", pid, "closed by test")
	}
	return len(conns)
}

func rabbitmqctl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := runRabbitmqctl(args...)
	require.NoError(t, err, "rabbitmqctl %s: %s", strings.Join(args, " "), out)
	return out
}

func runRabbitmqctl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "rabbitmqctl", args...).CombinedOutput()
	return string(out), err
}

// RestartRabbitMQ stops and starts the broker application (not the Erlang
// node). Only for tests built with the disruptive tag: it affects everyone.
func RestartRabbitMQ(t testing.TB) {
	t.Helper()
	rabbitmqctl(t, "stop_app")
	rabbitmqctl(t, "start_app")
	rabbitmqctl(t, "await_startup")
}
