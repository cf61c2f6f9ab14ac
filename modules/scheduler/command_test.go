package scheduler_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/scheduler"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// commands starts the scheduler-queue consumer as the role does, one
// command at a time so that tests can rely on order.
func (f *fixture) commands(t testing.TB) {
	t.Helper()
	h := scheduler.NewCommands(f.db, f.store, f.conn, scheduler.NewMetrics(prometheus.NewRegistry()), testkit.Logger(t))
	c := bus.NewConsumer(f.conn, bus.ConsumerOptions{Queue: "scheduler", Concurrency: 1}, h.Handle, testkit.Logger(t))
	require.NoError(t, c.Start(t.Context()))
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
}

func command(typ, body string) message.Message {
	return message.Message{ID: uuid.NewString(), Type: typ, OccurredAt: time.Now(), Body: []byte(body)}
}

func TestBadScheduleCommandsAreDeadLetteredAndGoodOneBehindThemIsScheduled(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	s := f.sink(t)
	f.commands(t)
	f.dispatcher(t, scheduler.DispatcherOptions{})
	ctx := t.Context()
	pub := bus.NewPublisher(f.conn)
	t.Cleanup(func() { _ = pub.Close() })

	var mu sync.Mutex
	reasons := map[string]string{}
	// Read dead letters raw: a gdpr consumer would dead-letter the bad JSON again.
	ch, err := f.conn.Channel(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = ch.Close() })
	deliveries, err := ch.Consume(f.conn.DeadLetterQueue(), "", true, false, false, false, nil)
	require.NoError(t, err)
	go func() {
		for d := range deliveries {
			mu.Lock()
			reasons[d.MessageId], _ = d.Headers[bus.HeaderDeadLetterReason].(string)
			mu.Unlock()
		}
	}()

	at := time.Now().Format(time.RFC3339Nano)
	bad := []struct {
		name, typ, body, reason string
	}{
		{"bad json", event.TypeSchedulerSchedule, `{"key": "k1",`, "not JSON"},
		{"missing key", event.TypeSchedulerSchedule, `{"deliver_at":"` + at + `","routing_key":"due.test","body":"e30="}`, "key is missing"},
		{"missing routing key", event.TypeSchedulerSchedule, `{"key":"k3","deliver_at":"` + at + `","body":"e30="}`, "routing_key is missing"},
		{"missing time", event.TypeSchedulerSchedule, `{"key":"k4","routing_key":"due.test","body":"e30="}`, "deliver_at is missing"},
		{"bad time", event.TypeSchedulerSchedule, `{"key":"k5","deliver_at":"tomorrow","routing_key":"due.test","body":"e30="}`, "decoding"},
		{"missing body", event.TypeSchedulerSchedule, `{"key":"k6","deliver_at":"` + at + `","routing_key":"due.test"}`, "body is missing"},
		{"unknown exchange", event.TypeSchedulerSchedule, `{"key":"k7","deliver_at":"` + at + `","exchange":"` + f.amqp.Prefix + `.nope","routing_key":"due.test","body":"e30="}`, "does not exist"},
		{"cancel without key", event.TypeSchedulerCancel, `{}`, "key is missing"},
	}
	var ids []string
	for _, b := range bad {
		m := command(b.typ, b.body)
		ids = append(ids, m.ID)
		require.NoError(t, pub.Publish(ctx, m), b.name)
	}
	// An unknown type that still reaches the queue.
	odd := command("scheduler.reschedule", `{}`)
	odd.RoutingKey = event.TypeSchedulerSchedule
	require.NoError(t, pub.Publish(ctx, odd))

	payload := dueMessage(t, 1, time.Time{})
	goodBody, err := json.Marshal(event.SchedulerSchedule{Key: "good", DeliverAt: time.Now().Add(-time.Minute), RoutingKey: dueType, Body: payload.Body})
	require.NoError(t, err)
	good := command(event.TypeSchedulerSchedule, string(goodBody))
	require.NoError(t, pub.Publish(ctx, good))

	testkit.Eventually(t, 15*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(reasons) == len(bad)+1
	}, "every bad command dead-lettered")
	mu.Lock()
	for i, b := range bad {
		require.Contains(t, reasons[ids[i]], b.reason, b.name)
	}
	require.Contains(t, reasons[odd.ID], "unknown message type")
	_, goodDead := reasons[good.ID]
	mu.Unlock()
	require.False(t, goodDead)

	// The good one was scheduled (deliver_at in the past = now) and published.
	testkit.Eventually(t, 10*time.Second, func() bool {
		st, err := f.store.Get(ctx, "good")
		return err == nil && st.State == "sent"
	}, "good command scheduled and sent")
	st, err := f.store.Get(ctx, "good")
	require.NoError(t, err)
	testkit.Eventually(t, 10*time.Second, func() bool { return s.count(st.MessageID) == 1 }, "good message consumed")
	for _, key := range []string{"k1", "k3", "k4", "k5", "k6", "k7"} {
		_, err := f.store.Get(ctx, key)
		require.ErrorIs(t, err, scheduler.ErrNotFound, key)
	}

	// A redelivered command changes nothing (inbox): schedule "later",
	// cancel it, then re-send the original schedule command.
	laterBody, err := json.Marshal(event.SchedulerSchedule{Key: "later", DeliverAt: time.Now().Add(time.Hour), RoutingKey: dueType, Body: payload.Body})
	require.NoError(t, err)
	later := command(event.TypeSchedulerSchedule, string(laterBody))
	require.NoError(t, pub.Publish(ctx, later))
	testkit.Eventually(t, 10*time.Second, func() bool { _, err := f.store.Get(ctx, "later"); return err == nil }, "later scheduled")
	cancel := command(event.TypeSchedulerCancel, `{"key":"later"}`)
	require.NoError(t, pub.Publish(ctx, cancel))
	testkit.Eventually(t, 10*time.Second, func() bool { _, err := f.store.Get(ctx, "later"); return err != nil }, "later cancelled")
	require.NoError(t, pub.Publish(ctx, later))
	marker := command(event.TypeSchedulerSchedule, string(laterBody))
	markerBody, err := json.Marshal(event.SchedulerSchedule{Key: "marker", DeliverAt: time.Now().Add(time.Hour), RoutingKey: dueType, Body: payload.Body})
	require.NoError(t, err)
	marker.Body = markerBody
	require.NoError(t, pub.Publish(ctx, marker))
	// Commands are handled one at a time, in order: once the marker is
	// stored, the duplicate before it was handled.
	testkit.Eventually(t, 10*time.Second, func() bool { _, err := f.store.Get(ctx, "marker"); return err == nil }, "marker handled")
	_, err = f.store.Get(ctx, "later")
	require.ErrorIs(t, err, scheduler.ErrNotFound, "a redelivered command scheduled again")
}
