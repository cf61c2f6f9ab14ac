package bus_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/testkit"
	"github.com/gdpr-oss/gdpr/modules/trace"
)

func TestPublishConsumeRoundTripCarriesEnvelope(t *testing.T) {
	t.Parallel()
	cfg := testkit.AMQP(t)
	reg := prometheus.NewRegistry()
	conn := dial(t, cfg, oneQueue, bus.WithMetrics(bus.NewMetrics(reg)))
	pub := bus.NewPublisher(conn)
	defer pub.Close()

	cause, err := message.New("cause", map[string]string{}, nil)
	require.NoError(t, err)
	cause.CorrelationID = "req-1"
	m, err := message.New("thing.happened", map[string]int{"n": 1}, &cause)
	require.NoError(t, err)
	m.Headers = map[string]string{"x-extra": "v"}
	require.NoError(t, pub.Publish(t.Context(), m))
	require.Equal(t, 1.0, counterValue(t, reg, "gdpr_amqp_publish_confirm_seconds", nil))

	type seen struct {
		m                    message.Message
		msgID, reqID, parent string
	}
	got := make(chan seen, 1)
	consume(t, conn, bus.ConsumerOptions{}, func(ctx context.Context, m message.Message) error {
		got <- seen{m, trace.MessageID(ctx), trace.RequestID(ctx), trace.Traceparent(ctx)}
		return nil
	})

	select {
	case g := <-got:
		require.Equal(t, m.ID, g.m.ID)
		require.Equal(t, "thing.happened", g.m.Type)
		require.Equal(t, "thing.happened", g.m.RoutingKey)
		require.Equal(t, "req-1", g.m.CorrelationID)
		require.Equal(t, cause.ID, g.m.CausationID)
		require.Equal(t, m.Traceparent, g.m.Traceparent)
		traceID, ok := trace.TraceID(g.m.Traceparent)
		require.True(t, ok)
		causeTrace, _ := trace.TraceID(cause.Traceparent)
		require.Equal(t, causeTrace, traceID, "a caused message continues its cause's trace")
		require.WithinDuration(t, m.OccurredAt, g.m.OccurredAt, time.Millisecond)
		require.Equal(t, map[string]string{"x-extra": "v"}, g.m.Headers, "only the caller's headers, no bus internals")
		require.JSONEq(t, `{"n":1}`, string(g.m.Body))
		require.False(t, g.m.Redelivered)
		require.Zero(t, g.m.DeliveryCount)
		require.Equal(t, m.ID, g.msgID, "handler context carries the message id")
		require.Equal(t, "req-1", g.reqID, "handler context carries the request id")
		require.Equal(t, m.Traceparent, g.parent)
	case <-time.After(10 * time.Second):
		t.Fatal("message not consumed")
	}
}

func TestUnroutablePublishIsAnError(t *testing.T) {
	t.Parallel()
	cfg := testkit.AMQP(t)
	conn := dial(t, cfg, oneQueue)
	pub := bus.NewPublisher(conn)
	defer pub.Close()
	require.ErrorIs(t, pub.Publish(t.Context(), newMessage(t, "nobody.listens")), bus.ErrUnroutable)

	// Routable and unroutable publishes interleaved on the same channels are told apart.
	var wg sync.WaitGroup
	errs := make([]error, 200)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			typ := "thing.ok"
			if i%2 == 1 {
				typ = "nowhere"
			}
			errs[i] = pub.Publish(t.Context(), newMessage(t, typ))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if i%2 == 0 {
			require.NoError(t, err, "publish %d", i)
		} else {
			require.ErrorIs(t, err, bus.ErrUnroutable, "publish %d", i)
		}
	}
	testkit.Eventually(t, 10*time.Second, func() bool {
		return readyCount(t, conn, conn.QueueName("q")) == 100
	}, "every routable message is in the queue")
}

