package selfservice_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/selfservice"
	"github.com/gdpr-oss/gdpr/modules/source"
)

// TestConfigValidateNamesTheSetting: each error names the full dotted
// setting under privacy., so `gdpr` exits 2 with a message the operator can
// act on.
func TestConfigValidateNamesTheSetting(t *testing.T) {
	t.Parallel()
	require.NoError(t, selfservice.DefaultConfig().Validate(), "the defaults are valid")
	missing := filepath.Join(t.TempDir(), "missing")
	cases := []struct {
		edit func(*selfservice.Config)
		want string
	}{
		{func(c *selfservice.Config) { c.CodeTTL = time.Second }, "privacy.code_ttl must be >= 1m, got 1s"},
		{func(c *selfservice.Config) { c.CodeTries = 0 }, "privacy.code_tries must be >= 1, got 0"},
		{func(c *selfservice.Config) { c.StatusLinkTTL = time.Minute }, "privacy.status_link_ttl must be >= 1h, got 1m0s"},
		{func(c *selfservice.Config) { c.SendWindow = 0 }, "privacy.send_window must be >= 1s, got 0s"},
		{func(c *selfservice.Config) { c.SendsPerAddress = 0 }, "privacy.sends_per_address must be >= 1, got 0"},
		{func(c *selfservice.Config) { c.SendsPerEmail = 0 }, "privacy.sends_per_email must be >= 1, got 0"},
		{func(c *selfservice.Config) { c.CodeFailuresPerEmail = 0 }, "privacy.code_failures_per_email must be >= 1, got 0"},
		{func(c *selfservice.Config) { c.CodeFailureWindow = 0 }, "privacy.code_failure_window must be >= 1s, got 0s"},
		{func(c *selfservice.Config) { c.DefaultLocale = "fr" }, `privacy.default_locale must be one of [en de], got "fr"`},
		{func(c *selfservice.Config) { c.TrustedProxies = []string{"10.0.0.0/8", "proxy"} },
			`privacy.trusted_proxies[1] must be an IP address or CIDR range, got "proxy"`},
		{func(c *selfservice.Config) { c.AccountLookup = source.Config{Name: "account_lookup", Kind: "ldap"} },
			`privacy.account_lookup.kind must be postgres, mysql, http or elasticsearch, got "ldap"`},
		{func(c *selfservice.Config) { c.TemplateDir = missing }, `privacy.template_dir must be a directory, got "` + missing + `"`},
	}
	for _, tc := range cases {
		t.Run(tc.want, func(t *testing.T) {
			t.Parallel()
			c := selfservice.DefaultConfig()
			tc.edit(&c)
			require.EqualError(t, c.Validate(), tc.want)
		})
	}
}
