package bus_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

func TestPublishConsumeRoundTripCarriesEnvelope(t *testing.T) {
	t.Parallel()
	cfg := testkit.AMQP(t)
	topo := bus.Topology{Queues: []bus.Queue{{Name: "q", Bindings: []string{"thing.happened"}}}}
	conn := testkit.Bus(t, cfg, topo)
	pub := bus.NewPublisher(conn)
	defer pub.Close()

	cause, err := message.New("cause", map[string]string{}, nil)
	require.NoError(t, err)
	cause.CorrelationID = "req-1"
	m, err := message.New("thing.happened", map[string]int{"n": 1}, &cause)
	require.NoError(t, err)
	m.Headers = map[string]string{"x-extra": "v"}
	require.NoError(t, pub.Publish(t.Context(), m))

	got := make(chan message.Message, 1)
	c := bus.NewConsumer(conn, bus.ConsumerOptions{Queue: "q"}, func(_ context.Context, m message.Message) error {
		got <- m
		return nil
	}, testkit.Logger(t))
	require.NoError(t, c.Start(t.Context()))
	defer c.Stop(context.Background())

	select {
	case g := <-got:
		require.Equal(t, m.ID, g.ID)
		require.Equal(t, "thing.happened", g.Type)
		require.Equal(t, "req-1", g.CorrelationID)
		require.Equal(t, cause.ID, g.CausationID)
		require.Equal(t, m.Traceparent, g.Traceparent)
		require.WithinDuration(t, m.OccurredAt, g.OccurredAt, time.Millisecond)
		require.Equal(t, "v", g.Headers["x-extra"])
		require.JSONEq(t, `{"n":1}`, string(g.Body))
	case <-time.After(10 * time.Second):
		t.Fatal("message not consumed")
	}
}

func TestUnroutablePublishIsAnError(t *testing.T) {
	t.Parallel()
	cfg := testkit.AMQP(t)
	conn := testkit.Bus(t, cfg, bus.Topology{})
	pub := bus.NewPublisher(conn)
	defer pub.Close()
	m, err := message.New("nobody.listens", struct{}{}, nil)
	require.NoError(t, err)
	require.ErrorIs(t, pub.Publish(t.Context(), m), bus.ErrUnroutable)

	// Routable and unroutable publishes interleaved on the same channels are told apart.
	topo := bus.Topology{Queues: []bus.Queue{{Name: "q", Bindings: []string{"ok"}}}}
	require.NoError(t, conn.DeclareQueue(t.Context(), topo.Queues[0]))
	t.Cleanup(func() { testkit.DeleteTopology(t, cfg, topo) })
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			typ := "ok"
			if i%2 == 1 {
				typ = "nowhere"
			}
			m, err := message.New(typ, struct{}{}, nil)
			require.NoError(t, err)
			err = pub.Publish(t.Context(), m)
			if typ == "ok" {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, bus.ErrUnroutable)
			}
		}()
	}
	wg.Wait()
}
