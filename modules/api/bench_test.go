package api_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

const (
	benchClients  = 64
	benchRequests = 4000
)

// BenchmarkIntake measures POST /v1/requests accepted per second at 64
// concurrent clients against the bare ceiling of the same broker measured in
// the same run: amqp091 confirmed publishes of the same message from 64
// goroutines over as many confirm channels as the server uses. For scale it
// also prints the HTTP ceiling of the same server and client: 64 clients
// doing the cheapest round trip there is (an unmatched path, 404), and the
// two composed: that round trip followed by a bare confirmed publish, the
// least any accepted submission costs when client, server, broker and Redis
// share the machine's cores.
func BenchmarkIntake(b *testing.B) {
	h := newHarness(b, harnessOptions{noValidation: true, discardLogs: true})
	for range b.N {
		h.purge()
		// Warm connections and channels on both paths.
		bareConfirmedPublishes(b, h, benchClients, 500)
		intakePosts(b, h, benchClients, 500, true)
		h.purge()

		ceiling1 := bareConfirmedPublishes(b, h, benchClients, benchRequests)
		h.purge()
		keyed, lat := intakePosts(b, h, benchClients, benchRequests, true)
		h.purge()
		keyless, latKeyless := intakePosts(b, h, benchClients, benchRequests, false)
		h.purge()
		ceiling2 := bareConfirmedPublishes(b, h, benchClients, benchRequests)
		h.purge()
		httpCeiling := httpRoundTrips(b, h, benchClients, benchRequests)
		composed := httpThenBarePublishes(b, h, benchClients, benchRequests)
		h.purge()
		// The better ceiling makes the ratio conservative.
		ceiling := max(ceiling1, ceiling2)

		b.ReportMetric(keyed, "accepted/s")
		b.ReportMetric(ceiling, "ceiling_publishes/s")
		b.ReportMetric(keyed/ceiling, "ratio")
		b.ReportMetric(percentile(lat, 0.50).Seconds()*1000, "p50_ms")
		b.ReportMetric(percentile(lat, 0.99).Seconds()*1000, "p99_ms")
		b.ReportMetric(keyless/ceiling, "ratio_no_idempotency_key")
		b.ReportMetric(httpCeiling, "http_roundtrips/s")
		b.ReportMetric(composed, "http_then_publish/s")
		b.ReportMetric(keyed/composed, "ratio_vs_http_then_publish")
		b.Logf("intake %d clients: %.0f accepted/s with Idempotency-Key (p50 %s, p99 %s), %.0f/s without (p99 %s); "+
			"bare amqp091 confirmed-publish ceiling %.0f/s (runs: %.0f, %.0f); ratio %.2f (target >= 0.70), without key %.2f; "+
			"bare HTTP round trips on the same server %.0f/s; a bare HTTP round trip then a bare confirmed publish %.0f/s "+
			"(%.2f of the publish ceiling; intake is %.2f of it with key, %.2f without)",
			benchClients, keyed, percentile(lat, 0.5).Round(10*time.Microsecond), percentile(lat, 0.99).Round(10*time.Microsecond),
			keyless, percentile(latKeyless, 0.99).Round(10*time.Microsecond), ceiling, ceiling1, ceiling2, keyed/ceiling, keyless/ceiling,
			httpCeiling, composed, composed/ceiling, keyed/composed, keyless/composed)
	}
}

func (h *harness) purge() {
	h.t.Helper()
	ch, err := h.bus.Channel(context.Background())
	require.NoError(h.t, err)
	defer ch.Close()
	_, err = ch.QueuePurge(h.bus.QueueName(requestsQueue), false)
	require.NoError(h.t, err)
}

