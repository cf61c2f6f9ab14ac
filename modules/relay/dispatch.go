package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gdpr-oss/gdpr/modules/message"
)

// Result counts what one DispatchOnce did.
type Result struct {
	Claimed     int
	Sent        int
	Refused     int
	Unconfirmed int
}

type claimed struct {
	key       string
	exchange  string
	msg       message.Message
	attempts  int
	overdue   time.Duration // past deliver_at when claimed, by the database clock
	published time.Time     // local time of the confirm
	err       error
}

// now() is the transaction's start: nothing claimed is due after it, so
// nothing is published early by the database clock.
const sqlClaim = `
		SELECT key, message_id, exchange, routing_key, type, correlation_id, causation_id,
			traceparent, headers::text, body, occurred_at, attempts,
			extract(epoch FROM clock_timestamp() - deliver_at)::float8
		FROM {table}
		WHERE next_attempt_at <= now() AND deliver_at <= now()
		ORDER BY next_attempt_at
		LIMIT $1
		FOR UPDATE SKIP LOCKED`

const sqlMarkSent = `
			WITH done AS (
				DELETE FROM {table} WHERE key = ANY($1)
				RETURNING key, message_id, deliver_at, attempts, exchange, routing_key, type, correlation_id)
			INSERT INTO {sent} (key, message_id, deliver_at, sent_at, attempts,
				exchange, routing_key, type, correlation_id)
			SELECT key, message_id, deliver_at, clock_timestamp(), attempts + 1, exchange, routing_key,
				type, correlation_id FROM done`

const sqlPostpone = `
			UPDATE {table} m SET attempts = m.attempts + 1, last_error = f.err,
				next_attempt_at = clock_timestamp() + least(
					make_interval(secs => $3 * power(2, least(m.attempts, 20))),
					make_interval(secs => $4))
			FROM unnest($1::text[], $2::text[]) AS f(key, err) WHERE m.key = f.key`

// DispatchOnce claims one batch of due messages, publishes them and commits
// the outcome. Exported for tests and benchmarks; the workers call it in a loop.
func (r *Relay) DispatchOnce(ctx context.Context) (Result, error) {
	var res Result
	tx, err := r.pool.Begin(ctx)
	if err != nil {
		return res, fmt.Errorf("beginning claim: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	batch, err := r.claim(ctx, tx)
	if err != nil {
		return res, err
	}
	res.Claimed = len(batch)
	if len(batch) == 0 {
		return res, tx.Commit(ctx)
	}
	claimedAt := time.Now()
	r.publish(ctx, batch)

	var sent, refusedKeys, refusedErrs []string
	for i := range batch {
		c := &batch[i]
		switch {
		case c.err == nil:
			sent = append(sent, c.key)
		case r.refused(c.err):
			refusedKeys = append(refusedKeys, c.key)
			refusedErrs = append(refusedErrs, c.err.Error())
			r.logger.WarnContext(ctx, "broker refused a stored message; will retry",
				"key", c.key, "message_id", c.msg.ID, "attempts", c.attempts+1, "error", c.err)
		default:
			res.Unconfirmed++
		}
	}
	if len(sent) > 0 {
		if _, err := tx.Exec(ctx, r.sql.markSent, sent); err != nil {
			return res, fmt.Errorf("marking %d messages sent: %w", len(sent), err)
		}
	}
	if len(refusedKeys) > 0 {
		if _, err := tx.Exec(ctx, r.sql.postpone,
			refusedKeys, refusedErrs, r.opts.RetryBackoff.Seconds(), maxRetryBackoff.Seconds()); err != nil {
			return res, fmt.Errorf("postponing %d refused messages: %w", len(refusedKeys), err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return res, fmt.Errorf("committing dispatch of %d messages: %w", len(sent), err)
	}
	res.Sent, res.Refused = len(sent), len(refusedKeys)
	r.record(res, batch, claimedAt)
	return res, nil
}

func (r *Relay) record(res Result, batch []claimed, claimedAt time.Time) {
	m := r.metrics
	if m.Published != nil {
		m.Published.Add(float64(res.Sent))
	}
	if m.Refused != nil {
		m.Refused.Add(float64(res.Refused))
	}
	if m.Lateness == nil {
		return
	}
	for i := range batch {
		if c := &batch[i]; c.err == nil {
			m.Lateness.Observe((c.overdue + c.published.Sub(claimedAt)).Seconds())
		}
	}
}

// refused tells a per-message refusal (try this message later) from an
// unknown outcome (the broker is away; try the whole batch again soon).
func (r *Relay) refused(err error) bool {
	return errors.Is(err, errNoExchange) || (r.opts.Refused != nil && r.opts.Refused(err))
}

var (
	errNoExchange      = errors.New("exchange does not exist")
	errPublishPanicked = errors.New("publish panicked")
)

func (r *Relay) claim(ctx context.Context, tx pgx.Tx) ([]claimed, error) {
	rows, err := tx.Query(ctx, r.sql.claim, r.opts.BatchSize)
	if err != nil {
		return nil, fmt.Errorf("claiming due messages: %w", err)
	}
	defer rows.Close()
	batch := make([]claimed, 0, r.opts.BatchSize)
	for rows.Next() {
		var c claimed
		var headers string
		var overdue float64
		m := &c.msg
		if err := rows.Scan(&c.key, &m.ID, &c.exchange, &m.RoutingKey, &m.Type, &m.CorrelationID,
			&m.CausationID, &m.Traceparent, &headers, &m.Body, &m.OccurredAt, &c.attempts, &overdue); err != nil {
			return nil, fmt.Errorf("reading claimed message: %w", err)
		}
		if headers != "{}" {
			if err := json.Unmarshal([]byte(headers), &m.Headers); err != nil {
				return nil, fmt.Errorf("decoding headers of %s: %w", c.key, err)
			}
		}
		if c.exchange == "" {
			c.exchange = r.opts.MainExchange
		}
		c.overdue = time.Duration(max(overdue, 0) * float64(time.Second))
		batch = append(batch, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("claiming due messages: %w", err)
	}
	return batch, nil
}

// publish sends the whole batch with every confirm in flight at once and
// records each outcome in the batch.
func (r *Relay) publish(ctx context.Context, batch []claimed) {
	missing := map[string]bool{}
	for _, c := range batch {
		if c.exchange == r.opts.MainExchange || r.exchanges == nil {
			continue
		}
		if _, seen := missing[c.exchange]; seen {
			continue
		}
		// A publish to a missing exchange would close the channel and fail
		// every other publish in flight on it.
		ok, err := r.exchanges.ExchangeExists(ctx, c.exchange)
		missing[c.exchange] = err == nil && !ok
	}
	var wg sync.WaitGroup
	for i := range batch {
		c := &batch[i]
		if missing[c.exchange] {
			c.err = fmt.Errorf("%w: %s", errNoExchange, c.exchange)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				// A bug in the publisher must not crash the process with the
				// batch half done: the message counts as unconfirmed (it stays
				// pending) and the role learns of it through Failed.
				if p := recover(); p != nil {
					c.err = fmt.Errorf("%w: %v", errPublishPanicked, p)
					r.life.Fail(fmt.Errorf("%s: publishing %s panicked: %v", r.name, c.msg.ID, p))
				}
			}()
			c.err = r.pub.PublishTo(ctx, c.exchange, c.msg)
			c.published = time.Now()
		}()
	}
	wg.Wait()
}
