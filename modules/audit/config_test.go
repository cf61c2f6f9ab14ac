package audit_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/audit"
)

func TestConfigValidateNamesTheSetting(t *testing.T) {
	t.Parallel()
	require.NoError(t, audit.DefaultConfig().Validate(), "the defaults are valid")
	cases := []struct {
		edit func(*audit.Config)
		want string
	}{
		{func(c *audit.Config) { c.Concurrency = 0 }, "telemetry.audit_concurrency must be >= 1, got 0"},
	}
	for _, tc := range cases {
		c := audit.DefaultConfig()
		tc.edit(&c)
		require.EqualError(t, c.Validate(), tc.want)
	}
}
