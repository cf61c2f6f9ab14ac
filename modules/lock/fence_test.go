package lock_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/modules/db"
	"github.com/gdpr-oss/gdpr/modules/lock"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// fencedTable creates a table guarded by a fence, with one row (id 1).
func fencedTable(t *testing.T) (*gorm.DB, lock.Fence) {
	t.Helper()
	gdb, err := db.Open(t.Context(), db.Config{DSN: testkit.PostgresDSN(t), MaxOpenConns: 5})
	require.NoError(t, err)
	t.Cleanup(func() {
		if sqlDB, err := gdb.DB(); err == nil {
			_ = sqlDB.Close()
		}
	})
	require.NoError(t, gdb.Exec(`CREATE TABLE jobs (
		id int PRIMARY KEY,
		result text NOT NULL DEFAULT '',
		lease_token bigint NOT NULL DEFAULT 0,
		lease_until timestamptz)`).Error)
	require.NoError(t, gdb.Exec(`INSERT INTO jobs (id) VALUES (1)`).Error)
	return gdb, lock.Fence{Table: "jobs"}
}

// writeFenced is how a worker writes a claimed row: Check, then write, in one transaction.
func writeFenced(ctx context.Context, gdb *gorm.DB, f lock.Fence, token int64, result string) error {
	return gdb.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := f.Check(ctx, tx, 1, token); err != nil {
			return err
		}
		return tx.Exec(`UPDATE jobs SET result = ? WHERE id = 1`, result).Error
	})
}

func leaseExpired(t *testing.T, gdb *gorm.DB) bool {
	var expired bool
	require.NoError(t, gdb.Raw(`SELECT coalesce(lease_until < clock_timestamp(), true) FROM jobs WHERE id = 1`).Scan(&expired).Error)
	return expired
}

func result(t *testing.T, gdb *gorm.DB) string {
	var r string
	require.NoError(t, gdb.Raw(`SELECT result FROM jobs WHERE id = 1`).Scan(&r).Error)
	return r
}

// TestPausedHolderCannotWriteThroughFence: worker A holds the Redis lock and
// the row's lease, then stalls longer than the TTL. Its Redis lock is gone
// (here: taken over, as after expiry) and B claims the row. When A wakes up
// and writes anyway, the fence refuses; B's write goes through.
func TestPausedHolderCannotWriteThroughFence(t *testing.T) {
	t.Parallel()
	gdb, fence := fencedTable(t)
	rdb, prefix := testkit.Redis(t)
	locker := lock.NewLocker(rdb, prefix, testkit.Logger(t))
	const ttl = time.Second
	ctx := t.Context()

	leaseA, err := locker.Obtain(ctx, "job:1", ttl)
	require.NoError(t, err)
	defer leaseA.Release(context.Background())
	tokenA, err := fence.Claim(ctx, gdb, 1, ttl)
	require.NoError(t, err)
	require.NoError(t, writeFenced(ctx, gdb, fence, tokenA, "a-progress"), "A writes while it holds the lease")

	// A pauses: its lock expires in Redis (simulated by its removal) and, a
	// TTL later by the database clock, its row lease too.
	require.NoError(t, rdb.Del(ctx, prefix+"job:1").Err())
	leaseB, err := locker.Obtain(ctx, "job:1", ttl)
	require.NoError(t, err, "B gets the Redis lock A lost")
	defer leaseB.Release(context.Background())
	_, err = fence.Claim(ctx, gdb, 1, ttl)
	require.ErrorIs(t, err, lock.ErrFenced, "the row lease still protects A until it expires")
	var tokenB int64
	testkit.Eventually(t, 10*time.Second, func() bool {
		tokenB, err = fence.Claim(ctx, gdb, 1, ttl)
		return err == nil
	}, "B claims the row once A's lease expired")
	require.Greater(t, tokenB, tokenA)

	// A wakes up, unaware, and tries to commit.
	require.ErrorIs(t, writeFenced(ctx, gdb, fence, tokenA, "a-late"), lock.ErrFenced)
	require.ErrorIs(t, fence.Extend(ctx, gdb, 1, tokenA, ttl), lock.ErrFenced)
	require.NoError(t, fence.Release(ctx, gdb, 1, tokenA), "A's release is a no-op")
	require.Equal(t, "a-progress", result(t, gdb))

	require.NoError(t, writeFenced(ctx, gdb, fence, tokenB, "b-done"), "B's lease survived A's release")
	require.Equal(t, "b-done", result(t, gdb))
	select {
	case <-leaseA.Context().Done():
	case <-time.After(10 * time.Second):
		t.Fatal("A's lease context was not cancelled when its lock was lost")
	}
}

