package retention_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/retention"
)

func TestConfigValidateNamesTheSetting(t *testing.T) {
	t.Parallel()
	require.NoError(t, retention.DefaultConfig().Validate(), "the defaults are valid")
	cases := []struct {
		edit func(*retention.Config)
		want string
	}{
		{func(c *retention.Config) { c.ScrubAfter = 0 }, "retention.scrub_after must be > 0, got 0s"},
		{func(c *retention.Config) { c.RecordFor = -time.Hour }, "retention.record_for must be > 0, got -1h0m0s"},
		{func(c *retention.Config) { c.RecordFor = time.Hour }, "retention.record_for must be >= retention.scrub_after (720h0m0s), got 1h0m0s"},
		{func(c *retention.Config) { c.DeadLettersFor = 0 }, "retention.dead_letters_for must be > 0, got 0s"},
		{func(c *retention.Config) { c.Interval = 0 }, "retention.interval must be > 0, got 0s"},
		{func(c *retention.Config) { c.Batch = 0 }, "retention.batch must be >= 1, got 0"},
	}
	for _, tc := range cases {
		c := retention.DefaultConfig()
		tc.edit(&c)
		require.EqualError(t, c.Validate(), tc.want)
	}
}
