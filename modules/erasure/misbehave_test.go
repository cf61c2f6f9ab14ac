package erasure_test

import (
	"context"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/erasure"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/participant"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// rawParticipant consumes a participant queue without the SDK and answers
// each command with reply, to misbehave on purpose.
func rawParticipant(t testing.TB, h *harness, name string, reply func(cmd event.ErasureCommand, m message.Message) []message.Message) {
	c := bus.NewConsumer(h.conn, bus.ConsumerOptions{Queue: erasure.QueueName(name)}, func(ctx context.Context, m message.Message) error {
		var cmd event.ErasureCommand
		if err := m.Decode(&cmd); err != nil {
			return message.Permanent(err)
		}
		for _, out := range reply(cmd, m) {
			if err := h.pub.Publish(ctx, out); err != nil {
				return err
			}
		}
		return nil
	}, h.logger)
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
}

func confirmation(t testing.TB, cmd event.ErasureCommand, cause message.Message, outcome string) message.Message {
	m, err := message.New(event.TypeErasureConfirmed, event.ErasureConfirmed{
		Version: 1, RequestID: cmd.RequestID, Participant: cmd.Participant, Outcome: outcome, Attempt: cmd.Attempt,
	}, &cause)
	require.NoError(t, err)
	m.CorrelationID = cmd.RequestID
	return m
}

func metricValue(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			if m.Counter != nil {
				return m.Counter.GetValue()
			}
			return m.Gauge.GetValue()
		}
	}
	return 0
}

// TestMisbehavingParticipants: a silent participant is re-sent then overdue,
// one confirms twice, one loses its connection in the middle of a command
// and restarts, one sends malformed confirmations (dead-lettered), an HTTP API
// answers 503 twice; the erasure completes only once all five confirmed.
func TestMisbehavingParticipants(t *testing.T) {
	t.Parallel()
	api := newFakeAPI("")
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	participants := []erasure.Participant{
		{Name: "silent", Kind: "amqp"},
		{Name: "twice", Kind: "amqp"},
		{Name: "crashy", Kind: "amqp"},
		{Name: "garbled", Kind: "amqp"},
		{Name: "flaky", Kind: "http", URL: srv.URL + "/users/{subject_id}"},
	}
	const maxResends = 2
	h := newHarness(t, participants, func(c *erasure.Config) {
		c.ConfirmTimeout = 500 * time.Millisecond
		c.MaxResends = maxResends
	})
	s := newSubjects(1)[0]
	api.users[s.Subject.ID] = true
	api.fail[s.Subject.ID] = 2

	rawParticipant(t, h, "twice", func(cmd event.ErasureCommand, m message.Message) []message.Message {
		return []message.Message{confirmation(t, cmd, m, event.OutcomeErased), confirmation(t, cmd, m, event.OutcomeErased)}
	})
	rawParticipant(t, h, "garbled", func(cmd event.ErasureCommand, m message.Message) []message.Message {
		if cmd.Attempt > 1 {
			return []message.Message{confirmation(t, cmd, m, event.OutcomeErased)}
		}
		badJSON := confirmation(t, cmd, m, event.OutcomeErased)
		badJSON.Body = []byte(`{"version":1,"request_id":`)
		badOutcome := confirmation(t, cmd, m, "maybe")
		return []message.Message{badJSON, badOutcome}
	})

	// crashy's first process hangs in the middle of the erase; its
	// connection then drops (as a crashed process's would) and a new process starts.
	crashConn := testkit.Bus(t, h.cfg.AMQP, bus.Topology{})
	var crashyCalls atomic.Int32
	hang := make(chan struct{})
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(hang) }) }
	t.Cleanup(release)
	first, err := participant.New(crashConn, "crashy", func(ctx context.Context, _ event.Subject) (string, error) {
		crashyCalls.Add(1)
		select {
		case <-hang:
		case <-ctx.Done():
		}
		return event.OutcomeErased, nil
	}, participant.Options{Logger: h.logger})
	require.NoError(t, err)
	require.NoError(t, first.Start(context.Background()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = first.Stop(ctx)
	})

	h.startDispatcher()
	h.startCanceller()
	h.request(s)

	testkit.Eventually(t, 20*time.Second, func() bool { return crashyCalls.Load() == 1 }, "crashy got its command")
	require.NoError(t, crashConn.Close()) // the broker requeues the unacknowledged command
	var restartedCalls atomic.Int32
	startParticipant(t, h, "crashy", func(context.Context, event.Subject) (string, error) {
		restartedCalls.Add(1)
		return event.OutcomeErased, nil
	}, nil)

	// The silent one is re-sent max_resends times, then overdue, and the
	// erasure stays open while everyone else has confirmed.
	testkit.Eventually(t, 30*time.Second, func() bool {
		st, attempt := h.participantState(s.RequestID, "silent")
		return st == erasure.StateOverdue && attempt == maxResends+1
	}, "silent participant overdue")
	for _, name := range []string{"twice", "crashy", "garbled", "flaky"} {
		testkit.Eventually(t, 20*time.Second, func() bool {
			st, _ := h.participantState(s.RequestID, name)
			return st == erasure.StateErased
		}, "%s confirmed", name)
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return len(h.events.all(event.TypeErasureOverdue)) == 1 }, "erasure.overdue published")
	require.Equal(t, erasure.ErasureOpen, h.erasureState(s.RequestID))
	require.Empty(t, h.events.all(event.TypeErasureCompleted))
	require.Equal(t, 1.0, metricValue(t, h.registry, "gdpr_erasures_overdue_total", nil))
	require.Equal(t, 1.0, metricValue(t, h.registry, "gdpr_erasure_participants_attention", map[string]string{"participant": "silent", "state": "overdue"}))
	ps, err := erasure.Participants(context.Background(), h.db, s.RequestID)
	require.NoError(t, err)
	require.Len(t, ps, 5)

	// flaky: two 503s, then 200 on the third call.
	_, attempt := h.participantState(s.RequestID, "flaky")
	require.Equal(t, 3, attempt)
	api.mu.Lock()
	require.Equal(t, 3, api.calls[s.Subject.ID])
	api.mu.Unlock()

	// garbled: both malformed confirmations dead-lettered with a reason.
	dead := h.deadLetters(2, 10*time.Second)
	for _, d := range dead {
		require.Equal(t, event.TypeErasureConfirmed, d.Type)
		require.NotEmpty(t, d.Headers[bus.HeaderDeadLetterReason])
	}

	// The silent participant wakes up: it finds every command it was sent,
	// confirms, and only now the erasure completes, once.
	var silentCalls atomic.Int32
	startParticipant(t, h, "silent", func(context.Context, event.Subject) (string, error) {
		silentCalls.Add(1)
		return event.OutcomeErased, nil
	}, nil)
	testkit.Eventually(t, 20*time.Second, func() bool { return h.erasureState(s.RequestID) == erasure.ErasureFinished }, "erasure finished")
	testkit.Eventually(t, 10*time.Second, func() bool { return silentCalls.Load() == maxResends+1 }, "silent got every command")
	testkit.Eventually(t, 10*time.Second, func() bool { return len(h.events.distinct(event.TypeErasureFinished)) == 1 }, "finished published")
	testkit.Eventually(t, 10*time.Second, func() bool { return len(h.events.distinct(event.TypeErasureCompleted)) == 1 }, "completed published")
	require.Equal(t, map[string]int{s.RequestID: 1}, h.events.distinct(event.TypeErasureCompleted))
	require.Equal(t, 1, int(crashyCalls.Load()), "the crashed process never finished its command")
	// The restarted process gets the command back from the broker, and a
	// re-send too when the restart took longer than confirm_timeout.
	require.GreaterOrEqual(t, int(restartedCalls.Load()), 1, "the restarted process erased")
	require.Equal(t, 1.0, metricValue(t, h.registry, "gdpr_erasures_completed_total", nil))
	require.Equal(t, 0.0, metricValue(t, h.registry, "gdpr_erasure_participants_attention", map[string]string{"participant": "silent"}))
	require.Equal(t, 1.0, metricValue(t, h.registry, "gdpr_participant_confirmations_total", map[string]string{"participant": "twice", "outcome": "erased"}),
		"the duplicate confirmation changed nothing")
	release()
}