func TestExpiredLeaseCannotWriteEvenUnclaimed(t *testing.T) {
	t.Parallel()
	gdb, fence := fencedTable(t)
	ctx := t.Context()
	token, err := fence.Claim(ctx, gdb, 1, 200*time.Millisecond)
	require.NoError(t, err)
	require.NoError(t, writeFenced(ctx, gdb, fence, token, "early"))
	testkit.Eventually(t, 10*time.Second, func() bool { return leaseExpired(t, gdb) }, "lease expiry by the database clock")
	require.ErrorIs(t, writeFenced(ctx, gdb, fence, token, "late"), lock.ErrFenced)
	require.Equal(t, "early", result(t, gdb))
}

func TestFenceClaimExtendRelease(t *testing.T) {
	t.Parallel()
	gdb, fence := fencedTable(t)
	ctx := t.Context()

	_, err := fence.Claim(ctx, gdb, 2, time.Minute)
	require.ErrorIs(t, err, lock.ErrFenced, "no such row")
	require.ErrorIs(t, fence.Check(ctx, gdb, 1, 0), lock.ErrFenced, "never claimed")

	token, err := fence.Claim(ctx, gdb, 1, 2*time.Second)
	require.NoError(t, err)
	_, err = fence.Claim(ctx, gdb, 1, time.Minute)
	require.ErrorIs(t, err, lock.ErrFenced, "held")

	var before, after time.Time
	require.NoError(t, gdb.Raw(`SELECT lease_until FROM jobs WHERE id = 1`).Scan(&before).Error)
	require.NoError(t, fence.Extend(ctx, gdb, 1, token, time.Hour))
	require.NoError(t, gdb.Raw(`SELECT lease_until FROM jobs WHERE id = 1`).Scan(&after).Error)
	require.Greater(t, after.Sub(before), 50*time.Minute, "Extend pushes the expiry out by the new TTL")
	require.ErrorIs(t, fence.Extend(ctx, gdb, 1, token+1, time.Hour), lock.ErrFenced, "wrong token")
	require.NoError(t, writeFenced(ctx, gdb, fence, token, "ok"))

	require.NoError(t, fence.Release(ctx, gdb, 1, token))
	require.ErrorIs(t, writeFenced(ctx, gdb, fence, token, "after release"), lock.ErrFenced)
	require.ErrorIs(t, fence.Extend(ctx, gdb, 1, token, time.Hour), lock.ErrFenced, "a released lease cannot be revived")
	next, err := fence.Claim(ctx, gdb, 1, time.Minute)
	require.NoError(t, err, "claimable at once after Release")
	require.Equal(t, token+1, next)

	// Sub-second and odd TTLs are exact.
	require.NoError(t, fence.Release(ctx, gdb, 1, next))
	_, err = fence.Claim(ctx, gdb, 1, 1500*time.Microsecond+time.Minute)
	require.NoError(t, err)
}

// TestCheckHoldsOffClaimersUntilCommit: a write that passed Check commits
// before anyone can claim the row, even if the lease runs out meanwhile.
func TestCheckHoldsOffClaimersUntilCommit(t *testing.T) {
	t.Parallel()
	gdb, fence := fencedTable(t)
	ctx := t.Context()
	token, err := fence.Claim(ctx, gdb, 1, 300*time.Millisecond)
	require.NoError(t, err)

	tx := gdb.WithContext(ctx).Begin()
	require.NoError(t, tx.Error)
	require.NoError(t, fence.Check(ctx, tx, 1, token))
	claimed := make(chan error, 1)
	testkit.Eventually(t, 10*time.Second, func() bool { return leaseExpired(t, gdb) }, "lease expiry by the database clock")
	go func() {
		_, err := fence.Claim(ctx, gdb, 1, time.Minute) // blocks on the row lock
		claimed <- err
	}()
	require.NoError(t, tx.Exec(`UPDATE jobs SET result = 'committed-under-lease' WHERE id = 1`).Error)
	select {
	case err := <-claimed:
		t.Fatalf("claimed while the checked transaction was open: %v", err)
	case <-time.After(time.Second):
	}
	require.NoError(t, tx.Commit().Error)
	require.NoError(t, <-claimed)
	require.Equal(t, "committed-under-lease", result(t, gdb))
}
