package erasure_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/erasure"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// TestBadInputIsDeadLetteredAndChangesNothing sends every kind of bad
// message to the canceller: each is dead-lettered with a reason naming the
// problem, nothing is stored, and a good request behind them still goes through.
func TestBadInputIsDeadLetteredAndChangesNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, []erasure.Participant{{Name: "billing", Kind: "amqp"}}, nil)
	h.startDispatcher()
	h.startCanceller()

	known := newSubjects(1)[0]
	h.request(known)
	testkit.Eventually(t, 20*time.Second, func() bool {
		st, _ := h.participantState(known.RequestID, "billing")
		return st == erasure.StateSent
	}, "known erasure fanned out")

	msg := func(typ string, body any) message.Message {
		m, err := message.New(typ, body, nil)
		require.NoError(t, err)
		return m
	}
	raw := func(typ, body string) message.Message {
		m := msg(typ, struct{}{})
		m.Body = []byte(body)
		return m
	}
	confirm := func(requestID, participant, outcome string, version int) message.Message {
		return msg(event.TypeErasureConfirmed, event.ErasureConfirmed{Version: version, RequestID: requestID, Participant: participant, Outcome: outcome})
	}
	cases := []struct {
		name   string
		m      message.Message
		reason string
	}{
		{"requested: body is not an object", raw(event.TypeErasureRequested, `[1,2]`), "decoding"},
		{"requested: request_id missing", msg(event.TypeErasureRequested, event.ErasureRequested{Subject: event.Subject{ID: "u1"}}), "request_id"},
		{"requested: request_id not a UUID", msg(event.TypeErasureRequested, event.ErasureRequested{RequestID: "42", Subject: event.Subject{ID: "u1"}}), "request_id"},
		{"requested: no subject", msg(event.TypeErasureRequested, event.ErasureRequested{RequestID: uuid.NewString()}), "subject"},
		{"confirmed: unknown request", confirm(uuid.NewString(), "billing", event.OutcomeErased, 1), "unknown request"},
		{"confirmed: unregistered participant", confirm(known.RequestID, "mallory", event.OutcomeErased, 1), "unregistered participant"},
		{"confirmed: unknown outcome", confirm(known.RequestID, "billing", "probably", 1), "outcome"},
		{"confirmed: unsupported version", confirm(known.RequestID, "billing", event.OutcomeErased, 2), "version"},
		{"confirmed: participant missing", confirm(known.RequestID, "", event.OutcomeErased, 1), "participant"},
		{"confirmed: body is a string", raw(event.TypeErasureConfirmed, `"erased"`), "decoding"},
		// Without the strict check the last outcome would win and confirm billing as failed.
		{"confirmed: duplicate outcome", raw(event.TypeErasureConfirmed,
			`{"version":1,"request_id":"`+known.RequestID+`","participant":"billing","outcome":"erased","outcome":"failed"}`), `outcome: duplicate member "outcome"`},
		{"confirmed: miscased outcome", raw(event.TypeErasureConfirmed,
			`{"version":1,"request_id":"`+known.RequestID+`","participant":"billing","Outcome":"erased"}`), `member "Outcome" must be spelled "outcome"`},
		{"timer: unknown action", msg(erasure.TypeTimer, erasure.Timer{RequestID: known.RequestID, Participant: "billing", Action: "explode", Attempt: 1}), "action"},
		{"timer: unregistered participant", msg(erasure.TypeTimer, erasure.Timer{RequestID: known.RequestID, Participant: "mallory", Action: erasure.ActionSend, Attempt: 1}), "unregistered participant"},
	}
	for i := range cases {
		cases[i].m.ID = "bad-" + strings.ReplaceAll(cases[i].name, " ", "-")
		require.NoError(t, h.pub.Publish(context.Background(), cases[i].m), cases[i].name)
	}
	dead := h.deadLetters(len(cases), 30*time.Second)
	byID := map[string]string{}
	for _, d := range dead {
		byID[d.MessageId] = fmt.Sprint(d.Headers[bus.HeaderDeadLetterReason])
	}
	for _, c := range cases {
		reason, ok := byID[c.m.ID]
		require.True(t, ok, "%s: not dead-lettered", c.name)
		require.Contains(t, reason, c.reason, c.name)
	}

	// Nothing changed: one erasure, its participant still waiting.
	var erasures int
	require.NoError(t, h.db.Raw(`SELECT count(*) FROM erasures`).Scan(&erasures).Error)
	require.Equal(t, 1, erasures)
	st, attempt := h.participantState(known.RequestID, "billing")
	require.Equal(t, erasure.StateSent, st)
	require.Equal(t, 1, attempt)

	// A redelivered erasure.requested (same message id) and the same request
	// under a new message id create nothing twice.
	m := h.request(known)
	require.NoError(t, h.pub.Publish(context.Background(), m))
	other := newSubjects(1)[0]
	h.request(other)
	testkit.Eventually(t, 20*time.Second, func() bool {
		st, _ := h.participantState(other.RequestID, "billing")
		return st == erasure.StateSent
	}, "a good request behind the bad ones is fanned out")
	var rows int
	require.NoError(t, h.db.Raw(`SELECT count(*) FROM erasure_participants`).Scan(&rows).Error)
	require.Equal(t, 2, rows)
	require.Equal(t, 2.0, metricValue(t, h.registry, "gdpr_erasures_requested_total", nil))
}

