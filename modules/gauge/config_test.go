package gauge_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/gauge"
)

func TestConfigValidateNamesTheSetting(t *testing.T) {
	t.Parallel()
	require.NoError(t, gauge.DefaultConfig().Validate(), "the defaults are valid")
	cases := []struct {
		edit func(*gauge.Config)
		want string
	}{
		{func(c *gauge.Config) { c.Interval = 0 }, "telemetry.gauge_interval must be > 0, got 0s"},
		{func(c *gauge.Config) { c.NearDeadline = -time.Hour }, "telemetry.near_deadline must be > 0, got -1h0m0s"},
	}
	for _, tc := range cases {
		c := gauge.DefaultConfig()
		tc.edit(&c)
		require.EqualError(t, c.Validate(), tc.want)
	}
}
