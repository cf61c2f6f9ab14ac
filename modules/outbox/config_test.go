package outbox_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/outbox"
)

// TestConfigValidateNamesTheSetting: each error names the full dotted
// setting, so `gdpr` exits 2 with a message the operator can act on.
func TestConfigValidateNamesTheSetting(t *testing.T) {
	t.Parallel()
	require.NoError(t, outbox.DefaultConfig().Validate(), "the defaults are valid")
	cases := []struct {
		edit func(*outbox.Config)
		want string
	}{
		{func(c *outbox.Config) { c.Workers = 0 }, "outbox.workers must be >= 1, got 0"},
		{func(c *outbox.Config) { c.BatchSize = 0 }, "outbox.batch_size must be >= 1, got 0"},
		{func(c *outbox.Config) { c.MaxIdle = 0 }, "outbox.max_idle must be > 0, got 0s"},
		{func(c *outbox.Config) { c.Retention = 0 }, "outbox.retention must be > 0, got 0s"},
		{func(c *outbox.Config) { c.PruneInterval = 0 }, "outbox.prune_interval must be > 0, got 0s"},
		{func(c *outbox.Config) { c.MetricsInterval = 0 }, "outbox.metrics_interval must be > 0, got 0s"},
		{func(c *outbox.Config) { c.RetryBackoff = 0 }, "outbox.retry_backoff must be > 0, got 0s"},
	}
	for _, tc := range cases {
		t.Run(tc.want, func(t *testing.T) {
			t.Parallel()
			c := outbox.DefaultConfig()
			tc.edit(&c)
			require.EqualError(t, c.Validate(), tc.want)
		})
	}
}
