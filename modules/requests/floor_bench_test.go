package requests_test

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/smtp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// The broker traffic of one access request, by the queues' bindings:
// request.submitted, request.received, report.ready and notification.sent
// are published once each; the audit queue (bound to #) receives all four,
// worker.requests request.submitted, worker.notify request.received and
// report.ready.
const (
	floorPublishes  = 4
	floorDeliveries = 7
	floorWorkers    = 16
)

// BenchmarkAccessRequestFloor measures what bounds the CPU per access
// request on this machine: a burst of the design's irreducible work alone
// (per request as many bare single-row PostgreSQL commits as
// BenchmarkCPUPerAccessRequest's burst of the same run counted, the four
// confirmed publishes and seven deliveries on bare amqp091, one SMTP message
// on a reused session to Mailpit; 16 workers), summed over the same
// processes, printed beside the achieved figure as a ratio. What the floor
// does not contain (the report's build, HTTP, Redis, JSON, the roles' own
// bookkeeping) is what the design adds over it.
func BenchmarkAccessRequestFloor(b *testing.B) {
	for b.Loop() {
		var achieved burstCost
		b.Run("achieved", func(b *testing.B) {
			for b.Loop() {
				achieved = costOfBurst(b, "")
			}
		})
		commits := int(math.Ceil(achieved.commits))
		var floor float64
		b.Run("floor", func(b *testing.B) {
			for b.Loop() {
				floor = floorOfBurst(b, 300, commits)
			}
		})
		b.ReportMetric(achieved.perReq, "achieved_cpu_ms/request")
		b.ReportMetric(floor, "floor_cpu_ms/request")
		b.ReportMetric(achieved.perReq/floor, "achieved_vs_floor")
		fmt.Printf("access request: achieved %.2f ms CPU, floor %.2f ms (%d commits, %d confirmed publishes, %d deliveries, 1 SMTP message): x%.2f of the floor; load average %s\n",
			achieved.perReq, floor, commits, floorPublishes, floorDeliveries, achieved.perReq/floor, loadAverage())
	}
}

// floorOfBurst runs n requests' worth of bare work and returns its CPU
// milliseconds per request over the benchmark process, the database's
// backends, RabbitMQ and Mailpit.
func floorOfBurst(b *testing.B, n, commits int) float64 {
	ctx := b.Context()
	dsn := testkit.PostgresDSN(b)
	gdb := openDSN(b, dsn)
	require.NoError(b, gdb.Exec(`CREATE TABLE floor (id bigserial PRIMARY KEY, v text NOT NULL)`).Error)
	conns := make([]*pgx.Conn, floorWorkers)
	for i := range conns {
		c, err := pgx.Connect(ctx, dsn)
		require.NoError(b, err)
		b.Cleanup(func() { _ = c.Close(context.Background()) })
		conns[i] = c
	}

	conn, err := amqp.Dial(testkit.AMQP(b).URL)
	require.NoError(b, err)
	b.Cleanup(func() { _ = conn.Close() })
	prefix := "floor-" + testkit.ID()
	exchange := prefix + ".x"
	keys := []string{"request.submitted", "request.received", "report.ready", "notification.sent"}
	setup, err := conn.Channel()
	require.NoError(b, err)
	require.NoError(b, setup.ExchangeDeclare(exchange, "topic", false, true, false, false, nil))
	queues := map[string][]string{prefix + ".audit": {"#"}, prefix + ".work": keys[:3]}
	for q, binds := range queues {
		_, err := setup.QueueDeclare(q, true, false, false, false, amqp.Table{"x-queue-type": "quorum"})
		require.NoError(b, err)
		for _, k := range binds {
			require.NoError(b, setup.QueueBind(q, k, exchange, false, nil))
		}
	}
	b.Cleanup(func() {
		for q := range queues {
			_, _ = setup.QueueDelete(q, false, false, false)
		}
		_ = setup.ExchangeDelete(exchange, false, false)
	})
	var delivered atomic.Int64
	for q := range queues {
		ch, err := conn.Channel()
		require.NoError(b, err)
		require.NoError(b, ch.Qos(64, 0, false))
		d, err := ch.Consume(q, "", false, false, false, false, nil)
		require.NoError(b, err)
		go func() {
			for m := range d {
				_ = m.Ack(false)
				delivered.Add(1)
			}
		}()
	}

	mp := testkit.StartMailpit(b)
	body := "From: gdpr@example.com\r\nTo: subject@example.com\r\nSubject: Your data report is ready\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n\r\n" + strings.Repeat("Your report is ready to download at https://example.com/r/xxxxxxxxxxxxxxxx\r\n", 12)
	sessions := make([]*smtp.Client, floorWorkers)
	for i := range sessions {
		c, err := smtp.Dial(net.JoinHostPort(mp.SMTPHost, strconv.Itoa(mp.SMTPPort)))
		require.NoError(b, err)
		require.NoError(b, c.Hello("floor.invalid"))
		b.Cleanup(func() { _ = c.Quit() })
		sessions[i] = c
	}
	channels := make([]*amqp.Channel, floorWorkers)
	for i := range channels {
		ch, err := conn.Channel()
		require.NoError(b, err)
		require.NoError(b, ch.Confirm(false))
		channels[i] = ch
	}
	payload := []byte(`{"request_id":"01a23726-9c93-74d6-a693-3fd987cd3d00","pad":"` + strings.Repeat("x", 400) + `"}`)

	meter := newCPUMeter(gdb, []string{dbName(b, gdb)}, map[string][]int{
		"rabbitmq": pidsNamed("beam.smp"), "mailpit": {mp.PID},
	})
	meter.start()
	var left atomic.Int64
	left.Store(int64(n))
	var wg sync.WaitGroup
	for w := range floorWorkers {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				for range commits {
					if _, err := conns[w].Exec(ctx, `INSERT INTO floor (v) VALUES ($1)`, "x"); err != nil {
						b.Error(err)
						return
					}
				}
				for _, k := range keys {
					conf, err := channels[w].PublishWithDeferredConfirmWithContext(ctx, exchange, k, true, false,
						amqp.Publishing{ContentType: "application/json", DeliveryMode: amqp.Persistent, Body: payload})
					if err == nil {
						var ok bool
						ok, err = conf.WaitContext(ctx)
						if err == nil && !ok {
							err = fmt.Errorf("publish of %s nacked", k)
						}
					}
					if err != nil {
						b.Error(err)
						return
					}
				}
				if err := sendOne(sessions[w], body); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	testkit.Eventually(b, time.Minute, func() bool { return delivered.Load() >= int64(n*floorDeliveries) }, "every delivery")
	split, wall := meter.finish()
	var total time.Duration
	for _, d := range split {
		total += d
	}
	perReq := total.Seconds() * 1000 / float64(n)
	fmt.Printf("floor of an access request (burst of %d, %.1f/s): %.2f ms CPU; by process (ms): %s\n",
		n, float64(n)/wall.Seconds(), perReq, formatSplit(split, n))
	return perReq
}

// sendOne sends one message on an open SMTP session and leaves it open for
// the next, as the notifier's reused sessions do.
func sendOne(c *smtp.Client, body string) error {
	if err := c.Mail("gdpr@example.com"); err != nil {
		return err
	}
	if err := c.Rcpt("subject@example.com"); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte(body)); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Reset()
}
