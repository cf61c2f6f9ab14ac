package bus_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// TestDeadLettersAreListedAndRedrivenOnceTheCauseIsFixed: messages that were
// dead-lettered while a dependency was broken (one poison verdict, one
// expired retry budget, one dropped by the broker's delivery limit) are
// listed with where they came from and why, and are handled once each when
// put back, while a message from another queue stays dead-lettered.
func TestDeadLettersAreListedAndRedrivenOnceTheCauseIsFixed(t *testing.T) {
	t.Parallel()
	cfg := testkit.AMQP(t)
	cfg.DeliveryLimit = 1
	cfg.RetryFor = 50 * time.Millisecond
	topo := bus.Topology{Queues: []bus.Queue{
		{Name: "q", Bindings: []string{"thing.*"}},
		{Name: "other", Bindings: []string{"other.*"}},
	}}
	conn := dial(t, cfg, topo)
	pub := bus.NewPublisher(conn)
	defer pub.Close()
	ctx := t.Context()

	// A message the broker itself dead-letters: its deliveries keep ending
	// without a verdict until the queue's delivery limit.
	crashy := newMessage(t, "thing.crashy")
	require.NoError(t, pub.Publish(ctx, crashy))
	giveBack(t, conn, "q", cfg.DeliveryLimit+1)
	deadLetterCount := func() int { return readyCount(t, conn, conn.DeadLetterQueue()) }
	testkit.Eventually(t, 10*time.Second, func() bool { return deadLetterCount() == 1 }, "the broker dead-lettered it")

	// While "broken", the handler refuses one message as poison and keeps
	// failing the others until their retry budget is spent.
	var mu sync.Mutex
	broken := true
	handled := map[string]int{}
	handler := func(_ context.Context, m message.Message) error {
		mu.Lock()
		defer mu.Unlock()
		if !broken {
			handled[m.ID]++
			return nil
		}
		if m.Type == "thing.poison" || m.Type == "other.poison" {
			return message.Permanent(errors.New("unknown reference"))
		}
		return errors.New("database unavailable")
	}
	consume(t, conn, bus.ConsumerOptions{Queue: "q", RetryBackoff: 5 * time.Millisecond}, handler)
	consume(t, conn, bus.ConsumerOptions{Queue: "other", RetryBackoff: 5 * time.Millisecond}, handler)
	poison, failing, other := newMessage(t, "thing.poison"), newMessage(t, "thing.failing"), newMessage(t, "other.poison")
	for _, m := range []message.Message{poison, failing, other} {
		require.NoError(t, pub.Publish(ctx, m))
	}
	testkit.Eventually(t, 20*time.Second, func() bool { return deadLetterCount() == 4 }, "four dead letters")

	listed, err := conn.DeadLetters(ctx, 10)
	require.NoError(t, err)
	byID := map[string]bus.DeadLetter{}
	for _, d := range listed {
		byID[d.MessageID] = d
	}
	require.Len(t, byID, 4)
	for _, tc := range []struct {
		m            message.Message
		queue, class string
	}{
		{crashy, "q", "delivery_limit"},
		{poison, "q", bus.ReasonPoison},
		{failing, "q", bus.ReasonRetryExpired},
		{other, "other", bus.ReasonPoison},
	} {
		d := byID[tc.m.ID]
		require.Equal(t, tc.queue, d.Queue, tc.m.Type)
		require.Equal(t, tc.class, d.Class, tc.m.Type)
		require.Equal(t, tc.m.Type, d.Type)
		require.Equal(t, tc.m.CorrelationID, d.RequestID)
		require.NotEmpty(t, d.Reason)
	}
	// Listing hands them back; the queue has them again once it processed that.
	testkit.Eventually(t, 10*time.Second, func() bool { return deadLetterCount() == 4 }, "listing leaves them where they are")

	mu.Lock()
	broken = false
	mu.Unlock()
	moved, err := conn.Redrive(ctx, "q", 100)
	require.NoError(t, err)
	require.Equal(t, 3, moved)
	testkit.Eventually(t, 20*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(handled) == 3
	}, "every redriven message handled")
	mu.Lock()
	for _, m := range []message.Message{crashy, poison, failing} {
		require.Equal(t, 1, handled[m.ID], "%s handled once", m.Type)
	}
	require.Zero(t, handled[other.ID], "the other queue's dead letter was not moved")
	mu.Unlock()
	left, err := conn.DeadLetters(ctx, 10)
	require.NoError(t, err)
	require.Len(t, left, 1)
	require.Equal(t, other.ID, left[0].MessageID)
}

