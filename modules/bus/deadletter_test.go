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
