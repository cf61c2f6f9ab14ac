package bus_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// oneQueue is the topology most tests use: queue "q" bound to "thing.*".
var oneQueue = bus.Topology{Queues: []bus.Queue{{Name: "q", Bindings: []string{"thing.*"}}}}

// dial connects like testkit.Bus but with options (metrics). The connection
// name contains cfg.Prefix so a test can close exactly its own connections.
func dial(t *testing.T, cfg bus.Config, topo bus.Topology, opts ...bus.Option) *bus.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := bus.Dial(ctx, cfg, "gdpr-test-"+cfg.Prefix, topo, testkit.Logger(t), opts...)
	require.NoError(t, err)
	t.Cleanup(func() {
		testkit.DeleteTopology(t, cfg, topo)
		_ = conn.Close()
	})
	return conn
}

// consume starts a consumer on queue "q" (unless opts names another) and
// stops it when the test ends.
func consume(t *testing.T, conn *bus.Conn, opts bus.ConsumerOptions, h bus.Handler) *bus.Consumer {
	t.Helper()
	if opts.Queue == "" {
		opts.Queue = "q"
	}
	c := bus.NewConsumer(conn, opts, h, testkit.Logger(t))
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	require.NoError(t, c.Start(ctx))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = c.Stop(ctx)
	})
	return c
}

func newMessage(t testing.TB, typ string) message.Message {
	t.Helper()
	m, err := message.New(typ, map[string]string{"k": "v"}, nil)
	require.NoError(t, err)
	m.CorrelationID = "req-" + testkit.ID()
	return m
}

// rawChannel is a plain channel on conn for what the bus API deliberately
// cannot do: publish malformed messages, read the dead-letter queue.
func rawChannel(t *testing.T, conn *bus.Conn) *amqp.Channel {
	t.Helper()
	ch, err := conn.Channel(t.Context())
	require.NoError(t, err)
	t.Cleanup(func() { _ = ch.Close() })
	return ch
}

// giveBack stands in for consumers that die mid-message: times over, it
// takes the next message of queue and hands it back unsettled, so each time
// counts as a delivery that ended without a verdict.
func giveBack(t *testing.T, conn *bus.Conn, queue string, times int) {
	t.Helper()
	ch := rawChannel(t, conn)
	for n := range times {
		testkit.Eventually(t, 10*time.Second, func() bool {
			d, ok, err := ch.Get(conn.QueueName(queue), false)
			require.NoError(t, err)
			if ok {
				require.NoError(t, d.Nack(false, true))
			}
			return ok
		}, "delivery %d", n+1)
	}
}

// deadLetters waits until the dead-letter queue holds n messages and returns them (acked).
func deadLetters(t *testing.T, conn *bus.Conn, n int, timeout time.Duration) []amqp.Delivery {
	t.Helper()
	ch := rawChannel(t, conn)
	var got []amqp.Delivery
	testkit.Eventually(t, timeout, func() bool {
		d, ok, err := ch.Get(conn.DeadLetterQueue(), true)
		require.NoError(t, err)
		if ok {
			got = append(got, d)
		}
		return len(got) >= n
	}, "%d dead letters, have %d", n, len(got))
	return got
}

// readyCount is the number of ready messages in a queue.
func readyCount(t *testing.T, conn *bus.Conn, queue string) int {
	t.Helper()
	ch := rawChannel(t, conn)
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	require.NoError(t, err)
	return q.Messages
}

// counterValue reads one labelled value of a counter from reg.
func counterValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue metrics
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	return 0
}

// recorder collects what a handler saw.
type recorder struct {
	mu   sync.Mutex
	msgs []message.Message
	ids  map[string]int
}

func newRecorder() *recorder { return &recorder{ids: map[string]int{}} }

func (r *recorder) add(m message.Message) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, m)
	r.ids[m.ID]++
	return len(r.msgs)
}

func (r *recorder) all() []message.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]message.Message(nil), r.msgs...)
}

func (r *recorder) seen(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ids[id] > 0
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}
