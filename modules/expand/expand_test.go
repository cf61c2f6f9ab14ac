package expand_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/expand"
)

var sourceNames = []string{"subject_id", "email"}

func TestURLEncodesEveryValueIntoOneSegmentOrValue(t *testing.T) {
	t.Parallel()
	tmpl, err := expand.ParseURL("https://api.example/users/{subject_id}/data?email={email}&id={subject_id}", sourceNames...)
	require.NoError(t, err)
	require.Equal(t, []string{"subject_id", "email"}, tmpl.Names())
	cases := []struct{ id, email, want string }{
		{"u1", "ann@example.com", "https://api.example/users/u1/data?email=ann%40example.com&id=u1"},
		{"a/b", "x+y@e.io", "https://api.example/users/a%2Fb/data?email=x%2By%40e.io&id=a%2Fb"},
		{"..;", "a&b=c@e.io", "https://api.example/users/..%3B/data?email=a%26b%3Dc%40e.io&id=..%3B"},
		{"%2e%2e", "#?@e.io", "https://api.example/users/%252e%252e/data?email=%23%3F%40e.io&id=%252e%252e"},
		{`a\b c`, "ü@e.io", "https://api.example/users/a%5Cb%20c/data?email=%C3%BC%40e.io&id=a%5Cb%20c"},
		{"1001,1002", "e@e.io", "https://api.example/users/1001%2C1002/data?email=e%40e.io&id=1001%2C1002"},
		{"...", "e@e.io", "https://api.example/users/.../data?email=e%40e.io&id=..."},
	}
	for _, tc := range cases {
		got, err := tmpl.Expand(expand.Values{"subject_id": tc.id, "email": tc.email})
		require.NoError(t, err, tc.id)
		require.Equal(t, tc.want, got)
	}
}

func TestURLRefusesEmptyAndDotValues(t *testing.T) {
	t.Parallel()
	tmpl, err := expand.ParseURL("http://host/users/{subject_id}/export?e={email}", sourceNames...)
	require.NoError(t, err)
	for _, v := range []expand.Values{
		{"subject_id": "..", "email": "a@b.c"},
		{"subject_id": ".", "email": "a@b.c"},
		{"subject_id": "", "email": "a@b.c"},
		{"email": "a@b.c"},
		{"subject_id": "u1", "email": ".."},
		{"subject_id": "u1", "email": ""},
	} {
		out, err := tmpl.Expand(v)
		require.ErrorIs(t, err, expand.ErrValue, "%v", v)
		require.Empty(t, out)
		for _, val := range v {
			if val != "" {
				require.NotContains(t, err.Error(), val, "the error must not carry the value")
			}
		}
	}
}

func TestParseURLRefusesPlaceholdersThatCouldMoveTheCall(t *testing.T) {
	t.Parallel()
	cases := []struct{ name, tmpl string }{
		{"in the host", "https://{subject_id}.example/x"},
		{"in the port", "https://api.example:{subject_id}/x"},
		{"in userinfo", "https://{subject_id}@api.example/x"},
		{"in a query name", "https://api.example/x?{subject_id}=1"},
		{"alone in the query", "https://api.example/x?{subject_id}"},
		{"in the fragment", "https://api.example/x#{subject_id}"},
		{"unknown placeholder", "https://api.example/x/{user}"},
		{"stray brace", "https://api.example/x/{subject_id"},
		{"not http", "ftp://api.example/{subject_id}"},
		{"no host", "https:///{subject_id}"},
		{"literal dot segment", "https://api.example/a/../{subject_id}"},
		{"scheme placeholder", "{subject_id}://api.example/x"},
	}
	for _, tc := range cases {
		_, err := expand.ParseURL(tc.tmpl, sourceNames...)
		require.ErrorIs(t, err, expand.ErrTemplate, tc.name)
	}
}

func TestURLAcceptsPartialSegmentsAndQueryValues(t *testing.T) {
	t.Parallel()
	for _, tmpl := range []string{
		"https://api.example/users/{subject_id}.json",
		"https://api.example/users/id-{subject_id}",
		"https://api.example/search?q=user:{subject_id}&e={email}",
		"https://api.example/{subject_id}",
		"https://api.example/x?a=1&b={email}#frag",
		"https://API.example:8443/x/{subject_id}/",
	} {
		tm, err := expand.ParseURL(tmpl, sourceNames...)
		require.NoError(t, err, tmpl)
		_, err = tm.Expand(expand.Values{"subject_id": "u1", "email": "a@b.c"})
		require.NoError(t, err, tmpl)
	}
}

func TestJSONPlaceholdersOnlyInStringValues(t *testing.T) {
	t.Parallel()
	refused := []struct{ name, tmpl string }{
		{"bare in an array (the 1001,1002,1003 case)", `{"terms":{"user_id":[{subject_id}]}}`},
		{"bare value", `{"user_id":{subject_id}}`},
		{"object key", `{"{subject_id}":1}`},
		{"part of a key", `{"query":{"u_{subject_id}":"x"}}`},
		{"after a backslash", `{"a":"\{subject_id}"}`},
		{"not JSON", `user={subject_id}`},
		{"bare at the top", `{subject_id}`},
	}
	for _, tc := range refused {
		_, err := expand.ParseJSON(tc.tmpl, sourceNames...)
		require.ErrorIs(t, err, expand.ErrTemplate, tc.name)
	}
	tmpl, err := expand.ParseJSON(`{"query":{"bool":{"filter":[{"term":{"user_id":"{subject_id}"}},{"term":{"email":"mail:{email}"}}]}},"sort":["_doc"]}`, sourceNames...)
	require.NoError(t, err)
	got, err := tmpl.Expand(expand.Values{"subject_id": `1001","1002`, "email": "q\"uote\\@x\n"})
	require.NoError(t, err)
	require.Equal(t, `{"query":{"bool":{"filter":[{"term":{"user_id":"1001\",\"1002"}},{"term":{"email":"mail:q\"uote\\@x\n"}}]}},"sort":["_doc"]}`, got)
	_, err = tmpl.Expand(expand.Values{"subject_id": "..", "email": "a@b.c"})
	require.ErrorIs(t, err, expand.ErrValue)
}