// intakePosts sends n POSTs from clients goroutines and returns accepted/s
// and each request's latency.
func intakePosts(b *testing.B, h *harness, clients, n int, withKey bool) (float64, []time.Duration) {
	var next atomic.Int64
	lat := make([]time.Duration, n)
	var failed atomic.Int64
	run := testkit.ID()
	var wg sync.WaitGroup
	begin := time.Now()
	for c := range clients {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				body := fmt.Sprintf(`{"type":"access","subject":{"id":"bench-%d-%d","email":"bench%d@example.com"}}`, c, i, i)
				req, _ := http.NewRequest(http.MethodPost, h.base+"/v1/requests", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer "+h.token)
				if withKey {
					req.Header.Set("Idempotency-Key", fmt.Sprintf("%s-%d", run, i))
				}
				t0 := time.Now()
				res, err := h.client.Do(req)
				if err != nil {
					failed.Add(1)
					continue
				}
				_, _ = drain(res)
				lat[i] = time.Since(t0)
				if res.StatusCode != http.StatusAccepted {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(begin)
	require.Zero(b, failed.Load(), "every submission is accepted")
	return float64(n) / elapsed.Seconds(), lat
}

func drain(res *http.Response) (int64, error) {
	defer res.Body.Close()
	var buf [512]byte
	var total int64
	for {
		n, err := res.Body.Read(buf[:])
		total += int64(n)
		if err != nil {
			return total, nil
		}
	}
}

// bareConfirmedPublishes is the ceiling: raw amqp091, no HTTP, no Redis;
// clients goroutines publish request.submitted messages like the server's and
// each waits for its own confirm.
func bareConfirmedPublishes(b *testing.B, h *harness, clients, n int) float64 {
	return bareConfirmedPublishesAfter(b, h, clients, n, nil)
}

// httpThenBarePublishes is the ceiling of the work a submission cannot
// avoid: per request, the cheapest HTTP round trip on the same server (an
// unmatched path) followed by a bare amqp091 confirmed publish.
func httpThenBarePublishes(b *testing.B, h *harness, clients, n int) float64 {
	return bareConfirmedPublishesAfter(b, h, clients, n, func() error {
		res, err := h.client.Get(h.base + "/v1/ceiling")
		if err != nil {
			return err
		}
		_, _ = drain(res)
		if res.StatusCode != http.StatusNotFound {
			return fmt.Errorf("ceiling round trip: status %d", res.StatusCode)
		}
		return nil
	})
}

// bareConfirmedPublishesAfter runs before (when set) ahead of each publish.
func bareConfirmedPublishesAfter(b *testing.B, h *harness, clients, n int, before func() error) float64 {
	conn, err := amqp.Dial(h.amqp.URL)
	require.NoError(b, err)
	defer conn.Close()
	chans := make([]*amqp.Channel, h.amqp.PublishChannels)
	for i := range chans {
		ch, err := conn.Channel()
		require.NoError(b, err)
		require.NoError(b, ch.Confirm(false))
		chans[i] = ch
	}
	var next atomic.Int64
	var failed atomic.Int64
	var wg sync.WaitGroup
	begin := time.Now()
	for c := range clients {
		wg.Go(func() {
			ch := chans[c%len(chans)]
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if before != nil {
					if err := before(); err != nil {
						failed.Add(1)
						continue
					}
				}
				m, err := message.New(event.TypeRequestSubmitted, event.RequestSubmitted{
					RequestID: testkit.ID(), Type: "access",
					Subject:     event.Subject{ID: fmt.Sprintf("bench-%d-%d", c, i), Email: fmt.Sprintf("bench%d@example.com", i)},
					SubmittedAt: time.Now().UTC(),
				}, nil)
				if err != nil {
					failed.Add(1)
					continue
				}
				dc, err := ch.PublishWithDeferredConfirmWithContext(context.Background(), h.bus.Exchange(), m.Key(), true, false, amqp.Publishing{
					Headers:      amqp.Table{"traceparent": m.Traceparent, "occurred_at": m.OccurredAt.Format(time.RFC3339Nano)},
					ContentType:  "application/json",
					DeliveryMode: amqp.Persistent,
					MessageId:    m.ID, CorrelationId: m.ID, Type: m.Type, Timestamp: m.OccurredAt,
					Body: m.Body,
				})
				if err != nil {
					failed.Add(1)
					continue
				}
				if ok, err := dc.WaitContext(context.Background()); err != nil || !ok {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(begin)
	require.Zero(b, failed.Load(), "every bare publish is confirmed")
	return float64(n) / elapsed.Seconds()
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// httpRoundTrips is the HTTP ceiling: n requests for an unmatched path
// (routing, metrics, access log, 404 JSON) from clients goroutines.
func httpRoundTrips(b *testing.B, h *harness, clients, n int) float64 {
	var next atomic.Int64
	var failed atomic.Int64
	var wg sync.WaitGroup
	begin := time.Now()
	for range clients {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				req, _ := http.NewRequest(http.MethodGet, h.base+"/v1/ceiling", nil)
				res, err := h.client.Do(req)
				if err != nil {
					failed.Add(1)
					continue
				}
				_, _ = drain(res)
				if res.StatusCode != http.StatusNotFound {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(begin)
	require.Zero(b, failed.Load())
	return float64(n) / elapsed.Seconds()
}
