package notify_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/notify"
)

func TestConfigValidateNamesTheSetting(t *testing.T) {
	t.Parallel()
	require.NoError(t, notify.DefaultConfig().Validate(), "the defaults are valid")
	cases := []struct {
		edit func(*notify.Config)
		want string
	}{
		{func(c *notify.Config) { c.SMTPHost = "" }, "notify.smtp_host must be set"},
		{func(c *notify.Config) { c.SMTPPort = 70000 }, "notify.smtp_port must be a port number, got 70000"},
		{func(c *notify.Config) { c.TLS = "ssl" }, `notify.tls must be none, starttls or tls, got "ssl"`},
		{func(c *notify.Config) { c.From = "" }, "notify.from must be set"},
		{func(c *notify.Config) { c.Timeout = 0 }, "notify.timeout must be > 0, got 0s"},
		{func(c *notify.Config) { c.Concurrency = 0 }, "notify.concurrency must be >= 1, got 0"},
		{func(c *notify.Config) { c.Sessions = 0 }, "notify.sessions must be >= 1, got 0"},
		{func(c *notify.Config) { c.SessionIdle = 0 }, "notify.session_idle must be > 0, got 0s"},
		{func(c *notify.Config) { c.SessionMessages = 0 }, "notify.session_messages must be >= 1, got 0"},
		{func(c *notify.Config) { c.ResendAfter = 0 }, "notify.resend_after must be > 0, got 0s"},
		{func(c *notify.Config) { c.ResendAfter = c.Timeout }, "notify.resend_after must be longer than notify.timeout (30s), got 30s"},
	}
	for _, tc := range cases {
		t.Run(tc.want, func(t *testing.T) {
			t.Parallel()
			c := notify.DefaultConfig()
			tc.edit(&c)
			require.EqualError(t, c.Validate(), tc.want)
		})
	}
}