// TestRedeliveredRequestedCreatesNothingTwice hands the canceller the same
// erasure.requested many times at once, on several replicas.
func TestRedeliveredRequestedCreatesNothingTwice(t *testing.T) {
	t.Parallel()
	h := newHarness(t, []erasure.Participant{{Name: "a", Kind: "amqp"}, {Name: "b", Kind: "amqp"}, {Name: "c", Kind: "http", URL: "http://127.0.0.1:1/x/{subject_id}"}}, nil)
	var replicas []*erasure.Canceller
	for range 3 {
		c, err := erasure.New(h.db, h.store, h.outbox, h.cfg.Canceller, nil, h.logger)
		require.NoError(t, err)
		replicas = append(replicas, c)
	}
	s := newSubjects(1)[0]
	m, err := message.New(event.TypeErasureRequested, event.ErasureRequested{RequestID: s.RequestID, Subject: s.Subject}, nil)
	require.NoError(t, err)
	errs := make(chan error, 30)
	for i := range 30 {
		go func() {
			dup := m
			if i%2 == 1 {
				dup.ID = uuid.NewString() // the same request under another message id
			}
			errs <- replicas[i%len(replicas)].Handle(context.Background(), dup)
		}()
	}
	for range 30 {
		require.NoError(t, <-errs)
	}
	var rows, commands, timers int
	require.NoError(t, h.db.Raw(`SELECT count(*) FROM erasure_participants WHERE request_id = ?`, s.RequestID).Scan(&rows).Error)
	require.Equal(t, 3, rows)
	var calls int
	require.NoError(t, h.db.Raw(`SELECT count(*) FROM outbox_messages WHERE type = ?`, event.TypeErasureCommand).Scan(&commands).Error)
	require.Equal(t, 2, commands, "one command per AMQP participant, due at once: in the outbox")
	require.NoError(t, h.db.Raw(`SELECT count(*) FROM outbox_messages WHERE type = ?`, erasure.TypeTimer).Scan(&calls).Error)
	require.Equal(t, 1, calls, "one HTTP call, due at once: in the outbox")
	require.NoError(t, h.db.Raw(`SELECT count(*) FROM scheduled_messages WHERE type = ?`, erasure.TypeTimer).Scan(&timers).Error)
	require.Equal(t, 1, timers, "one sweep for the AMQP participants, delayed")
}

// TestConcurrentConfirmationsAcrossReplicas: every participant confirms
// four times at once, spread over three canceller replicas: each
// confirmation is applied once and the erasure completes and finishes once.
func TestConcurrentConfirmationsAcrossReplicas(t *testing.T) {
	t.Parallel()
	var ps []erasure.Participant
	for i := range 5 {
		ps = append(ps, erasure.Participant{Name: fmt.Sprintf("p%d", i), Kind: "amqp"})
	}
	h := newHarness(t, ps, nil)
	var replicas []*erasure.Canceller
	for range 3 {
		c, err := erasure.New(h.db, h.store, h.outbox, h.cfg.Canceller, nil, h.logger)
		require.NoError(t, err)
		replicas = append(replicas, c)
	}
	s := newSubjects(1)[0]
	m, err := message.New(event.TypeErasureRequested, event.ErasureRequested{RequestID: s.RequestID, Subject: s.Subject}, nil)
	require.NoError(t, err)
	require.NoError(t, replicas[0].Handle(context.Background(), m))

	errs := make(chan error, 20)
	i := 0
	for _, p := range ps {
		for range 4 {
			c := replicas[i%len(replicas)]
			i++
			conf, err := message.New(event.TypeErasureConfirmed, event.ErasureConfirmed{Version: 1, RequestID: s.RequestID, Participant: p.Name, Outcome: event.OutcomeErased, Attempt: 1}, nil)
			require.NoError(t, err)
			go func() { errs <- c.Handle(context.Background(), conf) }()
		}
	}
	for range 20 {
		require.NoError(t, <-errs)
	}
	require.Equal(t, erasure.ErasureFinished, h.erasureState(s.RequestID))
	for _, typ := range []string{event.TypeErasureCompleted, event.TypeErasureFinished} {
		var n int
		require.NoError(t, h.db.Raw(`SELECT count(*) FROM outbox_messages WHERE type = ?`, typ).Scan(&n).Error)
		require.Equal(t, 1, n, typ)
	}
	var sweeps int
	require.NoError(t, h.db.Raw(`SELECT count(*) FROM scheduled_messages WHERE type = ?`, erasure.TypeTimer).Scan(&sweeps).Error)
	require.Zero(t, sweeps, "the sweep is dropped once nothing awaits a confirmation")
}
