//go:build disruptive

package bus_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// TestDisruptiveBrokerRestartLosesNothing restarts the shared RabbitMQ
// (stop_app, start_app) during a stream of confirmed publishes.
func TestDisruptiveBrokerRestartLosesNothing(t *testing.T) {
	cfg := testkit.AMQP(t)
	cfg.ConfirmTimeout = 2 * time.Second
	conn := dial(t, cfg, oneQueue)
	pub := bus.NewPublisher(conn)
	defer pub.Close()
	rec := newRecorder()
	consume(t, conn, bus.ConsumerOptions{Concurrency: 8}, func(_ context.Context, m message.Message) error {
		rec.add(m)
		return nil
	})

	s := startPublishing(t, pub, 8)
	const between = 300
	testkit.Eventually(t, 30*time.Second, func() bool { return s.confirmedCount() >= between }, "publishing")
	testkit.RestartRabbitMQ(t)
	before := s.confirmedCount()
	testkit.Eventually(t, 60*time.Second, func() bool { return s.confirmedCount() >= before+between },
		"publishing resumes after the broker restart without a restart of ours")
	s.finish()

	require.Empty(t, s.badErrs, "publish errors are ErrUnconfirmed or ErrNotConnected")
	require.LessOrEqual(t, s.slowest, cfg.ConfirmTimeout+time.Second, "no publish waits past the confirm timeout")
	testkit.Eventually(t, 60*time.Second, func() bool {
		for _, id := range s.confirmed {
			if !rec.seen(id) {
				return false
			}
		}
		return true
	}, "every confirmed message is consumed")
	t.Logf("confirmed %d, failed during the restart %d, slowest publish %s, deliveries %d",
		len(s.confirmed), s.failures, s.slowest, rec.count())
}