func TestPoisonMessageIsDeadLetteredWithReason(t *testing.T) {
	t.Parallel()
	cfg := testkit.AMQP(t)
	reg := prometheus.NewRegistry()
	conn := dial(t, cfg, oneQueue, bus.WithMetrics(bus.NewMetrics(reg)))
	pub := bus.NewPublisher(conn)
	defer pub.Close()

	var calls atomic.Int32
	consume(t, conn, bus.ConsumerOptions{}, func(_ context.Context, m message.Message) error {
		calls.Add(1)
		return message.Permanent(errors.New("unknown widget kind"))
	})
	m := newMessage(t, "thing.broken")
	m.CausationID = "cause-1"
	m.Headers = map[string]string{"x-extra": "v"}
	require.NoError(t, pub.Publish(t.Context(), m))

	d := deadLetters(t, conn, 1, 15*time.Second)[0]
	require.Equal(t, m.ID, d.MessageId)
	require.Equal(t, m.Type, d.Type)
	require.Equal(t, m.CorrelationID, d.CorrelationId)
	require.Equal(t, "thing.broken", d.RoutingKey, "the original routing key is kept")
	require.Equal(t, m.Body, d.Body)
	require.Contains(t, d.Headers[bus.HeaderDeadLetterReason], "unknown widget kind")
	require.Equal(t, bus.ReasonPoison, d.Headers[bus.HeaderDeadLetterClass])
	require.Equal(t, "q", d.Headers[bus.HeaderDeadLetterQueue])
	require.Equal(t, "v", d.Headers["x-extra"])
	require.Equal(t, "cause-1", d.Headers[bus.HeaderCausationID])
	require.Equal(t, m.Traceparent, d.Headers[bus.HeaderTraceparent])
	require.Equal(t, int32(1), calls.Load(), "a poison message is not retried")
	testkit.Eventually(t, 5*time.Second, func() bool {
		return counterValue(t, reg, "gdpr_dead_letters_total", map[string]string{"queue": "q", "reason": bus.ReasonPoison}) == 1
	}, "dead letter counted")
	testkit.Eventually(t, 5*time.Second, func() bool { return readyCount(t, conn, conn.QueueName("q")) == 0 }, "queue drained")
}

func TestTransientFailureIsRetriedWithBackoffThenAcked(t *testing.T) {
	t.Parallel()
	cfg := testkit.AMQP(t)
	conn := dial(t, cfg, oneQueue)
	pub := bus.NewPublisher(conn)
	defer pub.Close()

	const backoff = 100 * time.Millisecond
	rec := newRecorder()
	var times sync.Map
	c := consume(t, conn, bus.ConsumerOptions{RetryBackoff: backoff}, func(_ context.Context, m message.Message) error {
		n := rec.add(m)
		times.Store(n, time.Now())
		if n <= 2 {
			return errors.New("database briefly unavailable")
		}
		return nil
	})
	m := newMessage(t, "thing.flaky")
	require.NoError(t, pub.Publish(t.Context(), m))
	testkit.Eventually(t, 15*time.Second, func() bool { return rec.count() >= 3 }, "three deliveries")

	got := rec.all()
	for i, g := range got[:3] {
		require.Equal(t, m.ID, g.ID)
		require.Equal(t, int64(i), g.Retries, "delivery %d", i)
		// A retry is a fresh copy, so the queue's delivery count stays 0.
		require.Zero(t, g.DeliveryCount, "delivery %d", i)
		require.Equal(t, i > 0, !g.FailingSince.IsZero(), "delivery %d", i)
	}
	require.Equal(t, got[1].FailingSince, got[2].FailingSince, "the first failure's time travels with the copies")
	at := func(n int) time.Time { v, _ := times.Load(n); return v.(time.Time) }
	// The consumer waits at least half the (doubling) backoff before retrying.
	require.GreaterOrEqual(t, at(2).Sub(at(1)), backoff/2)
	require.GreaterOrEqual(t, at(3).Sub(at(2)), backoff)

	// Acked: nothing comes back once the consumer is gone, nothing was dead-lettered.
	require.NoError(t, c.Stop(t.Context()))
	require.Equal(t, 3, rec.count())
	require.Zero(t, readyCount(t, conn, conn.QueueName("q")))
	require.Zero(t, readyCount(t, conn, conn.DeadLetterQueue()))
}

