// Package lock provides the Redis mutex that saves duplicate work and the
// PostgreSQL fence that makes a lost lock harmless (docs/architecture.md,
// invariant 3).
package lock

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/bsm/redislock"
	"github.com/redis/go-redis/v9"
)

// ErrNotObtained means another holder has the lock.
var ErrNotObtained = errors.New("lock: not obtained")

// Locker obtains Redis locks under a key prefix.
type Locker struct {
	client *redislock.Client
	prefix string
	logger *slog.Logger
}

// NewLocker returns a Locker whose keys start with prefix.
func NewLocker(rdb redis.UniversalClient, prefix string, logger *slog.Logger) *Locker {
	return &Locker{client: redislock.New(rdb), prefix: prefix, logger: logger}
}

// Lease is a held lock. Its Context is cancelled when a refresh fails, so the
// work it guards stops instead of running on without the lock.
type Lease struct {
	lock   *redislock.Lock
	ctx    context.Context
	cancel context.CancelCauseFunc
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
}

// Obtain takes the lock for key with ttl and refreshes it every ttl/3 until
// Release. It does not wait for a busy lock: it returns ErrNotObtained.
func (l *Locker) Obtain(ctx context.Context, key string, ttl time.Duration) (*Lease, error) {
	lk, err := l.client.Obtain(ctx, l.prefix+key, ttl, nil)
	if errors.Is(err, redislock.ErrNotObtained) {
		return nil, ErrNotObtained
	}
	if err != nil {
		return nil, fmt.Errorf("obtaining lock %s: %w", key, err)
	}
	leaseCtx, cancel := context.WithCancelCause(ctx)
	lease := &Lease{lock: lk, ctx: leaseCtx, cancel: cancel, stop: make(chan struct{}), done: make(chan struct{})}
	go lease.refresh(ttl, key, l.logger)
	return lease, nil
}

// ErrLost is the cause of a lease context cancelled because the lock was lost.
var ErrLost = errors.New("lock: lost")

func (le *Lease) refresh(ttl time.Duration, key string, logger *slog.Logger) {
	defer close(le.done)
	t := time.NewTicker(ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-le.stop:
			return
		case <-le.ctx.Done():
			return
		case <-t.C:
			if err := le.lock.Refresh(le.ctx, ttl, nil); err != nil {
				logger.WarnContext(le.ctx, "lock refresh failed; stopping work", "key", key, "error", err)
				le.cancel(fmt.Errorf("%w: %w", ErrLost, err))
				return
			}
		}
	}
}

// Context is cancelled when the lock is lost or released.
func (le *Lease) Context() context.Context { return le.ctx }

// Release stops refreshing and releases the lock. Releasing a lock that
// already expired is not an error: the fence guards what matters.
func (le *Lease) Release(ctx context.Context) error {
	var err error
	le.once.Do(func() {
		close(le.stop)
		<-le.done
		le.cancel(context.Canceled)
		if rerr := le.lock.Release(ctx); rerr != nil && !errors.Is(rerr, redislock.ErrLockNotHeld) {
			err = fmt.Errorf("releasing lock: %w", rerr)
		}
	})
	return err
}
