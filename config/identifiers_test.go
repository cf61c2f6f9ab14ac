package config_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/config"
	"github.com/gdpr-oss/gdpr/modules/erasure"
	"github.com/gdpr-oss/gdpr/modules/source"
)

// TestSourcesAndParticipantsMayUsePhoneAndDeclaredIdentifiers: a source or
// an http participant may be keyed by {phone}/@phone or by a named
// identifier serve.identifiers declares; one naming an undeclared
// identifier, or serve.identifiers with a name outside the grammar, is
// refused naming the setting.
func TestSourcesAndParticipantsMayUsePhoneAndDeclaredIdentifiers(t *testing.T) {
	t.Parallel()
	valid := func() config.Config {
		c := config.Default()
		c.Serve.Identifiers = []string{"loyalty_card"}
		c.Report.Sources = []source.Config{
			{Name: "crm", Kind: "postgres", DSN: "postgres://x@127.0.0.1/db", Query: "SELECT * FROM c WHERE phone = @phone"},
			{Name: "cards", Kind: "http", URL: "https://cards.example/cards/{identifier.loyalty_card}"},
			{Name: "sms", Kind: "http", URL: "https://sms.example/contacts?number={phone}"},
		}
		c.Canceller.Participants = []erasure.Participant{{Name: "cards", Kind: "http", URL: "https://cards.example/cards/{identifier.loyalty_card}"}}
		return c
	}
	c := valid()
	require.NoError(t, c.Validate())

	cases := []struct {
		name   string
		change func(*config.Config)
		want   string
	}{
		{"undeclared identifier in a source url", func(c *config.Config) { c.Serve.Identifiers = nil }, "report.sources[1].url"},
		{"undeclared identifier in sql", func(c *config.Config) {
			c.Report.Sources[0].Query = "SELECT * FROM c WHERE card = @identifier.passport"
		}, "report.sources[0].query uses identifier.passport"},
		{"undeclared identifier in a participant", func(c *config.Config) {
			c.Canceller.Participants[0].URL = "https://cards.example/cards/{identifier.passport}"
		}, "canceller.participants[0].url uses identifier.passport"},
		{"bad identifier name", func(c *config.Config) { c.Serve.Identifiers = []string{"Loyalty Card"} }, "serve.identifiers[0]"},
		{"repeated identifier name", func(c *config.Config) { c.Serve.Identifiers = []string{"loyalty_card", "loyalty_card"} }, "serve.identifiers[1]"},
		{"sql without any identifier", func(c *config.Config) { c.Report.Sources[0].Query = "SELECT * FROM c" }, "report.sources[0].query"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.change(&c)
			require.ErrorContains(t, c.Validate(), tc.want)
		})
	}
}
