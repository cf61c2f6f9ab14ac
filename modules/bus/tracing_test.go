package bus_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/testkit"
	"github.com/gdpr-oss/gdpr/modules/trace"
)

func TestConsumerSpansContinueTheMessagesTrace(t *testing.T) {
	t.Parallel()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })

	conn := dial(t, testkit.AMQP(t), oneQueue)
	pub := bus.NewPublisher(conn)
	defer pub.Close()
	ok, poison := newMessage(t, "thing.ok"), newMessage(t, "thing.poison")

	inHandler := make(chan string, 2)
	c := bus.NewConsumer(conn, bus.ConsumerOptions{Queue: "q"}, func(ctx context.Context, m message.Message) error {
		inHandler <- trace.Traceparent(ctx)
		if m.Type == "thing.poison" {
			return bus.Poison(errors.New("no such thing"))
		}
		return nil
	}, testkit.Logger(t))
	// The role puts its tracer in the context its components start with.
	ctx, cancel := context.WithTimeout(trace.WithTracer(t.Context(), tp.Tracer("test")), 20*time.Second)
	defer cancel()
	require.NoError(t, c.Start(ctx))
	t.Cleanup(func() {
		stop, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = c.Stop(stop)
	})

	require.NoError(t, pub.Publish(t.Context(), ok))
	require.NoError(t, pub.Publish(t.Context(), poison))
	handled := []string{<-inHandler, <-inHandler}
	testkit.Eventually(t, 10*time.Second, func() bool { return len(rec.Ended()) == 2 }, "two handler spans ended")

	for _, s := range rec.Ended() {
		require.Contains(t, handled, trace.Format(s.SpanContext()), "the handler's context carries its span")
		attrs := map[attribute.Key]string{}
		for _, kv := range s.Attributes() {
			attrs[kv.Key] = kv.Value.String()
		}
		m := ok
		if attrs["gdpr.message.type"] == "thing.poison" {
			m = poison
			require.Equal(t, codes.Error, s.Status().Code)
			require.Equal(t, "poison", attrs["error.type"])
		} else {
			require.Equal(t, codes.Unset, s.Status().Code)
		}
		parent, valid := trace.Parse(m.Traceparent)
		require.True(t, valid, m.Traceparent)
		require.Equal(t, "process q", s.Name())
		require.Equal(t, parent.TraceID(), s.SpanContext().TraceID(), "the message's trace")
		require.Equal(t, parent.SpanID(), s.Parent().SpanID(), "the message's span is the parent")
		require.Equal(t, m.ID, attrs["messaging.message.id"])
		require.Equal(t, m.CorrelationID, attrs["gdpr.request_id"])
		require.Equal(t, "q", attrs["messaging.destination.name"])
	}
}