// TestOutageLongerThanTheDeliveryLimitLosesNothing: a dependency that stays
// down for many more attempts than the queue's delivery limit must not send
// the message to the dead-letter queue while it is within amqp.retry_for;
// the delivery limit is for messages that kill their consumer.
func TestOutageLongerThanTheDeliveryLimitLosesNothing(t *testing.T) {
	t.Parallel()
	cfg := testkit.AMQP(t)
	cfg.DeliveryLimit = 2
	reg := prometheus.NewRegistry()
	conn := dial(t, cfg, oneQueue, bus.WithMetrics(bus.NewMetrics(reg)))
	pub := bus.NewPublisher(conn)
	defer pub.Close()

	const failures = 8
	rec := newRecorder()
	var done atomic.Int32
	consume(t, conn, bus.ConsumerOptions{RetryBackoff: 5 * time.Millisecond}, func(_ context.Context, m message.Message) error {
		if n := rec.add(m); n <= failures {
			return errors.New("database unavailable")
		}
		done.Add(1)
		return nil
	})
	m := newMessage(t, "thing.outage")
	require.NoError(t, pub.Publish(t.Context(), m))
	testkit.Eventually(t, 30*time.Second, func() bool { return done.Load() == 1 }, "handled once the outage ended")
	require.Equal(t, failures+1, rec.count())
	for _, g := range rec.all() {
		require.Equal(t, m.ID, g.ID, "every attempt is the same message")
	}
	require.Zero(t, readyCount(t, conn, conn.DeadLetterQueue()))
	require.Zero(t, counterValue(t, reg, "gdpr_dead_letters_total", nil))
	// A retry is counted once its copy is confirmed and the original acked;
	// the copy may be handled before that.
	testkit.Eventually(t, 5*time.Second, func() bool {
		return counterValue(t, reg, "gdpr_consumer_retries_total", map[string]string{"queue": "q"}) == failures
	}, "every retry counted")
}

func TestFailingLongerThanRetryForIsDeadLettered(t *testing.T) {
	t.Parallel()
	cfg := testkit.AMQP(t)
	cfg.RetryFor = 300 * time.Millisecond
	reg := prometheus.NewRegistry()
	conn := dial(t, cfg, oneQueue, bus.WithMetrics(bus.NewMetrics(reg)))
	pub := bus.NewPublisher(conn)
	defer pub.Close()

	rec := newRecorder()
	c := consume(t, conn, bus.ConsumerOptions{RetryBackoff: 20 * time.Millisecond}, func(_ context.Context, m message.Message) error {
		rec.add(m)
		return errors.New("always failing")
	})
	m := newMessage(t, "thing.hopeless")
	begin := time.Now()
	require.NoError(t, pub.Publish(t.Context(), m))

	d := deadLetters(t, conn, 1, 15*time.Second)[0]
	require.GreaterOrEqual(t, time.Since(begin), cfg.RetryFor, "not given up before retry_for")
	require.Equal(t, m.ID, d.MessageId)
	require.Equal(t, bus.ReasonRetryExpired, d.Headers[bus.HeaderDeadLetterClass])
	require.Contains(t, d.Headers[bus.HeaderDeadLetterReason], "always failing")
	require.NoError(t, c.Stop(t.Context()))
	require.Greater(t, rec.count(), 2, "retried before giving up")
	require.Zero(t, readyCount(t, conn, conn.QueueName("q")))
	// Counted right after the dead letter is confirmed, which the test may see first.
	testkit.Eventually(t, 5*time.Second, func() bool {
		return counterValue(t, reg, "gdpr_dead_letters_total", map[string]string{"queue": "q", "reason": bus.ReasonRetryExpired}) == 1
	}, "dead letter counted")
}