// TestOperatorResend: an overdue participant is re-sent by an operator; a
// confirmed one cannot be.
func TestOperatorResend(t *testing.T) {
	t.Parallel()
	h := newHarness(t, []erasure.Participant{{Name: "late", Kind: "amqp"}, {Name: "quick", Kind: "amqp"}}, func(c *erasure.Config) {
		c.ConfirmTimeout = 200 * time.Millisecond
		c.MaxResends = 0
	})
	h.startDispatcher()
	c := h.startCanceller()
	startParticipant(t, h, "quick", func(context.Context, event.Subject) (string, error) { return event.OutcomeNotFound, nil }, nil)
	s := newSubjects(1)[0]
	h.request(s)
	testkit.Eventually(t, 20*time.Second, func() bool {
		st, _ := h.participantState(s.RequestID, "late")
		return st == erasure.StateOverdue
	}, "late participant overdue")
	testkit.Eventually(t, 20*time.Second, func() bool {
		st, _ := h.participantState(s.RequestID, "quick")
		return st == erasure.StateNotFound
	}, "quick confirmed")
	require.ErrorIs(t, c.Resend(context.Background(), s.RequestID, "quick"), erasure.ErrNotResendable)
	require.ErrorIs(t, c.Resend(context.Background(), s.RequestID, "nobody"), erasure.ErrUnknownParty)

	require.NoError(t, c.Resend(context.Background(), s.RequestID, "late"))
	st, attempt := h.participantState(s.RequestID, "late")
	require.Equal(t, erasure.StateSent, st)
	require.Equal(t, 2, attempt)
	var attempts []int
	var mu sync.Mutex
	rawParticipant(t, h, "late", func(cmd event.ErasureCommand, m message.Message) []message.Message {
		mu.Lock()
		attempts = append(attempts, cmd.Attempt)
		mu.Unlock()
		if cmd.Attempt < 2 {
			return nil
		}
		return []message.Message{confirmation(t, cmd, m, event.OutcomeErased)}
	})
	testkit.Eventually(t, 20*time.Second, func() bool { return h.erasureState(s.RequestID) == erasure.ErasureFinished }, "finished after the re-send")
	mu.Lock()
	require.Equal(t, []int{1, 2}, attempts)
	mu.Unlock()
}
