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
	}
	for _, tc := range cases {
		c := gauge.DefaultConfig()
		tc.edit(&c)
		require.EqualError(t, c.Validate(), tc.want)
	}
}

// TestNearDeadlineRemoved: a configuration still setting
// telemetry.near_deadline is refused with an error naming its replacement.
func TestNearDeadlineRemoved(t *testing.T) {
	t.Parallel()
	c := gauge.DefaultConfig()
	c.NearDeadline = 5 * 24 * time.Hour
	err := c.Validate()
	require.ErrorIs(t, err, gauge.ErrNearDeadlineRemoved)
	require.ErrorContains(t, err, "console.near_deadline.lgpd")
}
