package erasure_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/erasure"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// TestConfirmationsOfOneErasureCommitTogether: ten participants confirm one
// erasure while another session holds the erasure's row lock. The first
// confirmation waits on the lock; the nine behind it must not each wait for
// their own transaction but commit together in the next one (the
// participants' rows then carry few distinct confirmed_at: now() is the
// transaction's start; xmin would not tell, each savepoint has its own). A confirmation
// by a participant the erasure has no row for fails alone, as before, and
// the erasure still finishes exactly once.
func TestConfirmationsOfOneErasureCommitTogether(t *testing.T) {
	t.Parallel()
	var ps []erasure.Participant
	for i := range 11 {
		ps = append(ps, erasure.Participant{Name: fmt.Sprintf("svc%02d", i), Kind: erasure.KindAMQP})
	}
	h := newHarness(t, ps, nil)
	c, err := erasure.New(h.db, h.store, h.outbox, h.cfg.Canceller, nil, h.logger)
	require.NoError(t, err)
	s := newSubjects(1)[0]
	m, err := message.New(event.TypeErasureRequested, event.ErasureRequested{RequestID: s.RequestID, Subject: s.Subject}, nil)
	require.NoError(t, err)
	require.NoError(t, c.Handle(t.Context(), m))
	// svc10 is configured but, as if added after the fan-out, no participant of this erasure.
	require.NoError(t, h.db.Exec(`DELETE FROM erasure_participants WHERE request_id = ? AND participant = 'svc10'`, s.RequestID).Error)

	confirm := func(name string) <-chan error {
		conf, err := message.New(event.TypeErasureConfirmed, event.ErasureConfirmed{Version: 1, RequestID: s.RequestID, Participant: name, Outcome: event.OutcomeErased, Attempt: 1}, nil)
		require.NoError(t, err)
		errc := make(chan error, 1)
		go func() { errc <- c.Handle(context.WithoutCancel(t.Context()), conf) }()
		return errc
	}
	hold := h.db.Begin()
	require.NoError(t, hold.Error)
	require.NoError(t, hold.Exec(`SELECT 1 FROM erasures WHERE request_id = ? FOR UPDATE`, s.RequestID).Error)
	first := confirm("svc00")
	testkit.Eventually(t, time.Minute, func() bool {
		var n int
		require.NoError(t, h.db.Raw(`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n).Error)
		return n == 1
	}, "the first confirmation waits on the erasure's row lock")
	var rest []<-chan error
	for i := 1; i < 11; i++ {
		rest = append(rest, confirm(fmt.Sprintf("svc%02d", i)))
	}
	require.NoError(t, hold.Rollback().Error)

	require.NoError(t, <-first)
	for i, errc := range rest {
		if i == 9 {
			require.ErrorIs(t, <-errc, erasure.ErrUnknownParty, "svc10 is no participant of this erasure")
			continue
		}
		require.NoError(t, <-errc, "svc%02d", i+1)
	}
	require.Equal(t, erasure.ErasureFinished, h.erasureState(s.RequestID))
	var txs int
	require.NoError(t, h.db.Raw(`SELECT count(DISTINCT confirmed_at) FROM erasure_participants WHERE request_id = ?`, s.RequestID).Scan(&txs).Error)
	require.Less(t, txs, 10, "transactions that recorded the ten confirmations")
	t.Logf("ten confirmations recorded in %d transactions", txs)
	for _, typ := range []string{event.TypeErasureCompleted, event.TypeErasureFinished} {
		var n int
		require.NoError(t, h.db.Raw(`SELECT count(*) FROM outbox_messages WHERE type = ? AND correlation_id = ?`, typ, s.RequestID).Scan(&n).Error)
		require.Equal(t, 1, n, typ)
	}
	var inboxed int
	require.NoError(t, h.db.Raw(`SELECT count(*) FROM inbox WHERE consumer = 'canceller.confirmed'`).Scan(&inboxed).Error)
	require.Equal(t, 10, inboxed, "the refused confirmation left no inbox record")
}
