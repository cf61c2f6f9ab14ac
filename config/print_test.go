package config_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

// TestConfigPrintMasksEveryQueryValueOfSecretURLsAndKeepsTemplates: a
// secret URL loses every query value (a SAS link's sig= included) and its
// fragment, and what is not masked, templates above all, prints as written.
func TestConfigPrintMasksEveryQueryValueOfSecretURLsAndKeepsTemplates(t *testing.T) {
	t.Parallel()
	const (
		sasSig = "c2lnbmF0dXJl%2Bsecret%3D"
		// A source URL template (not a secret setting): only sig= is masked.
		sourceURL = "https://acct.blob.core.windows.net/exports/{subject_id}.json?sv=2022-11-02&sp=r&sig=" + sasSig + "&e={email}"
		// A participant URL template with a credential-named parameter.
		participantURL = "https://erase.example/v1/{subject_id}?by={subject_email}&api_key=participant-key&request={request_id}"
	)
	file := writeFile(t, `
report:
  previous_encryption_keys: ["`+devKeyHex+`"]
  sources:
    - name: blob
      kind: http
      url: "`+sourceURL+`"
    - name: crm
      kind: postgres
      dsn: "postgres://crm:crm-pw@db.internal/crm?sslmode=verify-full&sslpassword=ssl-pw"
      query: SELECT 1 WHERE @subject_id <> ''
canceller:
  participants:
    - name: zendesk
      kind: http
      url: "`+participantURL+`"
`)
	environ := []string{
		"GDPR_AMQP_URL=amqps://gdpr:amqp-pw@rabbit.internal:5671/vh?auth_mechanism=PLAIN&sig=amqp-sig#frag-secret",
		"GDPR_SERVE_PUBLIC_URL=https://privacy.example.com/gdpr%20portal/",
		"GDPR_SERVE_PREVIOUS_DOWNLOAD_KEYS=previous-download-key-0123456789,another-previous-key-0123456789",
	}
	code, out, errOut := run(t, environ, "config", "print", "--config", file)
	require.Equal(t, 0, code, "stderr: %s", errOut)
	for _, secret := range []string{"amqp-pw", "amqp-sig", "frag-secret", "PLAIN", sasSig, "crm-pw", "ssl-pw", "verify-full",
		"participant-key", "previous-download-key", "another-previous-key", devKeyHex} {
		require.NotContains(t, out, secret)
	}
	var cfg map[string]any
	require.NoError(t, yaml.Unmarshal([]byte(out), &cfg))
	require.Equal(t, "amqps://gdpr:****@rabbit.internal:5671/vh?auth_mechanism=****&sig=****#****", setting(cfg, "amqp.url"))
	require.Equal(t, "https://privacy.example.com/gdpr%20portal/", setting(cfg, "serve.public_url"), "as written")
	require.Equal(t, []any{"****", "****"}, setting(cfg, "serve.previous_download_keys"))
	require.Equal(t, []any{"****"}, setting(cfg, "report.previous_encryption_keys"))

	sources := setting(cfg, "report.sources").([]any)
	require.Equal(t, "https://acct.blob.core.windows.net/exports/{subject_id}.json?sv=2022-11-02&sp=r&sig=****&e={email}", sources[0].(map[string]any)["url"])
	require.Equal(t, "postgres://crm:****@db.internal/crm?sslmode=****&sslpassword=****", sources[1].(map[string]any)["dsn"])
	participants := setting(cfg, "canceller.participants").([]any)
	require.Equal(t, "https://erase.example/v1/{subject_id}?by={subject_email}&api_key=****&request={request_id}", participants[0].(map[string]any)["url"])

	// Templates paste back: with its one masked value put back, the printed
	// source URL is the configured one, byte for byte.
	require.NotContains(t, out, "%7B")
	require.Equal(t, sourceURL, strings.Replace(sources[0].(map[string]any)["url"].(string), "sig=****", "sig="+sasSig, 1))
}

// devKeyHex is config.DevEncryptionKey, spelled out so the test reads alone.
const devKeyHex = "646576656c6f706d656e742d6f6e6c792d6b65792d6e6f742d7365637265742e"
