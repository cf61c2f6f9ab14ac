package relay

import (
	"context"
	"fmt"
	"time"
)

const sqlGauges = `
		SELECT count(*), count(*) FILTER (WHERE deliver_at <= now()),
			COALESCE(extract(epoch FROM now() - min(deliver_at) FILTER (WHERE deliver_at <= now())), 0)::float8
		FROM {table}`

// In slices, so that no one statement holds many locks.
const sqlPrune = `
			DELETE FROM {sent} WHERE ctid = ANY (ARRAY(
				SELECT ctid FROM {sent}
				WHERE sent_at < clock_timestamp() - make_interval(secs => $1) LIMIT $2))`

// every runs f now and then every interval until Stop.
func (r *Relay) every(ctx context.Context, interval time.Duration, f func(context.Context) error) {
	for {
		if err := f(ctx); err != nil && ctx.Err() == nil && !r.stopping() {
			r.logger.WarnContext(ctx, "housekeeping failed", "error", err)
		}
		if !r.sleep(interval) {
			return
		}
	}
}

// refreshGauges reads pending, due and oldest-overdue from the table.
func (r *Relay) refreshGauges(ctx context.Context) error {
	m := r.metrics
	if m.Pending == nil && m.Due == nil && m.OldestOverdue == nil {
		return nil
	}
	var pending, due int64
	var oldest float64
	if err := r.pool.QueryRow(ctx, r.sql.gauges).Scan(&pending, &due, &oldest); err != nil {
		return fmt.Errorf("reading %s gauges: %w", r.table.Name, err)
	}
	for _, g := range []struct {
		set interface{ Set(float64) }
		v   float64
	}{{m.Pending, float64(pending)}, {m.Due, float64(due)}, {m.OldestOverdue, oldest}} {
		if g.set != nil {
			g.set.Set(g.v)
		}
	}
	return nil
}

// prune deletes sent history older than the retention.
func (r *Relay) prune(ctx context.Context) error {
	const slice = 10000
	total := int64(0)
	for !r.stopping() {
		tag, err := r.pool.Exec(ctx, r.sql.prune, r.opts.Retention.Seconds(), slice)
		if err != nil {
			return fmt.Errorf("pruning sent messages: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < slice {
			break
		}
	}
	if total > 0 {
		r.logger.InfoContext(ctx, "pruned sent messages", "table", r.table.Sent, "count", total)
	}
	return nil
}
