package scheduler_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/scheduler"
)

func TestConfigValidateNamesTheSetting(t *testing.T) {
	t.Parallel()
	require.NoError(t, scheduler.DefaultConfig().Validate(), "the defaults are valid")
	cases := []struct {
		edit func(*scheduler.Config)
		want string
	}{
		{func(c *scheduler.Config) { c.AdminAddr = "" }, "scheduler.admin_addr must be set"},
		{func(c *scheduler.Config) { c.BatchSize = 0 }, "scheduler.batch_size must be >= 1, got 0"},
		{func(c *scheduler.Config) { c.Workers = 0 }, "scheduler.workers must be >= 1, got 0"},
		{func(c *scheduler.Config) { c.MaxIdle = 0 }, "scheduler.max_idle must be > 0, got 0s"},
		{func(c *scheduler.Config) { c.Retention = 0 }, "scheduler.retention must be > 0, got 0s"},
		{func(c *scheduler.Config) { c.PruneInterval = 0 }, "scheduler.prune_interval must be > 0, got 0s"},
		{func(c *scheduler.Config) { c.MetricsInterval = 0 }, "scheduler.metrics_interval must be > 0, got 0s"},
		{func(c *scheduler.Config) { c.RetryBackoff = 0 }, "scheduler.retry_backoff must be > 0, got 0s"},
		{func(c *scheduler.Config) { c.CommandConcurrency = 0 }, "scheduler.command_concurrency must be >= 1, got 0"},
	}
	for _, tc := range cases {
		t.Run(tc.want, func(t *testing.T) {
			t.Parallel()
			c := scheduler.DefaultConfig()
			tc.edit(&c)
			require.EqualError(t, c.Validate(), tc.want)
		})
	}
}
