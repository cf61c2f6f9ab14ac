package bus_test

import (
	"errors"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// TestSharedQueueDeclarations: a shared queue is declared without a
// delivery limit, accepts one set by someone else (an earlier gdpr, a
// participant), and still refuses other differences, naming the queue, the
// argument and the fix; the queue is bound either way.
func TestSharedQueueDeclarations(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		existing func(prefix string) amqp.Table
		refused  string // the argument named, "" when accepted
	}{
		{"delivery limit set by an earlier gdpr", func(p string) amqp.Table {
			return amqp.Table{"x-queue-type": "quorum", "x-delivery-limit": int64(20), "x-dead-letter-exchange": p + ".dlx"}
		}, ""},
		{"delivery limit set by a participant", func(p string) amqp.Table {
			return amqp.Table{"x-queue-type": "quorum", "x-delivery-limit": int32(3), "x-dead-letter-exchange": p + ".dlx"}
		}, ""},
		{"delivery limit and another dead-letter exchange", func(p string) amqp.Table {
			return amqp.Table{"x-queue-type": "quorum", "x-delivery-limit": int64(20), "x-dead-letter-exchange": p + ".other"}
		}, "x-dead-letter-exchange"},
		{"classic queue", func(p string) amqp.Table {
			return amqp.Table{"x-queue-type": "classic", "x-dead-letter-exchange": p + ".dlx"}
		}, "x-queue-type"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := testkit.AMQP(t)
			shared := bus.Queue{Name: "participant.p", Bindings: []string{"erasure.command.p"}, Shared: true}
			conn := dial(t, cfg, bus.Topology{Queues: []bus.Queue{shared}})
			ch, err := conn.Channel(t.Context())
			require.NoError(t, err)
			name := conn.QueueName(shared.Name)
			_, err = ch.QueueDelete(name, false, false, false)
			require.NoError(t, err)
			_, err = ch.QueueDeclare(name, true, false, false, false, tc.existing(cfg.Prefix))
			require.NoError(t, err)
			require.NoError(t, ch.Close())

			err = conn.DeclareQueue(t.Context(), shared)
			if tc.refused == "" {
				require.NoError(t, err)
			} else {
				var m *bus.MismatchError
				require.ErrorAs(t, err, &m)
				require.True(t, errors.Is(err, bus.ErrQueueMismatch))
				require.Equal(t, name, m.Queue)
				require.Equal(t, tc.refused, m.Argument)
				require.Contains(t, err.Error(), "rabbitmqctl delete_queue "+name)
			}
			// Bound in both cases: a command published now is routable.
			pub := bus.NewPublisher(conn)
			t.Cleanup(func() { _ = pub.Close() })
			require.NoError(t, pub.Publish(t.Context(), newMessage(t, "erasure.command.p")))
		})
	}
}