// FuzzExpandURL: whatever the template (that ParseURL accepts) and the
// values, an expansion keeps the template's scheme, host, port, path
// prefix, segment count and query names, and is refused only for a
// missing, empty, "." or ".." value. Seeds: testdata/fuzz/FuzzExpandURL.
func FuzzExpandURL(f *testing.F) {
	f.Add("http://host/users/{subject_id}/export", "..", "ann@example.com")
	f.Fuzz(func(t *testing.T, tmplText, id, email string) {
		tmpl, err := expand.ParseURL(tmplText, sourceNames...)
		if err != nil {
			require.ErrorIs(t, err, expand.ErrTemplate)
			return
		}
		got, err := tmpl.Expand(expand.Values{"subject_id": id, "email": email})
		if refusable(id) && slices.Contains(tmpl.Names(), "subject_id") || refusable(email) && slices.Contains(tmpl.Names(), "email") {
			require.ErrorIs(t, err, expand.ErrValue)
			return
		}
		require.NoError(t, err, "a value that is not empty or a dot segment must expand")
		sample, err := tmpl.Expand(expand.Values{"subject_id": "x", "email": "x"})
		require.NoError(t, err)
		want, err := url.Parse(sample)
		require.NoError(t, err)
		u, err := url.Parse(got)
		require.NoError(t, err)
		require.Equal(t, want.Scheme, u.Scheme)
		require.Equal(t, want.Host, u.Host)
		require.Equal(t, want.User.String(), u.User.String())
		require.Equal(t, want.Fragment, u.Fragment)
		require.True(t, strings.HasPrefix(u.EscapedPath(), prefixBeforePlaceholder(tmplText)), "path %q lost the template's prefix", u.EscapedPath())
		require.Equal(t, strings.Count(want.EscapedPath(), "/"), strings.Count(u.EscapedPath(), "/"))
		for _, seg := range strings.Split(u.EscapedPath(), "/") {
			d, err := url.PathUnescape(seg)
			require.NoError(t, err)
			require.NotContains(t, []string{".", ".."}, d)
		}
		wq, gq := want.Query(), u.Query()
		require.Len(t, gq, len(wq))
		for k := range wq {
			require.Len(t, gq[k], len(wq[k]), "query name %q", k)
		}
	})
}

func refusable(v string) bool { return v == "" || v == "." || v == ".." }

// prefixBeforePlaceholder is the template's path up to its first path
// placeholder (the whole path when the placeholders are in the query).
func prefixBeforePlaceholder(tmpl string) string {
	rest := tmpl[strings.Index(tmpl, "://")+3:]
	i := strings.IndexAny(rest, "/?#")
	if i < 0 || rest[i] != '/' {
		return ""
	}
	path := rest[i:]
	if j := strings.IndexAny(path, "?#"); j >= 0 {
		path = path[:j]
	}
	if j := strings.Index(path, "{"); j >= 0 {
		path = path[:j]
	}
	return path
}

// FuzzExpandJSON: an expanded body is valid JSON with the template's
// structure: the same tokens in the same order, the same keys, and values
// differing only in the strings that hold placeholders. Seeds:
// testdata/fuzz/FuzzExpandJSON.
func FuzzExpandJSON(f *testing.F) {
	f.Add(`{"terms":{"user_id":["{subject_id}"]}}`, "1001,1002,1003", "a@b.c")
	f.Fuzz(func(t *testing.T, tmplText, id, email string) {
		tmpl, err := expand.ParseJSON(tmplText, sourceNames...)
		if err != nil {
			require.ErrorIs(t, err, expand.ErrTemplate)
			return
		}
		got, err := tmpl.Expand(expand.Values{"subject_id": id, "email": email})
		if refusable(id) && slices.Contains(tmpl.Names(), "subject_id") || refusable(email) && slices.Contains(tmpl.Names(), "email") {
			require.ErrorIs(t, err, expand.ErrValue)
			return
		}
		require.NoError(t, err)
		require.True(t, json.Valid([]byte(got)))
		const marker = "\x00m\x00" // cannot occur raw in a valid template's strings
		sample, err := tmpl.Expand(expand.Values{"subject_id": marker, "email": marker})
		require.NoError(t, err)
		want, have := tokens(t, sample), tokens(t, got)
		require.Len(t, have, len(want))
		for i := range want {
			ws, wIsString := want[i].(string)
			_, hIsString := have[i].(string)
			if wIsString && strings.Contains(ws, marker) {
				require.True(t, hIsString, "token %d changed kind", i)
				continue
			}
			require.Equal(t, want[i], have[i], "token %d", i)
		}
	})
}

func tokens(t *testing.T, doc string) []json.Token {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(doc))
	dec.UseNumber()
	var out []json.Token
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return out
		}
		require.NoError(t, err)
		out = append(out, tok)
	}
}
