package otlp_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/otlp"
)

func TestConfigValidateNamesTheSetting(t *testing.T) {
	t.Parallel()
	require.NoError(t, otlp.DefaultConfig().Validate(), "the defaults are valid")
	cases := []struct {
		edit func(*otlp.Config)
		want string
	}{
		{func(c *otlp.Config) { c.Endpoint = "collector:4318" }, `telemetry.otlp_endpoint must be an http:// or https:// URL with a host, got "collector:4318"`},
		{func(c *otlp.Config) { c.Endpoint = "http://" }, `telemetry.otlp_endpoint must be an http:// or https:// URL with a host, got "http://"`},
	}
	for _, tc := range cases {
		c := otlp.DefaultConfig()
		tc.edit(&c)
		require.EqualError(t, c.Validate(), tc.want)
	}
}
