package participant_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/participant"
)

func TestConfigValidateNamesTheSetting(t *testing.T) {
	t.Parallel()
	require.NoError(t, participant.DefaultConfig().Validate())
	cases := []struct {
		edit func(*participant.Config)
		want string
	}{
		{func(c *participant.Config) { c.URL = "" }, "amqp.url must be set"},
		{func(c *participant.Config) { c.Prefix = "" }, "amqp.prefix must be set"},
	}
	for _, tc := range cases {
		c := participant.DefaultConfig()
		tc.edit(&c)
		require.EqualError(t, c.Validate(), tc.want)
	}
}

func TestConfigBusKeepsURLAndPrefix(t *testing.T) {
	t.Parallel()
	b := participant.Config{URL: "amqp://u:p@rabbit:5672/vh", Prefix: "shop"}.Bus()
	require.Equal(t, "amqp://u:p@rabbit:5672/vh", b.URL)
	require.Equal(t, "shop", b.Prefix)
	require.Equal(t, bus.DefaultConfig().ConfirmTimeout, b.ConfirmTimeout, "the rest are the bus defaults")
	require.NoError(t, b.Validate())
}
