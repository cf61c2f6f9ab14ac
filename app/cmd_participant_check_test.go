package app

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/participant/conformance"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// checkArgs runs the check quickly: the participants here answer within
// milliseconds.
var checkArgs = []string{"--timeout", "20s", "--settle", "700ms"}

// runCheck runs `gdpr participant check name` on cfg's prefix.
func runCheck(t *testing.T, cfg bus.Config, name string) (int, string) {
	t.Helper()
	t.Cleanup(func() {
		testkit.DeleteTopology(t, cfg, bus.Topology{Queues: []bus.Queue{{Name: "participant." + name}}})
	})
	var out bytes.Buffer
	args := append([]string{"participant", "check", name}, checkArgs...)
	code := ExecuteArgs(t.Context(), args, &out, &out, []string{"GDPR_AMQP_URL=" + cfg.URL, "GDPR_AMQP_PREFIX=" + cfg.Prefix})
	return code, out.String()
}

func requireAllKept(t *testing.T, code int, out string) {
	t.Helper()
	require.Zero(t, code, out)
	require.NotContains(t, out, "FAIL")
	require.NotContains(t, out, "SKIP")
	require.Contains(t, out, "PASS  "+conformance.StepUnsupportedVersion+": ", out)
	require.Contains(t, out, " 0 broken", out)
}

// TestParticipantCheckPassesTheGoSDK runs the check against `gdpr
// example-participant` (modules/participant).
func TestParticipantCheckPassesTheGoSDK(t *testing.T) {
	t.Parallel()
	cfg := testkit.AMQP(t)
	dsn := testkit.PostgresDSN(t)
	sdb, err := sql.Open("pgx", dsn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sdb.Close() })
	_, err = sdb.Exec(`CREATE TABLE invoices (id serial PRIMARY KEY, subject_id text NOT NULL)`)
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(t.Context())
	exited := make(chan int, 1)
	var pout testkit.Buffer
	go func() {
		exited <- ExecuteArgs(ctx, []string{"example-participant", "--name", "billing", "--dsn", dsn, "--table", "invoices", "--log-level", "warn"},
			&pout, &pout, []string{"GDPR_AMQP_URL=" + cfg.URL, "GDPR_AMQP_PREFIX=" + cfg.Prefix})
	}()
	t.Cleanup(func() {
		cancel()
		<-exited
	})

	code, out := runCheck(t, cfg, "billing")
	requireAllKept(t, code, out)
	require.NotContains(t, out, "WARN", "the SDK follows every recommendation too")
}

// pythonWithPika is a python3 that can import pika (Debian's python3-pika
// installs into the system python, which may not be first on PATH).
func pythonWithPika(t *testing.T) string {
	t.Helper()
	for _, py := range []string{"python3", "/usr/bin/python3"} {
		if err := exec.Command(py, "-c", "import pika").Run(); err == nil {
			return py
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no python3 with pika: deploy/tools.sh test installs python3-pika")
	}
	t.Skip("no python3 with pika (apt-get install python3-pika)")
	return ""
}

// startPythonParticipant runs docs/examples/participant-python as
// participant name on the broker at url under prefix until the test ends,
// and waits until it says it is running; its output is logged when the
// test fails. It returns the participant's output so far.
func startPythonParticipant(t *testing.T, py, url, prefix, name string) *testkit.Buffer {
	t.Helper()
	// Registered first, so it runs after the participant is killed: its
	// queue outlives it otherwise, whichever test started it.
	bc := bus.DefaultConfig()
	bc.URL, bc.Prefix = url, prefix
	t.Cleanup(func() {
		testkit.DeleteTopology(t, bc, bus.Topology{Queues: []bus.Queue{{Name: "participant." + name}}})
	})
	cmd := exec.Command(py, "../docs/examples/participant-python/participant.py")
	cmd.Env = append(os.Environ(), "AMQP_URL="+url, "AMQP_PREFIX="+prefix, "PARTICIPANT_NAME="+name)
	var pout testkit.Buffer
	cmd.Stdout, cmd.Stderr = &pout, &pout
	require.NoError(t, cmd.Start())
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("python participant:\n%s", pout.String())
		}
	})
	testkit.Eventually(t, 30*time.Second, func() bool { return strings.Contains(pout.String(), "participant running") },
		"the python participant starts: %s", pout.String())
	return &pout
}

// TestParticipantCheckPassesThePythonExample runs the check against
// docs/examples/participant-python.
func TestParticipantCheckPassesThePythonExample(t *testing.T) {
	t.Parallel()
	py := pythonWithPika(t)
	cfg := testkit.AMQP(t)
	startPythonParticipant(t, py, cfg.URL, cfg.Prefix, "newsletter")

	code, out := runCheck(t, cfg, "newsletter")
	requireAllKept(t, code, out)
	require.NotContains(t, out, "WARN", "the example follows every recommendation too")
}

