package bus_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/bus"
)

func TestConfigValidateNamesTheSetting(t *testing.T) {
	t.Parallel()
	require.NoError(t, bus.DefaultConfig().Validate(), "the defaults are valid")
	cases := []struct {
		edit func(*bus.Config)
		want string
	}{
		{func(c *bus.Config) { c.URL = "" }, "amqp.url must be set"},
		{func(c *bus.Config) { c.Prefix = "" }, "amqp.prefix must be set"},
		{func(c *bus.Config) { c.Prefetch = 0 }, "amqp.prefetch must be >= 1, got 0"},
		{func(c *bus.Config) { c.ConfirmTimeout = 0 }, "amqp.confirm_timeout must be > 0, got 0s"},
		{func(c *bus.Config) { c.PublishChannels = 0 }, "amqp.publish_channels must be >= 1, got 0"},
		{func(c *bus.Config) { c.DeliveryLimit = 0 }, "amqp.delivery_limit must be >= 1, got 0"},
		{func(c *bus.Config) { c.RetryFor = -1 }, "amqp.retry_for must be > 0, got -1ns"},
		{func(c *bus.Config) { c.QueueType = "lazy" }, `amqp.queue_type must be quorum or classic, got "lazy"`},
	}
	for _, tc := range cases {
		t.Run(tc.want, func(t *testing.T) {
			t.Parallel()
			c := bus.DefaultConfig()
			tc.edit(&c)
			require.EqualError(t, c.Validate(), tc.want)
		})
	}
}
