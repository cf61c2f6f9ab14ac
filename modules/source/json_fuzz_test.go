package source

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

// FuzzJSONFields checks the JSON record scanner (json.go) against encoding/json:
// for any valid object, Fields yields the same members, in order, with the
// same decoded keys and the same raw values; and a key written back with
// AppendString decodes to itself. The seeds (escapes, nesting, strings
// holding structural characters, duplicate and miscased members; those in
// testdata/fuzz/FuzzJSONFields too) run as a normal test.
func FuzzJSONFields(f *testing.F) {
	f.Add([]byte(`{"a":1,"b":"x","c":{"d":[1,2,{"e":null}]},"f":true}`))
	f.Add([]byte(`{"\u0041\"\\":"}{,:[]","":"","k":-1.5e10}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(` { "sp" : [ ] , "q" : "\ud83d\ude00" } `))
	f.Add([]byte(`{"a":"\u2028\u2029</script>"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var buf bytes.Buffer
		if !utf8.Valid(data) || json.Compact(&buf, data) != nil || buf.Len() == 0 || buf.Bytes()[0] != '{' {
			return
		}
		obj := buf.Bytes()
		var wantKeys []string
		var wantRaws []string
		dec := json.NewDecoder(bytes.NewReader(obj))
		_, err := dec.Token()
		require.NoError(t, err)
		for dec.More() {
			tok, err := dec.Token()
			require.NoError(t, err)
			var raw json.RawMessage
			require.NoError(t, dec.Decode(&raw))
			wantKeys = append(wantKeys, tok.(string))
			wantRaws = append(wantRaws, string(raw))
		}
		var gotKeys, gotRaws []string
		require.NoError(t, Fields(obj, func(key string, raw []byte) error {
			gotKeys = append(gotKeys, key)
			gotRaws = append(gotRaws, string(raw))
			return nil
		}), "%s", obj)
		require.Equal(t, wantKeys, gotKeys, "%s", obj)
		require.Equal(t, wantRaws, gotRaws, "%s", obj)
		for _, k := range gotKeys {
			var back string
			require.NoError(t, json.Unmarshal(AppendString(nil, k), &back), "%q", k)
			require.Equal(t, k, back)
		}
	})
}