// TestRedeliveredTooOftenIsDeadLetteredByTheConsumer: a message whose
// deliveries keep ending without a verdict (its consumer crashed, its channel
// closed) is dead-lettered with a reason once the queue's delivery limit is
// reached, before the broker would drop it there silently.
func TestRedeliveredTooOftenIsDeadLetteredByTheConsumer(t *testing.T) {
	t.Parallel()
	cfg := testkit.AMQP(t)
	cfg.DeliveryLimit = 2
	reg := prometheus.NewRegistry()
	conn := dial(t, cfg, oneQueue, bus.WithMetrics(bus.NewMetrics(reg)))
	pub := bus.NewPublisher(conn)
	defer pub.Close()
	m := newMessage(t, "thing.crashy")
	require.NoError(t, pub.Publish(t.Context(), m))

	giveBack(t, conn, "q", cfg.DeliveryLimit)
	var handled atomic.Int32
	consume(t, conn, bus.ConsumerOptions{}, func(context.Context, message.Message) error {
		handled.Add(1)
		return errors.New("would fail again")
	})
	d := deadLetters(t, conn, 1, 15*time.Second)[0]
	require.Equal(t, m.ID, d.MessageId)
	require.Equal(t, bus.ReasonDeliveryLimit, d.Headers[bus.HeaderDeadLetterClass])
	require.Equal(t, int32(1), handled.Load(), "handled once more, then given up")
	// Counted right after the dead letter is confirmed, which the test may see first.
	testkit.Eventually(t, 5*time.Second, func() bool {
		return counterValue(t, reg, "gdpr_dead_letters_total", map[string]string{"queue": "q", "reason": bus.ReasonDeliveryLimit}) == 1
	}, "dead letter counted")
}

// TestBrokerEnforcesDeliveryLimit covers the backstop for a message that kills
// its consumer before the consumer can count it: the queue itself
// dead-letters it after the delivery limit.
func TestBrokerEnforcesDeliveryLimit(t *testing.T) {
	t.Parallel()
	cfg := testkit.AMQP(t)
	cfg.DeliveryLimit = 2
	conn := dial(t, cfg, oneQueue)
	pub := bus.NewPublisher(conn)
	defer pub.Close()
	m := newMessage(t, "thing.crashy")
	require.NoError(t, pub.Publish(t.Context(), m))

	giveBack(t, conn, "q", cfg.DeliveryLimit+1)
	d := deadLetters(t, conn, 1, 15*time.Second)[0]
	require.Equal(t, m.ID, d.MessageId)
	require.Equal(t, "delivery_limit", d.Headers["x-first-death-reason"])
}

