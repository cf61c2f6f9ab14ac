package expand_test

import (
	"net/url"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/expand"
)

// fieldTemplates are source and participant URLs as an install writes them:
// each placeholder in a path segment, in a query value, or both.
var fieldTemplates = []string{
	"http://upstream.internal:8081/api/v1/users/{subject_id}/export?email={email}&page=1",
	"https://crm.example/customers/{email}",
	"http://127.0.0.1:9/a/b/{subject_id}",
	"https://h.example/search?q={subject_id}&e={email}",
	"http://h.example/v2/{subject_id}/{email}/records",
}

// FuzzFields: the subject's fields as intake validates them (event.Subject.
// Check, docs/api.md "Identifier rules"), then substituted into a template.
// Validity first: a field that passes has none of what the rules refuse
// (empty, "." or "..", too long, invalid UTF-8, control, format or space
// characters). Then the property: expanding an accepted subject never
// changes the scheme, host, port or the path before the first placeholder,
// never produces a dot segment or an extra path segment or query member,
// and each placeholder decodes back to exactly the field's value. Seeds:
// testdata/fuzz/FuzzFields (every case of #11).
func FuzzFields(f *testing.F) {
	f.Add("..", "ann@example.com", uint8(0))
	f.Fuzz(func(t *testing.T, id, email string, which uint8) {
		sub := event.Subject{ID: id, Email: email}
		if err := sub.Check(); err != nil {
			return
		}
		for field, v := range map[string]struct {
			v   string
			max int
		}{"subject.id": {id, event.MaxSubjectIDLen}, "subject.email": {email, event.MaxEmailLen}} {
			if v.v == "" {
				continue
			}
			require.NotContains(t, []string{".", ".."}, v.v, field)
			require.LessOrEqual(t, len(v.v), v.max, field)
			require.True(t, utf8.ValidString(v.v), field)
			for _, r := range v.v {
				require.False(t, unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || unicode.IsSpace(r), "%s accepted %U", field, r)
			}
		}

		text := fieldTemplates[int(which)%len(fieldTemplates)]
		tmpl, err := expand.ParseURL(text, sourceNames...)
		require.NoError(t, err)
		values := expand.Values{"subject_id": id, "email": email}
		got, err := tmpl.Expand(values)
		missing := false
		for _, n := range tmpl.Names() {
			missing = missing || values[n] == ""
		}
		if missing {
			// A subject without the field the template needs is never
			// called with an empty value.
			require.ErrorIs(t, err, expand.ErrValue)
			return
		}
		require.NoError(t, err)
		want, err := url.Parse(text)
		require.NoError(t, err)
		u, err := url.Parse(got)
		require.NoError(t, err, "the expansion is a URL")
		require.Equal(t, want.Scheme, u.Scheme)
		require.Equal(t, want.Hostname(), u.Hostname())
		require.Equal(t, want.Port(), u.Port())
		require.Nil(t, u.User)
		require.Empty(t, u.Fragment)
		prefix := prefixBeforePlaceholder(text)
		require.True(t, strings.HasPrefix(u.EscapedPath(), prefix), "path %q lost the template's prefix %q", u.EscapedPath(), prefix)
		tsegs, gsegs := strings.Split(want.EscapedPath(), "/"), strings.Split(u.EscapedPath(), "/")
		require.Len(t, gsegs, len(tsegs), "a value added or removed a path segment: %q", got)
		for i, seg := range gsegs {
			d, err := url.PathUnescape(seg)
			require.NoError(t, err)
			require.NotContains(t, []string{".", ".."}, d, "dot segment in %q", got)
			switch tsegs[i] {
			case "%7Bsubject_id%7D", "{subject_id}":
				require.Equal(t, id, d)
			case "%7Bemail%7D", "{email}":
				require.Equal(t, email, d)
			}
		}
		wq, gq := want.Query(), u.Query()
		require.Len(t, gq, len(wq), "a value added a query member: %q", got)
		for k, vs := range wq {
			require.Len(t, gq[k], len(vs), "query name %q", k)
			switch vs[0] {
			case "{subject_id}":
				require.Equal(t, id, gq.Get(k))
			case "{email}":
				require.Equal(t, email, gq.Get(k))
			default:
				require.Equal(t, vs[0], gq.Get(k))
			}
		}
	})
}
