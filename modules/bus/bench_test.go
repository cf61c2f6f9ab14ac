package bus_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

const (
	benchPublishers = 64
	benchBodyBytes  = 512
	// benchMessages per measured phase, whatever b.N is: `make bench` runs
	// every benchmark once (-benchtime 1x).
	benchMessages = 2500
)

// BenchmarkPublishConfirmed compares confirmed publishes/s through
// bus.Publisher with a bare amqp091-go loop doing the same work: 64
// concurrent publishers, ~512 B bodies, persistent, mandatory, one confirm
// awaited per publish, over the same number of confirm-mode channels, into
// the same queue. Phases alternate (ABBA BAAB) so that drift in the
// broker's speed, or in the load of a shared machine, falls on both alike.
func BenchmarkPublishConfirmed(b *testing.B) {
	cfg := testkit.AMQP(b)
	topo := bus.Topology{Queues: []bus.Queue{{Name: "bench", Bindings: []string{"bench.published"}}}}
	conn := testkit.Bus(b, cfg, topo)
	pub := bus.NewPublisher(conn)
	defer pub.Close()

	body := `{"pad":"` + strings.Repeat("x", benchBodyBytes-10) + `"}`
	template, err := message.New("bench.published", map[string]string{}, nil)
	require.NoError(b, err)
	template.Body = []byte(body)
	template.CorrelationID = "bench"

	bare := newBarePublisher(b, conn, cfg.PublishChannels)
	admin, err := conn.Channel(b.Context())
	require.NoError(b, err)
	defer admin.Close()
	purge := func() {
		_, err := admin.QueuePurge(conn.QueueName("bench"), false)
		require.NoError(b, err)
	}

	var busTime, bareTime time.Duration
	b.ResetTimer()
	for range b.N {
		for _, phase := range []string{"bare", "bus", "bus", "bare", "bus", "bare", "bare", "bus"} {
			var took time.Duration
			if phase == "bus" {
				took = runPublishers(b, func(ctx context.Context) error {
					m := template
					m.ID = testkit.ID()
					return pub.Publish(ctx, m)
				})
				busTime += took
			} else {
				took = runPublishers(b, func(ctx context.Context) error {
					return bare.publish(ctx, conn.Exchange(), template)
				})
				bareTime += took
			}
			b.StopTimer()
			purge()
			b.StartTimer()
		}
	}
	b.StopTimer()
	n := float64(4 * benchMessages * b.N)
	busRate := n / busTime.Seconds()
	bareRate := n / bareTime.Seconds()
	b.ReportMetric(busRate, "bus_publishes/s")
	b.ReportMetric(bareRate, "bare_publishes/s")
	b.ReportMetric(busRate/bareRate, "ratio")
	fmt.Printf("BenchmarkPublishConfirmed: %d publishers, %d B bodies, %d channels: bus.Publisher %.0f confirmed/s, bare amqp091 %.0f confirmed/s, ratio %.2f (target >= 0.8)\n",
		benchPublishers, benchBodyBytes, cfg.PublishChannels, busRate, bareRate, busRate/bareRate)
}

// runPublishers publishes benchMessages with benchPublishers goroutines and
// returns the wall time.
func runPublishers(b *testing.B, publish func(context.Context) error) time.Duration {
	var left atomic.Int64
	left.Store(benchMessages)
	var failed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range benchPublishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for left.Add(-1) >= 0 {
				if err := publish(context.Background()); err != nil {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	require.Zero(b, failed.Load(), "publishes failed")
	return took
}

// barePublisher is the ceiling: amqp091-go's own deferred confirms on
// shared confirm-mode channels, nothing else.
type barePublisher struct {
	chans []*amqp.Channel
	next  atomic.Uint64
	conf  time.Duration
}

func newBarePublisher(b *testing.B, conn *bus.Conn, n int) *barePublisher {
	p := &barePublisher{conf: conn.Config().ConfirmTimeout}
	for range n {
		ch, err := conn.Channel(b.Context())
		require.NoError(b, err)
		require.NoError(b, ch.Confirm(false))
		b.Cleanup(func() { _ = ch.Close() })
		p.chans = append(p.chans, ch)
	}
	return p
}

func (p *barePublisher) publish(ctx context.Context, exchange string, m message.Message) error {
	ctx, cancel := context.WithTimeout(ctx, p.conf)
	defer cancel()
	ch := p.chans[p.next.Add(1)%uint64(len(p.chans))]
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, exchange, m.Key(), true, false, amqp.Publishing{
		Headers: amqp.Table{
			bus.HeaderOccurredAt:  m.OccurredAt.Format(time.RFC3339Nano),
			bus.HeaderTraceparent: m.Traceparent,
		},
		ContentType:   "application/json",
		DeliveryMode:  amqp.Persistent,
		MessageId:     testkit.ID(),
		CorrelationId: m.CorrelationID,
		Type:          m.Type,
		Timestamp:     m.OccurredAt,
		Body:          m.Body,
	})
	if err != nil {
		return err
	}
	ok, err := dc.WaitContext(ctx)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("nacked")
	}
	return nil
}
