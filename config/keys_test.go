package config

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/api"
	"github.com/gdpr-oss/gdpr/modules/report"
)

func TestLoopbackURL(t *testing.T) {
	t.Parallel()
	for raw, want := range map[string]bool{
		"http://127.0.0.1:8080":             true,
		"http://127.1.2.3":                  true,
		"http://[::1]:8080/gdpr":            true,
		"http://localhost:8080":             true,
		"http://LOCALHOST./":                true,
		"https://privacy.example.com":       false,
		"http://10.0.0.1:8080":              false,
		"http://0.0.0.0:8080":               false,
		"http://127.0.0.1.nip.io":           false,
		"http://localhost.example.com":      false,
		"http://app.localhost":              false,
		"http://[::ffff:10.0.0.1]:8080":     false,
		"http://user@127.0.0.1@example.com": false,
	} {
		require.Equal(t, want, LoopbackURL(raw), raw)
	}
}

func TestCheckSecretKeys(t *testing.T) {
	t.Parallel()
	secret := func() Config {
		c := Default()
		c.Serve.PublicURL = "https://privacy.example.com"
		c.Serve.DownloadKey = strings.Repeat("k", 32)
		c.Serve.PreviousDownloadKeys = []string{strings.Repeat("p", 32)}
		c.Report.EncryptionKey = strings.Repeat("ab", 32)
		c.Report.PreviousEncryptionKeys = []string{report.DevEncryptionKey}
		return c
	}
	require.NoError(t, secret().CheckSecretKeys())
	require.NoError(t, Default().CheckSecretKeys(), "the defaults are fine on loopback")

	cases := []struct {
		setting string
		mutate  func(*Config)
	}{
		{"serve.download_key", func(c *Config) { c.Serve.DownloadKey = api.DevDownloadKey }},
		{"serve.download_key", func(c *Config) { c.Serve.DownloadKey = strings.Repeat("k", 31) }},
		{"serve.previous_download_keys[0]", func(c *Config) { c.Serve.PreviousDownloadKeys[0] = api.DevDownloadKey }},
		{"serve.previous_download_keys[0]", func(c *Config) { c.Serve.PreviousDownloadKeys[0] = "sixteen-chars-ok" }},
		{"report.encryption_key", func(c *Config) { c.Report.EncryptionKey = report.DevEncryptionKey }},
		// The same bytes in base64.
		{"report.encryption_key", func(c *Config) { c.Report.EncryptionKey = "ZGV2ZWxvcG1lbnQtb25seS1rZXktbm90LXNlY3JldC4=" }},
	}
	for _, tc := range cases {
		c := secret()
		c.Serve.PreviousDownloadKeys = append([]string(nil), c.Serve.PreviousDownloadKeys...)
		tc.mutate(&c)
		require.NoError(t, c.Validate(), tc.setting)
		err := c.CheckSecretKeys()
		require.ErrorIs(t, err, ErrInvalid, tc.setting)
		require.ErrorContains(t, err, tc.setting+" must ")
		c.Serve.PublicURL = "http://127.0.0.1:8080"
		require.NoError(t, c.CheckSecretKeys(), "%s on loopback", tc.setting)
	}
}
