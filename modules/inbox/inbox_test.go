package inbox_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/modules/inbox"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

func TestClaimIsFreshOncePerConsumer(t *testing.T) {
	t.Parallel()
	gdb, _ := testkit.Postgres(t)
	ctx := t.Context()

	fresh, err := inbox.Claim(ctx, gdb, "worker", "m-1")
	require.NoError(t, err)
	require.True(t, fresh)
	fresh, err = inbox.Claim(ctx, gdb, "worker", "m-1")
	require.NoError(t, err)
	require.False(t, fresh, "a redelivery is recognised")
	fresh, err = inbox.Claim(ctx, gdb, "audit", "m-1")
	require.NoError(t, err)
	require.True(t, fresh, "each consumer has its own inbox")
}

func TestClaimRolledBackWithTheEffect(t *testing.T) {
	t.Parallel()
	gdb, _ := testkit.Postgres(t)
	ctx := t.Context()
	failed := errors.New("effect failed")

	err := gdb.Transaction(func(tx *gorm.DB) error {
		fresh, err := inbox.Claim(ctx, tx, "worker", "m-2")
		require.NoError(t, err)
		require.True(t, fresh)
		return failed
	})
	require.ErrorIs(t, err, failed)
	fresh, err := inbox.Claim(ctx, gdb, "worker", "m-2")
	require.NoError(t, err)
	require.True(t, fresh, "a claim whose transaction rolled back does not count")
}