func TestMalformedMessagesAreDeadLettered(t *testing.T) {
	t.Parallel()
	cfg := testkit.AMQP(t)
	reg := prometheus.NewRegistry()
	conn := dial(t, cfg, oneQueue, bus.WithMetrics(bus.NewMetrics(reg)))
	var calls atomic.Int32
	consume(t, conn, bus.ConsumerOptions{}, func(context.Context, message.Message) error {
		calls.Add(1)
		return nil
	})
	cases := []struct {
		name   string
		pub    amqp.Publishing
		reason string
	}{
		{"body not JSON", amqp.Publishing{MessageId: "m-1", Type: "thing.x", Body: []byte("{not json")}, "body is not JSON"},
		{"no message_id", amqp.Publishing{Type: "thing.x", Body: []byte(`{}`)}, "missing message_id"},
		{"no type", amqp.Publishing{MessageId: "m-3", Body: []byte(`{}`)}, "missing type"},
	}
	ch := rawChannel(t, conn)
	for _, tc := range cases {
		tc.pub.Headers = amqp.Table{"x-case": tc.name}
		require.NoError(t, ch.PublishWithContext(t.Context(), conn.Exchange(), "thing.x", true, false, tc.pub))
	}
	got := map[string]amqp.Delivery{}
	for _, d := range deadLetters(t, conn, len(cases), 15*time.Second) {
		got[d.Headers["x-case"].(string)] = d
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, ok := got[tc.name]
			require.True(t, ok)
			require.Equal(t, bus.ReasonMalformed, d.Headers[bus.HeaderDeadLetterClass])
			require.Equal(t, tc.reason, d.Headers[bus.HeaderDeadLetterReason])
			require.Equal(t, tc.pub.Body, d.Body, "kept as it came, for inspection")
		})
	}
	require.Zero(t, calls.Load(), "the handler never sees a malformed message")
	testkit.Eventually(t, 5*time.Second, func() bool {
		return counterValue(t, reg, "gdpr_dead_letters_total", map[string]string{"queue": "q", "reason": bus.ReasonMalformed}) == float64(len(cases))
	}, "dead letters counted")
}

func TestDuplicateDeliveriesAreVisibleToTheHandler(t *testing.T) {
	t.Parallel()
	cfg := testkit.AMQP(t)
	conn := dial(t, cfg, oneQueue)
	pub := bus.NewPublisher(conn)
	defer pub.Close()

	rec := newRecorder()
	consume(t, conn, bus.ConsumerOptions{RetryBackoff: 10 * time.Millisecond}, func(_ context.Context, m message.Message) error {
		if rec.add(m) == 1 {
			return errors.New("fail the first delivery once")
		}
		return nil
	})
	m := newMessage(t, "thing.twice")
	// The same message published twice (an outbox re-publish after an unknown outcome).
	require.NoError(t, pub.Publish(t.Context(), m))
	require.NoError(t, pub.Publish(t.Context(), m))
	testkit.Eventually(t, 15*time.Second, func() bool { return rec.count() == 3 }, "two copies, one retried")

	var retried int
	for _, g := range rec.all() {
		require.Equal(t, m.ID, g.ID, "every copy carries the same message id")
		if g.Retries > 0 {
			retried++
			require.Equal(t, int64(1), g.Retries)
			require.False(t, g.FailingSince.IsZero())
		}
	}
	require.Equal(t, 1, retried)
}

func TestStopDrainsInFlightHandlers(t *testing.T) {
	t.Parallel()
	cfg := testkit.AMQP(t)
	conn := dial(t, cfg, oneQueue)
	pub := bus.NewPublisher(conn)
	defer pub.Close()

	started := make(chan string, 2)
	release := make(chan struct{})
	rec := newRecorder()
	c := consume(t, conn, bus.ConsumerOptions{Concurrency: 2}, func(ctx context.Context, m message.Message) error {
		started <- m.Type
		if m.Type == "thing.stuck" {
			<-ctx.Done() // only the drain deadline ends it
			return ctx.Err()
		}
		<-release
		rec.add(m)
		return nil
	})
	require.NoError(t, pub.Publish(t.Context(), newMessage(t, "thing.slow")))
	require.NoError(t, pub.Publish(t.Context(), newMessage(t, "thing.stuck")))
	<-started
	<-started

	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		stopped <- c.Stop(ctx)
	}()
	close(release)
	err := <-stopped
	require.ErrorIs(t, err, context.DeadlineExceeded, "the stuck handler outlived the drain bound")
	require.Zero(t, c.Running(), "Stop returned only once every handler had")
	require.Equal(t, 1, rec.count(), "the slow handler finished during the drain")
	testkit.Eventually(t, 5*time.Second, func() bool {
		return readyCount(t, conn, conn.QueueName("q")) == 1
	}, "the aborted message is back in the queue, the finished one acked")
}
