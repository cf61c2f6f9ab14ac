package testkit

import (
	"context"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// connectionName finds the client-provided connection name in a
// client_properties listing; the "name" column of rabbitmqctl 3.x is the
// network address, not this.
var connectionName = regexp.MustCompile(`\{"connection_name","([^"]*)"\}`)

// RabbitConnections lists the broker's client connections whose
// client-provided name (bus.Dial's name) contains substr, as pid → name,
// using rabbitmqctl (the test must run as a user allowed to use it).
func RabbitConnections(t testing.TB, substr string) map[string]string {
	t.Helper()
	out := rabbitmqctl(t, "list_connections", "-q", "--no-table-headers", "pid", "client_properties")
	conns := map[string]string{}
	for line := range strings.SplitSeq(out, "\n") {
		pid, props, ok := strings.Cut(strings.TrimSpace(line), "\t")
		if !ok {
			continue
		}
		if m := connectionName.FindStringSubmatch(props); m != nil && strings.Contains(m[1], substr) {
			conns[pid] = m[1]
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
