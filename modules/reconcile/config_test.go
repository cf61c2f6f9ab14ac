package reconcile_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/reconcile"
)

func TestConfigValidateNamesTheSetting(t *testing.T) {
	t.Parallel()
	require.NoError(t, reconcile.DefaultConfig().Validate(), "the defaults are valid")
	cases := []struct {
		edit func(*reconcile.Config)
		want string
	}{
		{func(c *reconcile.Config) { c.Interval = -time.Second }, "telemetry.reconcile_interval must be >= 0 (0 disables it), got -1s"},
		{func(c *reconcile.Config) { c.Window = 0 }, "telemetry.reconcile_window must be > 0, got 0s"},
		{func(c *reconcile.Config) { c.StuckAfter = 0 }, "telemetry.stuck_after must be > 0, got 0s"},
	}
	for _, tc := range cases {
		c := reconcile.DefaultConfig()
		tc.edit(&c)
		require.EqualError(t, c.Validate(), tc.want)
	}
}
