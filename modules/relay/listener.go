package relay

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// listen keeps a LISTEN connection open and turns notifications into
// wake-ups; after every (re)connect it wakes all workers, since
// notifications sent while it was away are lost.
func (r *Relay) listen(ctx context.Context, cfg *pgx.ConnConfig) {
	backoff := 100 * time.Millisecond
	for !r.stopping() {
		err := r.listenOnce(ctx, cfg, func() { backoff = 100 * time.Millisecond })
		if r.stopping() || ctx.Err() != nil {
			return
		}
		r.logger.WarnContext(ctx, "listen connection lost; reconnecting", "error", err, "backoff", backoff)
		if !r.sleep(backoff + rand.N(backoff/2)) { //nolint:gosec // jitter, not security
			return
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (r *Relay) listenOnce(ctx context.Context, cfg *pgx.ConnConfig, connected func()) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-r.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connecting for LISTEN: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, r.sql.listen); err != nil {
		return fmt.Errorf("listening on %s: %w", r.table.Channel, err)
	}
	connected()
	r.wake.notify(time.Time{})
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return fmt.Errorf("waiting for notifications: %w", err)
		}
		at := time.Time{}
		if us, err := strconv.ParseInt(n.Payload, 10, 64); err == nil {
			at = time.UnixMicro(us)
		}
		r.wake.notify(at)
	}
}
