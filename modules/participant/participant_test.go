package participant_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/participant"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

type env struct {
	conn  *bus.Conn
	pub   *bus.Publisher
	confs *confirmations
}

type confirmations struct {
	mu   sync.Mutex
	msgs []message.Message
}

func (c *confirmations) list() []message.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]message.Message(nil), c.msgs...)
}

// setup connects with a topology holding the participant's queue and a
// queue collecting confirmations.
func setup(t *testing.T, name string) *env {
	cfg := testkit.AMQP(t)
	conn := testkit.Bus(t, cfg, bus.Topology{Queues: []bus.Queue{
		{Name: "confirmations", Bindings: []string{event.TypeErasureConfirmed}},
		{Name: "participant." + name, Bindings: []string{"erasure.command." + name}},
	}})
	pub := bus.NewPublisher(conn)
	t.Cleanup(func() { _ = pub.Close() })
	e := &env{conn: conn, pub: pub, confs: &confirmations{}}
	c := bus.NewConsumer(conn, bus.ConsumerOptions{Queue: "confirmations"}, func(_ context.Context, m message.Message) error {
		e.confs.mu.Lock()
		defer e.confs.mu.Unlock()
		e.confs.msgs = append(e.confs.msgs, m)
		return nil
	}, testkit.Logger(t))
	require.NoError(t, c.Start(t.Context()))
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
	return e
}

func command(t *testing.T, name string, cmd event.ErasureCommand) message.Message {
	m, err := message.New(event.TypeErasureCommand, cmd, nil)
	require.NoError(t, err)
	m.RoutingKey = "erasure.command." + name
	m.CorrelationID = cmd.RequestID
	return m
}

func start(t *testing.T, e *env, name string, erase participant.EraseFunc, opts participant.Options) {
	opts.Logger = testkit.Logger(t)
	p, err := participant.New(e.conn, name, erase, opts)
	require.NoError(t, err)
	require.NoError(t, p.Start(t.Context()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.Stop(ctx)
	})
}

// TestDuplicateCommandErasesOnceWithDBInbox: a command delivered twice (the
// broker's at-least-once) runs the erase once when the participant has its
// inbox table, and both deliveries are answered with the same confirmation id.
func TestDuplicateCommandErasesOnceWithDBInbox(t *testing.T) {
	t.Parallel()
	e := setup(t, "billing")
	sdb, err := sql.Open("pgx", testkit.PostgresDSN(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = sdb.Close() })
	var calls atomic.Int32
	start(t, e, "billing", func(_ context.Context, s event.Subject) (string, error) {
		calls.Add(1)
		require.Equal(t, "u-1", s.ID)
		return event.OutcomeErased, nil
	}, participant.Options{DB: sdb})

	req := uuid.NewString()
	m := command(t, "billing", event.ErasureCommand{Version: 1, RequestID: req, Participant: "billing", Subject: event.Subject{ID: "u-1"}, Attempt: 1})
	require.NoError(t, e.pub.Publish(t.Context(), m))
	testkit.Eventually(t, 10*time.Second, func() bool { return len(e.confs.list()) == 1 }, "first confirmation")
	require.NoError(t, e.pub.Publish(t.Context(), m))
	testkit.Eventually(t, 10*time.Second, func() bool { return len(e.confs.list()) == 2 }, "second confirmation")
	require.Equal(t, int32(1), calls.Load(), "erase ran once")

	confs := e.confs.list()
	require.Equal(t, confs[0].ID, confs[1].ID, "a replayed confirmation keeps its message id")
	require.Equal(t, participant.ConfirmationID("billing", m.ID), confs[0].ID)
	var body event.ErasureConfirmed
	require.NoError(t, confs[0].Decode(&body))
	require.Equal(t, event.ErasureConfirmed{Version: 1, RequestID: req, Participant: "billing", Outcome: event.OutcomeErased, Attempt: 1}, body)
	require.Equal(t, req, confs[0].CorrelationID)
	require.Equal(t, m.ID, confs[0].CausationID)
	var recorded int
	require.NoError(t, sdb.QueryRow(`SELECT count(*) FROM gdpr_participant_inbox WHERE participant = 'billing'`).Scan(&recorded))
	require.Equal(t, 1, recorded)
}

