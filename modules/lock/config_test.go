package lock_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/lock"
)

func TestConfigValidateNamesTheSetting(t *testing.T) {
	t.Parallel()
	require.NoError(t, lock.DefaultConfig().Validate())
	require.NoError(t, lock.DefaultRedisConfig().Validate())
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"ttl below a second", lock.Config{TTL: 100 * time.Millisecond}.Validate(), "lock.ttl must be >= 1s, got 100ms"},
		{"no redis address", lock.RedisConfig{}.Validate(), "redis.addr must be set"},
	}
	for _, tc := range cases {
		require.EqualError(t, tc.err, tc.want, tc.name)
	}
}
