package lock_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/lock"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

func TestExactlyOneContenderWins(t *testing.T) {
	t.Parallel()
	rdb, prefix := testkit.Redis(t)
	locker := lock.NewLocker(rdb, prefix, testkit.Logger(t))

	const rounds = 100
	for round := range rounds {
		key := fmt.Sprintf("request:%d", round)
		start := make(chan struct{})
		var wg sync.WaitGroup
		leases := make([]*lock.Lease, 2)
		errs := make([]error, 2)
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				leases[i], errs[i] = locker.Obtain(t.Context(), key, 10*time.Second)
			}()
		}
		close(start)
		wg.Wait()
		var winners int
		for i := range 2 {
			if errs[i] == nil {
				winners++
				require.NoError(t, leases[i].Release(t.Context()))
			} else {
				require.ErrorIs(t, errs[i], lock.ErrNotObtained, "round %d", round)
			}
		}
		require.Equal(t, 1, winners, "round %d", round)
	}
}

func TestLeaseIsRefreshedWhileHeld(t *testing.T) {
	t.Parallel()
	rdb, prefix := testkit.Redis(t)
	locker := lock.NewLocker(rdb, prefix, testkit.Logger(t))

	// Long enough that a refresh every ttl/3 is not missed on a busy machine.
	const ttl = time.Second
	lease, err := locker.Obtain(t.Context(), "k", ttl)
	require.NoError(t, err)
	defer lease.Release(context.Background())
	// Well past the TTL the lock is still held: the lease refreshes it.
	for start := time.Now(); time.Since(start) < 5*ttl/2; {
		_, err := locker.Obtain(t.Context(), "k", ttl)
		require.ErrorIs(t, err, lock.ErrNotObtained)
		require.NoError(t, lease.Context().Err())
		time.Sleep(ttl / 10) //nolint:forbidigo // polling pace, not waiting for an effect
	}
}

func TestLeaseContextIsCancelledWhenRefreshFails(t *testing.T) {
	t.Parallel()
	rdb, prefix := testkit.Redis(t)
	locker := lock.NewLocker(rdb, prefix, testkit.Logger(t))

	const ttl = 300 * time.Millisecond
	lease, err := locker.Obtain(t.Context(), "k", ttl)
	require.NoError(t, err)
	defer lease.Release(context.Background())

	// Someone else holds the key now, as after an expiry during a pause.
	require.NoError(t, rdb.Set(t.Context(), prefix+"k", "another-holder", time.Minute).Err())
	select {
	case <-lease.Context().Done():
		require.ErrorIs(t, context.Cause(lease.Context()), lock.ErrLost)
	case <-time.After(10 * time.Second):
		t.Fatal("lease context not cancelled after the lock was lost")
	}
	// Releasing a lost lock neither fails nor frees the other holder's key.
	require.NoError(t, lease.Release(t.Context()))
	v, err := rdb.Get(t.Context(), prefix+"k").Result()
	require.NoError(t, err)
	require.Equal(t, "another-holder", v)
}

func TestReleaseFreesTheLockAndEndsTheLease(t *testing.T) {
	t.Parallel()
	rdb, prefix := testkit.Redis(t)
	locker := lock.NewLocker(rdb, prefix, testkit.Logger(t))

	lease, err := locker.Obtain(t.Context(), "k", 10*time.Second)
	require.NoError(t, err)
	_, err = locker.Obtain(t.Context(), "k", 10*time.Second)
	require.ErrorIs(t, err, lock.ErrNotObtained)

	require.NoError(t, lease.Release(t.Context()))
	require.Error(t, lease.Context().Err(), "the work a released lease guarded is told to stop")
	require.False(t, errors.Is(context.Cause(lease.Context()), lock.ErrLost), "released, not lost")
	require.NoError(t, lease.Release(t.Context()), "a second Release is harmless")

	next, err := locker.Obtain(t.Context(), "k", 10*time.Second)
	require.NoError(t, err, "free at once after Release, without waiting for the TTL")
	require.NoError(t, next.Release(t.Context()))
}

func TestLeaseEndsWithItsParentContext(t *testing.T) {
	t.Parallel()
	rdb, prefix := testkit.Redis(t)
	locker := lock.NewLocker(rdb, prefix, testkit.Logger(t))
	ctx, cancel := context.WithCancel(t.Context())
	lease, err := locker.Obtain(ctx, "k", 10*time.Second)
	require.NoError(t, err)
	cancel()
	<-lease.Context().Done()
	require.NoError(t, lease.Release(context.Background()))
	next, err := locker.Obtain(t.Context(), "k", 10*time.Second)
	require.NoError(t, err)
	require.NoError(t, next.Release(t.Context()))
}