// TestEraseOutcomes: not found, an error (its text stays in the service), a
// FailedError (its detail is sent), a panic and an unknown outcome.
func TestEraseOutcomes(t *testing.T) {
	t.Parallel()
	e := setup(t, "crm")
	start(t, e, "crm", func(_ context.Context, s event.Subject) (string, error) {
		switch s.ID {
		case "missing":
			return event.OutcomeNotFound, nil
		case "error":
			return "", errors.New("lookup of jane@example.com failed")
		case "failed":
			return "", fmt.Errorf("wrapped: %w", participant.Failed("crm database unavailable"))
		case "panic":
			panic("boom")
		default:
			return "maybe", nil
		}
	}, participant.Options{})
	want := map[string][2]string{
		"missing": {event.OutcomeNotFound, ""},
		"error":   {event.OutcomeFailed, "erase function returned an error"},
		"failed":  {event.OutcomeFailed, "crm database unavailable"},
		"panic":   {event.OutcomeFailed, "erase function panicked"},
		"odd":     {event.OutcomeFailed, `erase function returned unknown outcome "maybe"`},
	}
	reqs := map[string]string{}
	for id := range want {
		req := uuid.NewString()
		reqs[req] = id
		require.NoError(t, e.pub.Publish(t.Context(), command(t, "crm", event.ErasureCommand{Version: 1, RequestID: req, Participant: "crm", Subject: event.Subject{ID: id}, Attempt: 1})))
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return len(e.confs.list()) == len(want) }, "a confirmation per command")
	for _, c := range e.confs.list() {
		var body event.ErasureConfirmed
		require.NoError(t, c.Decode(&body))
		w := want[reqs[body.RequestID]]
		require.Equal(t, w[0], body.Outcome, reqs[body.RequestID])
		require.Equal(t, w[1], body.Detail, reqs[body.RequestID])
		require.NotContains(t, body.Detail, "@", "no personal data in the detail")
	}
}

// TestBadCommandsAreDeadLettered: commands the participant cannot act on are
// dead-lettered with a reason and never reach the erase function.
func TestBadCommandsAreDeadLettered(t *testing.T) {
	t.Parallel()
	e := setup(t, "shop")
	var calls atomic.Int32
	start(t, e, "shop", func(context.Context, event.Subject) (string, error) {
		calls.Add(1)
		return event.OutcomeErased, nil
	}, participant.Options{})
	req := uuid.NewString()
	cases := map[string]event.ErasureCommand{
		"version":    {Version: 2, RequestID: req, Participant: "shop", Subject: event.Subject{ID: "u"}},
		"other":      {Version: 1, RequestID: req, Participant: "billing", Subject: event.Subject{ID: "u"}},
		"no request": {Version: 1, Participant: "shop", Subject: event.Subject{ID: "u"}},
		"no subject": {Version: 1, RequestID: req, Participant: "shop"},
	}
	for name, cmd := range cases {
		m := command(t, "shop", cmd)
		m.ID = "bad-" + name
		require.NoError(t, e.pub.Publish(t.Context(), m))
	}
	ch, err := e.conn.Channel(t.Context())
	require.NoError(t, err)
	defer ch.Close()
	reasons := map[string]string{}
	testkit.Eventually(t, 10*time.Second, func() bool {
		d, ok, err := ch.Get(e.conn.DeadLetterQueue(), true)
		require.NoError(t, err)
		if ok {
			reasons[d.MessageId] = fmt.Sprint(d.Headers[bus.HeaderDeadLetterReason])
		}
		return len(reasons) == len(cases)
	}, "every bad command dead-lettered")
	require.Contains(t, reasons["bad-version"], "version 2 is not supported")
	require.Contains(t, reasons["bad-other"], `"billing"`)
	require.Contains(t, reasons["bad-no request"], "request_id")
	require.Contains(t, reasons["bad-no subject"], "subject")
	require.Zero(t, calls.Load())
	require.Empty(t, e.confs.list())
}
