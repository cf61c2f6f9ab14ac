package bus_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/testkit"
	"github.com/gdpr-oss/gdpr/modules/trace"
)

// The consumer runs every handler inside its middleware: the message's
// trace is in the context, a panic is retried like any failure (not a
// crash), and a module's own middleware (here PermanentOn) decides which of
// its errors dead-letter the message.
func TestConsumerRunsHandlersThroughItsMiddleware(t *testing.T) {
	t.Parallel()
	cfg := testkit.AMQP(t)
	conn := dial(t, cfg, oneQueue)
	pub := bus.NewPublisher(conn)
	defer pub.Close()

	errUnknown := errors.New("unknown widget")
	rec := newRecorder()
	traced := make(chan string, 4)
	consume(t, conn, bus.ConsumerOptions{
		RetryBackoff: 20 * time.Millisecond,
		Middleware:   []message.Middleware{message.PermanentOn(errUnknown)},
	}, func(ctx context.Context, m message.Message) error {
		n := rec.add(m)
		traced <- trace.MessageID(ctx) + " " + trace.RequestID(ctx)
		switch {
		case m.Type == "thing.unknown":
			return errUnknown
		case n == 1:
			panic("nil map")
		}
		return nil
	})

	m := newMessage(t, "thing.panics")
	require.NoError(t, pub.Publish(t.Context(), m))
	testkit.Eventually(t, 15*time.Second, func() bool { return rec.count() == 2 }, "the panicking message is tried again")
	require.Equal(t, m.ID+" "+m.CorrelationID, <-traced, "the handler's context carries the message's trace")

	bad := newMessage(t, "thing.unknown")
	require.NoError(t, pub.Publish(t.Context(), bad))
	d := deadLetters(t, conn, 1, 15*time.Second)[0]
	require.Equal(t, bad.ID, d.MessageId, "only the module's permanent error is dead-lettered")
	require.Equal(t, bus.ReasonPoison, d.Headers[bus.HeaderDeadLetterClass])
	require.Contains(t, d.Headers[bus.HeaderDeadLetterReason], "unknown widget")
	testkit.Eventually(t, 5*time.Second, func() bool { return readyCount(t, conn, conn.QueueName("q")) == 0 }, "queue drained")
	require.Equal(t, 3, rec.count(), "panicked once, then acked; the unknown one was not retried")
}
