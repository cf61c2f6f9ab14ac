package erasure_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/erasure"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// BenchmarkErasureThroughput: erasures completed per second with ten SDK
// participants (no-op erase) and the email delay at 0, with p50/p99 from
// erasure.requested to erasure.finished for a burst of 400 (queueing
// included) and for one erasure at a time, next to the bare confirmed-publish
// ceiling of the same broker measured in the same run.
func BenchmarkErasureThroughput(b *testing.B) {
	const erasures = 400
	const participants = 10
	var ps []erasure.Participant
	for i := range participants {
		ps = append(ps, erasure.Participant{Name: fmt.Sprintf("svc%02d", i), Kind: "amqp"})
	}
	h := newHarness(b, ps, func(c *erasure.Config) { c.Concurrency = 32 })
	ceiling := publishCeiling(b, h)

	var mu sync.Mutex
	submitted := map[string]time.Time{}
	single := map[string]chan struct{}{} // one-at-a-time erasures waiting for their finish
	latencies := make([]time.Duration, 0, erasures)
	done := make(chan struct{})
	finished := bus.Queue{Name: "bench.finished", Bindings: []string{event.TypeErasureFinished}}
	require.NoError(b, h.conn.DeclareQueue(context.Background(), finished))
	b.Cleanup(func() { testkit.DeleteTopology(b, h.cfg.AMQP, bus.Topology{Queues: []bus.Queue{finished}}) })
	fin := bus.NewConsumer(h.conn, bus.ConsumerOptions{Queue: finished.Name, Concurrency: 8}, func(_ context.Context, m message.Message) error {
		if m.Type != event.TypeErasureFinished {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		if ch, ok := single[m.CorrelationID]; ok {
			close(ch)
			delete(single, m.CorrelationID)
			return nil
		}
		if t0, ok := submitted[m.CorrelationID]; ok {
			latencies = append(latencies, time.Since(t0))
			delete(submitted, m.CorrelationID)
			if len(latencies) == erasures {
				close(done)
			}
		}
		return nil
	}, h.logger)
	require.NoError(b, fin.Start(context.Background()))
	b.Cleanup(func() { _ = fin.Stop(context.Background()) })

	for _, p := range ps {
		startParticipant(b, h, p.Name, func(context.Context, event.Subject) (string, error) { return event.OutcomeErased, nil }, nil)
	}
	h.startDispatcher()
	h.startCanceller()

	// Pipeline latency without a backlog: one erasure at a time.
	var alone []time.Duration
	for _, s := range newSubjects(20) {
		doneOne := make(chan struct{})
		mu.Lock()
		single[s.RequestID] = doneOne
		mu.Unlock()
		t0 := time.Now()
		h.request(s)
		select {
		case <-doneOne:
			alone = append(alone, time.Since(t0))
		case <-time.After(time.Minute):
			b.Fatal("a single erasure did not finish")
		}
	}
	slices.Sort(alone)

	subjects := newSubjects(erasures)
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for _, s := range subjects {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			m, err := message.New(event.TypeErasureRequested, event.ErasureRequested{RequestID: s.RequestID, Subject: s.Subject}, nil)
			if err != nil {
				b.Error(err)
				return
			}
			m.CorrelationID = s.RequestID
			mu.Lock()
			submitted[s.RequestID] = time.Now()
			mu.Unlock()
			if err := h.pub.Publish(context.Background(), m); err != nil {
				b.Error(err)
			}
		}()
	}
	wg.Wait()
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("only %d of %d erasures finished", len(latencies), erasures)
	}
	elapsed := time.Since(start)
	b.StopTimer()

	slices.Sort(latencies)
	rate := float64(erasures) / elapsed.Seconds()
	// Broker messages per erasure: requested, a command and a confirmation
	// per participant, completed, finished.
	perErasure := float64(2 + 2*participants + 2)
	b.ReportMetric(rate, "erasures/s")
	b.ReportMetric(float64(latencies[len(latencies)/2].Milliseconds()), "p50_ms")
	b.ReportMetric(float64(latencies[len(latencies)*99/100].Milliseconds()), "p99_ms")
	b.ReportMetric(ceiling, "ceiling_publishes/s")
	b.ReportMetric(rate*perErasure/ceiling, "ratio")
	b.ReportMetric(float64(alone[len(alone)/2].Milliseconds()), "alone_p50_ms")
	b.Logf("one at a time: p50 %s, max %s", alone[len(alone)/2], alone[len(alone)-1])
	b.Logf("%d erasures x %d participants: %.1f erasures/s (%.0f broker messages/s), p50 %s, p99 %s; bare confirmed-publish ceiling %.0f msg/s; ratio %.2f",
		erasures, participants, rate, rate*perErasure, latencies[len(latencies)/2], latencies[len(latencies)*99/100], ceiling, rate*perErasure/ceiling)
}

// publishCeiling is how many confirmed publishes per second the broker takes
// from 64 concurrent publishers on this connection, into one queue.
func publishCeiling(b *testing.B, h *harness) float64 {
	const n = 20000
	q := bus.Queue{Name: "ceiling", Bindings: []string{"bench.ceiling"}}
	require.NoError(b, h.conn.DeclareQueue(context.Background(), q))
	b.Cleanup(func() { testkit.DeleteTopology(b, h.cfg.AMQP, bus.Topology{Queues: []bus.Queue{q}}) })
	m, err := message.New("bench.ceiling", map[string]int{"n": 1}, nil)
	require.NoError(b, err)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 64 {
				if err := h.pub.Publish(context.Background(), m); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return n / time.Since(start).Seconds()
}