// TestDeadLetterPurgeRemovesExactlyWhatItsFiltersSelect: a purge by request,
// by age and by both removes exactly the dead letters its filter selects,
// each confirmed and counted; a dry run removes nothing; the rest stay.
func TestDeadLetterPurgeRemovesExactlyWhatItsFiltersSelect(t *testing.T) {
	t.Parallel()
	cfg := testkit.AMQP(t)
	conn := dial(t, cfg, bus.Topology{Queues: []bus.Queue{{Name: "q", Bindings: []string{"thing.*"}}}})
	pub := bus.NewPublisher(conn)
	defer pub.Close()
	ctx := t.Context()
	consume(t, conn, bus.ConsumerOptions{Queue: "q"}, func(context.Context, message.Message) error {
		return message.Permanent(errors.New("never handled"))
	})
	deadLetterCount := func() int { return readyCount(t, conn, conn.DeadLetterQueue()) }
	publish := func(correlationID string) message.Message {
		m := newMessage(t, "thing.poison")
		if correlationID != "" {
			m.CorrelationID = correlationID
		}
		require.NoError(t, pub.Publish(ctx, m))
		return m
	}
	a := "req-a-" + testkit.ID()
	a1, a2, b1 := publish(a), publish(a), publish("")
	testkit.Eventually(t, 20*time.Second, func() bool { return deadLetterCount() == 3 }, "first three dead-lettered")
	listed, err := conn.DeadLetters(ctx, 10)
	require.NoError(t, err)
	var latest time.Time
	for _, d := range listed {
		require.False(t, d.At.IsZero(), "x-gdpr-dead-letter-at is set")
		if d.At.After(latest) {
			latest = d.At
		}
	}
	mid := latest.Add(time.Millisecond)
	testkit.Eventually(t, 10*time.Second, func() bool { return time.Now().After(mid.Add(10 * time.Millisecond)) }, "time passes")
	c1, c2 := publish(""), publish("")
	testkit.Eventually(t, 20*time.Second, func() bool { return deadLetterCount() == 5 }, "all five dead-lettered")

	ids := func(dls []bus.DeadLetter) []string {
		var out []string
		for _, d := range dls {
			out = append(out, d.MessageID)
		}
		return out
	}
	steps := []struct {
		name   string
		filter bus.DeadLetterFilter
		dry    bool
		want   []string
		left   int
	}{
		{"dry run by request", bus.DeadLetterFilter{RequestIDs: []string{a}}, true, []string{a1.ID, a2.ID}, 5},
		{"by request", bus.DeadLetterFilter{RequestIDs: []string{a}}, false, []string{a1.ID, a2.ID}, 3},
		{"older than", bus.DeadLetterFilter{DeadLetteredBefore: mid}, false, []string{b1.ID}, 2},
		{"both", bus.DeadLetterFilter{DeadLetteredBefore: time.Now().Add(time.Hour), RequestIDs: []string{c1.CorrelationID}}, false, []string{c1.ID}, 1},
		{"nothing selected", bus.DeadLetterFilter{RequestIDs: []string{"req-none"}}, false, nil, 1},
	}
	for _, st := range steps {
		got, err := conn.PurgeDeadLetters(ctx, st.filter, 100, st.dry)
		require.NoError(t, err, st.name)
		require.ElementsMatch(t, st.want, ids(got), st.name)
		testkit.Eventually(t, 10*time.Second, func() bool { return deadLetterCount() == st.left }, "%s: %d left", st.name, st.left)
	}
	left, err := conn.DeadLetters(ctx, 10)
	require.NoError(t, err)
	require.Equal(t, []string{c2.ID}, ids(left))
}
