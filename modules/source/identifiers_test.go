package source_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/source"
)

// TestIdentifiersFollowTheKindsSyntax: each kind says how its fields name
// identifiers, so config checks them against serve.identifiers without
// knowing the kinds (a new kind touches only this package).
func TestIdentifiersFollowTheKindsSyntax(t *testing.T) {
	t.Parallel()
	names := func(c source.Config) map[string][]string {
		out := map[string][]string{}
		for _, f := range c.Identifiers() {
			if len(f.Names) > 0 {
				out[f.Field] = f.Names
			}
		}
		return out
	}
	for _, kind := range []string{"postgres", "mysql"} {
		require.Equal(t, map[string][]string{"query": {"customer_no"}}, names(source.Config{Kind: kind,
			Query: "SELECT * FROM t WHERE a = @identifier.customer_no AND b = '{identifier.not_a_param}'"}), kind)
	}
	require.Equal(t, map[string][]string{"url": {"account"}, "body": {"customer_no", "loyalty"}}, names(source.Config{Kind: "http",
		URL: "https://api.example/u/{identifier.account}", Body: `{"c": "{identifier.customer_no}", "l": "{identifier.loyalty}"}`}))
	require.Equal(t, map[string][]string{"query": {"account"}}, names(source.Config{Kind: "elasticsearch",
		URL: "https://es.example", Query: `{"term": {"account": "{identifier.account}"}, "x": "@identifier.not_a_template"}`}))
}