// brokenParticipant is a participant on a raw amqp091 client that keeps the
// protocol but for what flaw names. It dead-letters what it refuses the way
// docs/protocol.md tells non-Go participants to.
func brokenParticipant(t *testing.T, cfg bus.Config, name, flaw string) {
	t.Helper()
	ch := rawChannel(t, cfg.URL)
	queue := cfg.Prefix + ".participant." + name
	require.NoError(t, ch.ExchangeDeclare(cfg.Prefix, "topic", true, false, false, false, nil))
	require.NoError(t, ch.ExchangeDeclare(cfg.Prefix+".dlx", "fanout", true, false, false, false, nil))
	_, err := ch.QueueDeclare(queue, true, false, false, false, documentedQueueArgs(t, cfg.Prefix))
	require.NoError(t, err)
	require.NoError(t, ch.QueueBind(queue, "erasure.command."+name, cfg.Prefix, false, nil))
	require.NoError(t, ch.Confirm(false))
	deliveries, err := ch.Consume(queue, "", false, false, false, false, nil)
	require.NoError(t, err)
	publish := func(exchange, key string, p amqp.Publishing) {
		dc, err := ch.PublishWithDeferredConfirm(exchange, key, true, false, p)
		if err == nil {
			_, _ = dc.WaitContext(context.Background())
		}
	}
	go func() {
		for d := range deliveries {
			var cmd struct {
				Version   int    `json:"version"`
				RequestID string `json:"request_id"`
				Subject   struct {
					ID    string `json:"id"`
					Email string `json:"email"`
				} `json:"subject"`
				Attempt int `json:"attempt"`
			}
			err := json.Unmarshal(d.Body, &cmd)
			reason := ""
			switch {
			case err != nil:
				reason = "body is not JSON"
			case cmd.Version != 1 && flaw != "ignores the version":
				reason = "protocol version is not supported"
			case cmd.Subject.ID == "" && cmd.Subject.Email == "":
				reason = "subject missing"
			}
			if reason != "" && flaw != "confirms what it cannot parse" {
				headers := amqp.Table{bus.HeaderDeadLetterReason: reason, bus.HeaderDeadLetterClass: bus.ReasonPoison, bus.HeaderDeadLetterQueue: "participant." + name}
				publish(cfg.Prefix+".dlx", d.RoutingKey, amqp.Publishing{MessageId: d.MessageId, Type: d.Type, CorrelationId: d.CorrelationId, DeliveryMode: 2, Headers: headers, Body: d.Body})
				_ = d.Ack(false)
				continue
			}
			if cmd.RequestID == "" {
				cmd.RequestID = d.CorrelationId
			}
			body, _ := json.Marshal(map[string]any{"version": 1, "request_id": cmd.RequestID, "participant": name, "outcome": "not_found", "attempt": max(cmd.Attempt, 1)})
			copies := 1
			if flaw == "confirms twice" {
				copies = 2
			}
			for range copies {
				publish(cfg.Prefix, "erasure.confirmed", amqp.Publishing{
					MessageId: uuid.NewString(), Type: "erasure.confirmed", CorrelationId: cmd.RequestID,
					ContentType: "application/json", DeliveryMode: 2, Timestamp: time.Now(), Body: body,
					Headers: amqp.Table{bus.HeaderCausationID: d.MessageId},
				})
			}
			_ = d.Ack(false)
		}
	}()
}

// TestParticipantCheckNamesTheBrokenRule: a participant that breaks one rule
// fails the check (exit 1) with that rule named.
func TestParticipantCheckNamesTheBrokenRule(t *testing.T) {
	t.Parallel()
	cases := []struct {
		flaw, step, rule string
	}{
		{"confirms twice", conformance.StepCommand, conformance.RuleOnePerDelivery},
		{"confirms what it cannot parse", conformance.StepMalformedBody, conformance.RuleNotConfirmed},
		{"ignores the version", conformance.StepUnsupportedVersion, conformance.RuleNotConfirmed},
	}
	for _, tc := range cases {
		t.Run(tc.flaw, func(t *testing.T) {
			t.Parallel()
			cfg := testkit.AMQP(t)
			brokenParticipant(t, cfg, "broken", tc.flaw)
			code, out := runCheck(t, cfg, "broken")
			require.Equal(t, 1, code, out)
			require.Contains(t, out, "FAIL  "+tc.step+": "+tc.rule, out)
			require.Contains(t, out, "first: "+tc.step+": ", out)
		})
	}
}
