package erasure_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"
)

// erasureFloor is the least one erasure with ten participants can cost
// here, done n times with nothing of gdpr: its broker messages (23 confirmed
// persistent publishes, 25 acknowledged deliveries from quorum queues, as
// the burst's messages are) on bare amqp091, and commitsPer single-row
// INSERT commits on bare pgx. It returns the CPU ms per erasure over this
// process, RabbitMQ and the database's backends.
func erasureFloor(b *testing.B, h *harness, n, commitsPer int) float64 {
	const publishes, twice = 23, 2 // two of them reach two queues: 25 deliveries
	conn, err := amqp.Dial(h.cfg.AMQP.URL)
	require.NoError(b, err)
	defer conn.Close()
	setup, err := conn.Channel()
	require.NoError(b, err)
	q1, q2 := h.cfg.AMQP.Prefix+".floor1", h.cfg.AMQP.Prefix+".floor2"
	quorum := amqp.Table{"x-queue-type": "quorum"}
	for _, q := range []string{q1, q2} {
		_, err := setup.QueueDeclare(q, true, false, false, false, quorum)
		require.NoError(b, err)
		defer func() { _, _ = setup.QueueDelete(q, false, false, false) }()
	}
	require.NoError(b, setup.QueueBind(q1, q1+".a", "amq.direct", false, nil))
	require.NoError(b, setup.QueueBind(q1, q1+".b", "amq.direct", false, nil))
	require.NoError(b, setup.QueueBind(q2, q1+".b", "amq.direct", false, nil))

	pool, err := pgxpool.New(context.Background(), h.cfg.Postgres.DSN)
	require.NoError(b, err)
	defer pool.Close()
	_, err = pool.Exec(context.Background(), `CREATE TABLE IF NOT EXISTS bench_floor (id bigserial PRIMARY KEY, v text NOT NULL)`)
	require.NoError(b, err)

	var dbName string
	require.NoError(b, pool.QueryRow(context.Background(), `SELECT current_database()`).Scan(&dbName))
	backends := func() []int {
		rows, err := pool.Query(context.Background(), `SELECT pid FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'`, dbName)
		require.NoError(b, err)
		defer rows.Close()
		var pids []int
		for rows.Next() {
			var pid int
			require.NoError(b, rows.Scan(&pid))
			pids = append(pids, pid)
		}
		return pids
	}
	pids := append([]int{os.Getpid()}, beamPIDs()...)
	base := map[int]time.Duration{}
	for _, pid := range append(pids, backends()...) {
		base[pid], _ = cpuOf(pid)
	}

	want := int64(n * (publishes + twice))
	var got atomic.Int64
	done := make(chan struct{})
	for _, q := range []string{q1, q2} {
		ch, err := conn.Channel()
		require.NoError(b, err)
		require.NoError(b, ch.Qos(64, 0, false))
		ds, err := ch.Consume(q, "", false, false, false, false, nil)
		require.NoError(b, err)
		go func() {
			for d := range ds {
				_ = d.Ack(false)
				if got.Add(1) == want {
					close(done)
				}
			}
		}()
	}
	var wg sync.WaitGroup
	body := make([]byte, 400) // about a command's size
	for w := range 16 {
		ch, err := conn.Channel()
		require.NoError(b, err)
		require.NoError(b, ch.Confirm(false))
		wg.Go(func() {
			for i := w; i < n*publishes; i += 16 {
				key := q1 + ".a"
				if i%publishes < twice {
					key = q1 + ".b"
				}
				c, err := ch.PublishWithDeferredConfirmWithContext(context.Background(), "amq.direct", key, true, false,
					amqp.Publishing{DeliveryMode: amqp.Persistent, ContentType: "application/json", Body: body})
				if err != nil {
					b.Error(err)
					return
				}
				if ok, err := c.WaitContext(context.Background()); err != nil || !ok {
					b.Error("publish not confirmed", err)
					return
				}
			}
		})
	}
	for w := range 16 {
		wg.Go(func() {
			for i := w; i < n*commitsPer; i += 16 {
				if _, err := pool.Exec(context.Background(), `INSERT INTO bench_floor (v) VALUES ($1)`, "x"); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("floor: %d of %d deliveries", got.Load(), want)
	}
	var total time.Duration
	for _, pid := range append(pids, backends()...) {
		if cpu, ok := cpuOf(pid); ok {
			total += cpu - base[pid]
		}
	}
	fmt.Printf("floor: %d x (%d confirmed publishes, %d deliveries, %d commits) on bare amqp091 and pgx: %.2f ms CPU per erasure; load average %s\n",
		n, publishes, publishes+twice, commitsPer, total.Seconds()*1000/float64(n), loadavg())
	return total.Seconds() * 1000 / float64(n)
}
