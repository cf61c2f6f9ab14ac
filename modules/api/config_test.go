package api_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/api"
)

func TestConfigValidateNamesTheSetting(t *testing.T) {
	t.Parallel()
	require.NoError(t, api.DefaultConfig().Validate())
	cases := []struct {
		want   string
		mutate func(*api.Config)
	}{
		{"serve.public_url must be an absolute http(s) URL", func(c *api.Config) { c.PublicURL = "/relative" }},
		{"serve.previous_download_keys[0] must be at least 16 characters", func(c *api.Config) { c.PreviousDownloadKeys = []string{"short"} }},
		{"serve.api_tokens[1] must be a SHA-256 hex digest", func(c *api.Config) { c.APITokens = []string{strings.Repeat("a", 64), "raw-token"} }},
		{"serve.admin_tokens[0] must be a SHA-256 hex digest", func(c *api.Config) { c.AdminTokens = []string{"raw-token"} }},
		{"serve.addr must be set", func(c *api.Config) { c.Addr = "" }},
		{"serve.max_body_bytes must be >= 1024", func(c *api.Config) { c.MaxBodyBytes = 10 }},
		{"serve.download_key must be at least 16 characters", func(c *api.Config) { c.DownloadKey = "short" }},
		{"serve.accepted_ttl must be >= 1m", func(c *api.Config) { c.AcceptedTTL = time.Second }},
		{"serve.read_timeout must be >= serve.read_header_timeout", func(c *api.Config) { c.ReadTimeout = time.Millisecond }},
		{"serve.max_conns must be >= 16", func(c *api.Config) { c.MaxConns = 1 }},
		{`serve.api_clients[0].name must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit, got ""`, func(c *api.Config) {
			c.APIClients = []api.Client{{Name: "", TokenSHA256: strings.Repeat("a", 64)}}
		}},
		{`serve.api_clients[0].name must not be 16 hex characters (the name of an unnamed serve.api_tokens client), got "0123456789abcdef"`, func(c *api.Config) {
			c.APIClients = []api.Client{{Name: "0123456789abcdef", TokenSHA256: strings.Repeat("a", 64)}}
		}},
		{`serve.api_clients[0].name "privacy-page" is the self-service page's name`, func(c *api.Config) {
			c.APIClients = []api.Client{{Name: "privacy-page", TokenSHA256: strings.Repeat("a", 64)}}
		}},
		{`serve.api_clients[1].name must be unique, "crm" is used twice`, func(c *api.Config) {
			c.APIClients = []api.Client{{Name: "crm", TokenSHA256: strings.Repeat("a", 64)}, {Name: "crm", TokenSHA256: strings.Repeat("b", 64)}}
		}},
		{"serve.api_clients[0].token_sha256 must be a SHA-256 hex digest (64 hex characters)", func(c *api.Config) {
			c.APIClients = []api.Client{{Name: "crm", TokenSHA256: "raw-token"}}
		}},
		{"serve.api_clients[1].token_sha256 must be unique: serve.api_clients[0] has the same token", func(c *api.Config) {
			c.APIClients = []api.Client{{Name: "crm", TokenSHA256: strings.Repeat("a", 64)}, {Name: "shop", TokenSHA256: strings.Repeat("A", 64)}}
		}},
		{"serve.api_tokens[0] must be unique: serve.api_clients[0] has the same token", func(c *api.Config) {
			c.APIClients = []api.Client{{Name: "crm", TokenSHA256: strings.Repeat("a", 64)}}
			c.APITokens = []string{strings.Repeat("a", 64)}
		}},
	}
	for _, tc := range cases {
		c := api.DefaultConfig()
		tc.mutate(&c)
		require.ErrorContains(t, c.Validate(), tc.want)
	}
}

func TestConfigLimitsAndPreviousKeys(t *testing.T) {
	t.Parallel()
	c := api.DefaultConfig()
	c.PreviousDownloadKeys = []string{"first-previous-key", "second-previous-key"}
	require.Equal(t, [][]byte{[]byte("first-previous-key"), []byte("second-previous-key")}, c.PreviousKeys())
	require.Equal(t, c.MaxConns, c.Limits().MaxConns)
	require.Equal(t, c.ReadHeaderTimeout, c.Limits().ReadHeaderTimeout)
}
