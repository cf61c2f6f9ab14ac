package erasure_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/erasure"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/outbox"
	"github.com/gdpr-oss/gdpr/modules/scheduler"
	"github.com/gdpr-oss/gdpr/modules/testkit"
	"github.com/gdpr-oss/gdpr/modules/trace"
)

// countingCanceller is a canceller over h's database whose every statement is counted.
func countingCanceller(t *testing.T, h *harness) (*erasure.Canceller, *testkit.Statements) {
	t.Helper()
	gdb, counter := testkit.CountingGorm(t, h.cfg.Postgres.DSN)
	c, err := erasure.New(gdb, scheduler.NewStore(gdb), outbox.NewStore(gdb), h.cfg.Canceller, nil, h.logger)
	require.NoError(t, err)
	return c, counter
}

func confirmedMessage(t *testing.T, requestID, participant string) message.Message {
	t.Helper()
	m, err := message.New(event.TypeErasureConfirmed, event.ErasureConfirmed{Version: 1, RequestID: requestID, Participant: participant, Outcome: event.OutcomeErased, Attempt: 1}, nil)
	require.NoError(t, err)
	return m
}

// holdWhileQueued holds requestID's row lock until first's confirmation
// waits on it, submits rest behind it, then lets go, so that rest gather in
// one batch (TestConfirmationsOfOneErasureCommitTogether does the same).
func holdWhileQueued(t *testing.T, h *harness, c *erasure.Canceller, requestID string, first message.Message, rest []message.Message) []error {
	t.Helper()
	hold := h.db.Begin()
	require.NoError(t, hold.Error)
	require.NoError(t, hold.Exec(`SELECT 1 FROM erasures WHERE request_id = ? FOR UPDATE`, requestID).Error)
	handle := func(m message.Message) <-chan error {
		errc := make(chan error, 1)
		// Under the message's trace context, as the consumer's Trace middleware runs it.
		go func() { errc <- c.Handle(message.TraceContext(context.WithoutCancel(t.Context()), m), m) }()
		return errc
	}
	firstc := handle(first)
	testkit.Eventually(t, time.Minute, func() bool {
		var n int
		require.NoError(t, h.db.Raw(`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n).Error)
		return n == 1
	}, "the first confirmation waits on the erasure's row lock")
	var waits []<-chan error
	for _, m := range rest {
		waits = append(waits, handle(m))
	}
	testkit.Eventually(t, time.Minute, func() bool { return c.Queued() == len(rest) }, "the other confirmations queued behind the first")
	require.NoError(t, hold.Rollback().Error)
	errs := []error{<-firstc}
	for _, w := range waits {
		errs = append(errs, <-w)
	}
	return errs
}

// TestStatementsPerErasure counts the statements (BEGIN and COMMIT
// included) and transactions the canceller sends to PostgreSQL for one
// erasure with ten AMQP participants: the fan-out, then the ten
// confirmations one at a time, and again with nine of them gathered in one
// batch. Before the fan-out wrote its commands in one statement and a batch
// read and wrote its rows once, the fan-out took 29 statements, a
// confirmation 7 and the completing one 12. A count is no speed: it only
// rises when a statement is added to the hot path, and this test says so.
func TestStatementsPerErasure(t *testing.T) {
	t.Parallel()
	var ps []erasure.Participant
	for i := range 10 {
		ps = append(ps, erasure.Participant{Name: fmt.Sprintf("svc%02d", i), Kind: erasure.KindAMQP})
	}
	h := newHarness(t, ps, nil)
	c, counter := countingCanceller(t, h)
	fanOut := func(s subject) (int64, int64) {
		m, err := message.New(event.TypeErasureRequested, event.ErasureRequested{RequestID: s.RequestID, Subject: s.Subject}, nil)
		require.NoError(t, err)
		s0, b0 := counter.Total(), counter.Begins()
		require.NoError(t, c.Handle(t.Context(), m))
		s1, b1 := counter.Total(), counter.Begins()
		return s1 - s0, b1 - b0
	}
	ss := newSubjects(2)

	st, tx := fanOut(ss[0])
	t.Logf("fan-out: %d statements in %d transactions", st, tx)
	require.LessOrEqual(t, st, int64(7), "statements of a fan-out to ten participants")
	require.Equal(t, int64(1), tx)
	for i, p := range ps {
		s0, b0 := counter.Total(), counter.Begins()
		require.NoError(t, c.Handle(t.Context(), confirmedMessage(t, ss[0].RequestID, p.Name)))
		s1, b1 := counter.Total(), counter.Begins()
		t.Logf("confirmation %d alone: %d statements in %d transactions", i+1, s1-s0, b1-b0)
		require.Equal(t, int64(1), b1-b0)
		if i < len(ps)-1 {
			require.LessOrEqual(t, s1-s0, int64(6), "statements of a confirmation alone")
		} else {
			require.LessOrEqual(t, s1-s0, int64(9), "statements of the confirmation that finishes the erasure")
		}
	}
	require.Equal(t, erasure.ErasureFinished, h.erasureState(ss[0].RequestID))

	_, _ = fanOut(ss[1])
	var rest []message.Message
	for _, p := range ps[1:] {
		rest = append(rest, confirmedMessage(t, ss[1].RequestID, p.Name))
	}
	s0, b0 := counter.Total(), counter.Begins()
	for _, err := range holdWhileQueued(t, h, c, ss[1].RequestID, confirmedMessage(t, ss[1].RequestID, ps[0].Name), rest) {
		require.NoError(t, err)
	}
	s1, b1 := counter.Total(), counter.Begins()
	t.Logf("ten confirmations, nine of them batched: %d statements in %d transactions", s1-s0, b1-b0)
	require.Equal(t, erasure.ErasureFinished, h.erasureState(ss[1].RequestID))
	require.Equal(t, int64(2), b1-b0, "transactions of the ten confirmations")
	require.LessOrEqual(t, s1-s0, int64(6+9), "statements of the ten confirmations in two transactions")
}

// TestConfirmationsOfSeveralErasuresShareATransaction: while one
// confirmation of erasure A waits on A's row lock, the other nine of A and
// all ten of erasure B (in the same lane) queue behind it; all nineteen are
// recorded in the next transaction, and each erasure finishes exactly once.
func TestConfirmationsOfSeveralErasuresShareATransaction(t *testing.T) {
	t.Parallel()
	var ps []erasure.Participant
	for i := range 10 {
		ps = append(ps, erasure.Participant{Name: fmt.Sprintf("svc%02d", i), Kind: erasure.KindAMQP})
	}
	h := newHarness(t, ps, nil)
	c, counter := countingCanceller(t, h)
	ss := newSubjects(2)
	for ss[1].RequestID = uuid.NewString(); erasure.LaneOf(ss[1].RequestID) != erasure.LaneOf(ss[0].RequestID); {
		ss[1].RequestID = uuid.NewString()
	}
	for _, s := range ss {
		m, err := message.New(event.TypeErasureRequested, event.ErasureRequested{RequestID: s.RequestID, Subject: s.Subject}, nil)
		require.NoError(t, err)
		require.NoError(t, c.Handle(t.Context(), m))
	}
	var rest []message.Message
	for _, p := range ps {
		rest = append(rest, confirmedMessage(t, ss[1].RequestID, p.Name))
		if p.Name != ps[0].Name {
			rest = append(rest, confirmedMessage(t, ss[0].RequestID, p.Name))
		}
	}
	_, b0 := counter.Total(), counter.Begins()
	for _, err := range holdWhileQueued(t, h, c, ss[0].RequestID, confirmedMessage(t, ss[0].RequestID, ps[0].Name), rest) {
		require.NoError(t, err)
	}
	_, b1 := counter.Total(), counter.Begins()
	t.Logf("twenty confirmations of two erasures: %d transactions", b1-b0)
	require.Equal(t, int64(2), b1-b0, "transactions of the twenty confirmations")
	for _, s := range ss {
		require.Equal(t, erasure.ErasureFinished, h.erasureState(s.RequestID))
		for _, typ := range []string{event.TypeErasureCompleted, event.TypeErasureFinished} {
			var n int
			require.NoError(t, h.db.Raw(`SELECT count(*) FROM outbox_messages WHERE type = ? AND correlation_id = ?`, typ, s.RequestID).Scan(&n).Error)
			require.Equal(t, 1, n, typ)
		}
	}
}

// TestBatchedConfirmationsLogUnderTheirOwnMessage: confirmations of two
// erasures recorded in one transaction each log under their own message.
// The transaction ran every confirmation under the context of the delivery
// that ran it, so a clean-clone make test (TestOperationsEndToEnd) found
// "erasure completed" for one erasure carrying the message id of the
// other's confirmation.
func TestBatchedConfirmationsLogUnderTheirOwnMessage(t *testing.T) {
	t.Parallel()
	ps := []erasure.Participant{{Name: "svc00", Kind: erasure.KindAMQP}, {Name: "svc01", Kind: erasure.KindAMQP}}
	h := newHarness(t, ps, nil)
	var logs testkit.Buffer
	logger := slog.New(trace.NewHandler(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	c, err := erasure.New(h.db, scheduler.NewStore(h.db), outbox.NewStore(h.db), h.cfg.Canceller, nil, logger)
	require.NoError(t, err)
	ss := newSubjects(2)
	for ss[1].RequestID = uuid.NewString(); erasure.LaneOf(ss[1].RequestID) != erasure.LaneOf(ss[0].RequestID); {
		ss[1].RequestID = uuid.NewString()
	}
	for _, s := range ss {
		m, err := message.New(event.TypeErasureRequested, event.ErasureRequested{RequestID: s.RequestID, Subject: s.Subject}, nil)
		require.NoError(t, err)
		require.NoError(t, c.Handle(message.TraceContext(t.Context(), m), m))
	}
	requestOf := map[string]string{}
	confirmation := func(requestID, participant string) message.Message {
		m := confirmedMessage(t, requestID, participant)
		requestOf[m.ID] = requestID
		return m
	}
	first := confirmation(ss[0].RequestID, ps[0].Name)
	rest := []message.Message{confirmation(ss[0].RequestID, ps[1].Name)}
	for _, p := range ps {
		rest = append(rest, confirmation(ss[1].RequestID, p.Name))
	}
	for _, err := range holdWhileQueued(t, h, c, ss[0].RequestID, first, rest) {
		require.NoError(t, err)
	}
	completed := 0
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	for sc.Scan() {
		var line struct {
			Msg       string `json:"msg"`
			RequestID string `json:"request_id"`
			MessageID string `json:"message_id"`
		}
		require.NoError(t, json.Unmarshal(sc.Bytes(), &line))
		if want, ok := requestOf[line.MessageID]; ok {
			require.Equal(t, want, line.RequestID, "%q logged under another erasure's confirmation", line.Msg)
			if line.Msg == "erasure completed" {
				completed++
			}
		}
	}
	require.Equal(t, 2, completed, "each erasure completed under one of its own confirmations")
}
