package app

import (
	"bytes"
	"context"
	"database/sql"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// TestExamplePartipantDeletesRowsAndConfirms runs `gdpr example-participant`
// against a real table: a command deletes the subject's rows (and only
// theirs) and is confirmed; a subject without rows is not_found.
func TestExampleParticipantDeletesRowsAndConfirms(t *testing.T) {
	t.Parallel()
	cfg := testkit.AMQP(t)
	conn := testkit.Bus(t, cfg, bus.Topology{Queues: []bus.Queue{
		{Name: "confirmations", Bindings: []string{event.TypeErasureConfirmed}},
		{Name: "participant.billing", Bindings: []string{"erasure.command.billing"}},
	}})
	pub := bus.NewPublisher(conn)
	t.Cleanup(func() { _ = pub.Close() })
	dsn := testkit.PostgresDSN(t)
	sdb, err := sql.Open("pgx", dsn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sdb.Close() })
	_, err = sdb.Exec(`CREATE SCHEMA shop; CREATE TABLE shop.invoices (id serial PRIMARY KEY, customer text NOT NULL);
		INSERT INTO shop.invoices (customer) VALUES ('c-1'), ('c-1'), ('c-2')`)
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(t.Context())
	exited := make(chan int, 1)
	var out bytes.Buffer
	go func() {
		exited <- ExecuteArgs(ctx, []string{"example-participant", "--name", "billing", "--dsn", dsn, "--table", "shop.invoices", "--column", "customer", "--log-level", "warn"},
			&out, &out, []string{"GDPR_AMQP_URL=" + cfg.URL, "GDPR_AMQP_PREFIX=" + cfg.Prefix})
	}()

	var mu sync.Mutex
	confs := map[string]event.ErasureConfirmed{}
	c := bus.NewConsumer(conn, bus.ConsumerOptions{Queue: "confirmations"}, func(_ context.Context, m message.Message) error {
		var body event.ErasureConfirmed
		require.NoError(t, m.Decode(&body))
		mu.Lock()
		confs[body.RequestID] = body
		mu.Unlock()
		return nil
	}, testkit.Logger(t))
	require.NoError(t, c.Start(t.Context()))
	t.Cleanup(func() { _ = c.Stop(context.Background()) })

	// "": a subject with only an email, whom a table keyed by customer id
	// cannot find (a probe saw such a one answered not_found, and the
	// person told their data was deleted).
	reqs := map[string]string{"c-1": uuid.NewString(), "c-9": uuid.NewString(), "": uuid.NewString()}
	for subject, req := range reqs {
		s := event.Subject{ID: subject}
		if subject == "" {
			s.Email = "c-2@example.com"
		}
		m, err := message.New(event.TypeErasureCommand, event.ErasureCommand{Version: 1, RequestID: req, Participant: "billing", Subject: s, Attempt: 1}, nil)
		require.NoError(t, err)
		m.RoutingKey = "erasure.command.billing"
		require.NoError(t, pub.Publish(t.Context(), m))
	}
	testkit.Eventually(t, 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(confs) == 3
	}, "every command confirmed")
	mu.Lock()
	require.Equal(t, event.OutcomeErased, confs[reqs["c-1"]].Outcome)
	require.Equal(t, event.OutcomeNotFound, confs[reqs["c-9"]].Outcome)
	require.Equal(t, event.OutcomeCannotErase, confs[reqs[""]].Outcome, "no id: cannot erase, not nothing found")
	mu.Unlock()
	var left []string
	rows, err := sdb.Query(`SELECT customer FROM shop.invoices`)
	require.NoError(t, err)
	for rows.Next() {
		var s string
		require.NoError(t, rows.Scan(&s))
		left = append(left, s)
	}
	require.Equal(t, []string{"c-2"}, left)
	cancel()
	select {
	case code := <-exited:
		require.Zero(t, code, out.String())
	case <-time.After(20 * time.Second):
		t.Fatal("example-participant did not stop")
	}
}

func TestExampleParticipantRequiresItsFlags(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	code := ExecuteArgs(t.Context(), []string{"example-participant", "--name", "billing"}, &out, &out, nil)
	require.Equal(t, 2, code)
	require.Contains(t, out.String(), "--dsn")
}

// TestErasureStatusAndResendCommands: the operator's view of an erasure's
// participants and the re-send of an overdue one.
func TestErasureStatusAndResendCommands(t *testing.T) {
	t.Parallel()
	gdb, dsn := testkit.Postgres(t)
	req := uuid.NewString()
	require.NoError(t, gdb.Exec(`INSERT INTO erasures (request_id, state, subject_id) VALUES (?, 'open', 'u-1')`, req).Error)
	require.NoError(t, gdb.Exec(`INSERT INTO erasure_participants (request_id, participant, kind, state, attempt, last_outcome, detail)
		VALUES (?, 'late', 'amqp', 'overdue', 6, '', 'no confirmation after 6 commands'), (?, 'done', 'amqp', 'erased', 1, 'erased', '')`, req, req).Error)
	env := []string{"GDPR_POSTGRES_DSN=" + dsn, `GDPR_CANCELLER_PARTICIPANTS=[{name: late, kind: amqp}, {name: done, kind: amqp}]`}
	run := func(args ...string) (int, string) {
		var out bytes.Buffer
		code := ExecuteArgs(t.Context(), args, &out, &out, env)
		return code, out.String()
	}
	code, out := run("erasure", "status", req)
	require.Zero(t, code, out)
	require.Contains(t, out, "overdue")
	require.Contains(t, out, "no confirmation after 6 commands")

	code, out = run("erasure", "resend", req, "done")
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "not awaiting")

	code, out = run("erasure", "resend", req, "late")
	require.Zero(t, code, out)
	var state string
	var attempt int
	require.NoError(t, gdb.Raw(`SELECT state, attempt FROM erasure_participants WHERE request_id = ? AND participant = 'late'`, req).Row().Scan(&state, &attempt))
	require.Equal(t, "sent", state)
	require.Equal(t, 7, attempt)
	var commands int
	require.NoError(t, gdb.Raw(`SELECT count(*) FROM outbox_messages WHERE routing_key = 'erasure.command.late'`).Scan(&commands).Error)
	require.Equal(t, 1, commands)

	code, out = run("erasure", "status", uuid.NewString())
	require.Equal(t, 1, code, out)
}
