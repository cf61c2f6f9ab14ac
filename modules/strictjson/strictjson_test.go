package strictjson_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/strictjson"
)

type inner struct {
	ID    string `json:"id"`
	Email string `json:"email,omitempty"`
}

type base struct {
	Version int `json:"version"`
}

type doc struct {
	base
	Type    *string          `json:"type"`
	Subject inner            `json:"subject"`
	Items   []inner          `json:"items"`
	Labels  map[string]inner `json:"labels"`
	Raw     json.RawMessage  `json:"raw"`
	Free    any              `json:"free"`
	Skipped string           `json:"-"`
	NoTag   string
	Extra   map[string]string `json:"extra"`
	Kind    string            `json:"kind"`
}

func TestCheck(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, body string
		path, msg  string // empty: no finding
	}{
		{"fine", `{"version":1,"type":"access","subject":{"id":"a"},"items":[{"id":"b"}],"NoTag":"x"}`, "", ""},
		{"duplicate at the top", `{"type":"access","type":"erasure"}`, "type", `duplicate member "type"`},
		{"duplicate spelled with an escape", `{"type":"access","\u0074ype":"erasure"}`, "type", `duplicate member "type"`},
		{"duplicate in a nested object", `{"subject":{"id":"a","id":"b"}}`, "subject.id", `duplicate member "id"`},
		{"duplicate in an array element", `{"items":[{"id":"a"},{"id":"b","id":"c"}]}`, "items[1].id", `duplicate member "id"`},
		{"duplicate in a map value", `{"labels":{"x":{"id":"a","id":"b"}}}`, "labels.x.id", `duplicate member "id"`},
		{"duplicate map key", `{"extra":{"k":"1","k":"2"}}`, "extra.k", `duplicate member "k"`},
		{"duplicate inside raw JSON", `{"raw":{"a":1,"a":2}}`, "raw.a", `duplicate member "a"`},
		{"duplicate inside any", `{"free":[{"a":1,"a":2}]}`, "free[0].a", `duplicate member "a"`},
		{"duplicate of an unknown member", `{"priority":1,"priority":2}`, "priority", `duplicate member "priority"`},
		{"upper case", `{"TYPE":"access"}`, "TYPE", `member "TYPE" must be spelled "type"`},
		{"mixed case nested", `{"subject":{"Id":"a"}}`, "subject.Id", `member "Id" must be spelled "id"`},
		{"case of an embedded field", `{"Version":1}`, "Version", `member "Version" must be spelled "version"`},
		{"case of an untagged field", `{"notag":"x"}`, "notag", `member "notag" must be spelled "NoTag"`},
		{"Kelvin sign folds to k", `{"` + "\u212a" + `ind":"x"}`, "\u212aind", `must be spelled "kind"`},
		{"long s folds to s", `{"` + "\u017f" + `ubject":{}}`, "\u017fubject", `must be spelled "subject"`},
		{"map keys are free in case", `{"labels":{"X":{"id":"a"},"x":{"id":"b"}}}`, "", ""},
		{"raw JSON is free in case", `{"raw":{"ID":1},"free":{"ID":1}}`, "", ""},
		{"json:\"-\" is no member", `{"Skipped":"x","skipped":"y"}`, "", ""},
		{"malformed is left to the decoder", `{"type":"access",`, "", ""},
		{"duplicate empty name", `{"subject":{"":1,"":2}}`, `subject.""`, `duplicate member ""`},
		{"not an object", `[1,2,{"a":1,"a":2}]`, "[2].a", `duplicate member "a"`},
		{"invalid UTF-8 in a value", "{\"subject\":{\"id\":\"p-\xff\"}}", "subject.id", "must be valid UTF-8"},
		{"invalid UTF-8 in a name", "{\"subject\":{\"i\xc3\":\"p\"}}", "subject.i\ufffd", "member name must be valid UTF-8"},
		{"a truncated sequence", "{\"type\":\"\xe2\x82\"}", "type", "must be valid UTF-8"},
		{"a lone high surrogate", `{"subject":{"id":"p-\ud800"}}`, "subject.id", "unpaired surrogate"},
		{"a lone low surrogate", `{"subject":{"id":"p-\udc00x"}}`, "subject.id", "unpaired surrogate"},
		{"a high surrogate before a non-surrogate escape", `{"subject":{"id":"\ud800\u0041"}}`, "subject.id", "unpaired surrogate"},
		{"two high surrogates", `{"subject":{"id":"\ud83d\ud83d"}}`, "subject.id", "unpaired surrogate"},
		{"a lone surrogate in a top-level string", `"\ud800"`, "body", "unpaired surrogate"},
		{"a paired surrogate is fine", `{"subject":{"id":"p-\ud83d\ude00"}}`, "", ""},
		{"raw UTF-8 is fine", `{"subject":{"id":"J\u00fcrgen-` + "\u00fc\U0001F600" + `"}}`, "", ""},
		{"an escaped backslash before u is no escape", `{"subject":{"id":"\\ud800"}}`, "", ""},
		{"U+FFFD sent as such is fine", `{"subject":{"id":"` + "\ufffd" + `"}}`, "", ""},
		{"deep nesting stops quietly", strings.Repeat("[", 20000) + strings.Repeat("]", 20000), "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := strictjson.Check([]byte(tc.body), &doc{})
			if tc.path == "" {
				require.NoError(t, err)
				return
			}
			var me *strictjson.MemberError
			require.ErrorAs(t, err, &me)
			require.ErrorIs(t, err, strictjson.ErrStrict)
			require.Equal(t, tc.path, me.Path)
			require.Contains(t, me.Message, tc.msg)
		})
	}
}

// TestCheckFindsWhatEncodingJSONLetsThrough pins the behaviour Check exists
// for: encoding/json takes the last duplicate and folds case.
func TestCheckFindsWhatEncodingJSONLetsThrough(t *testing.T) {
	t.Parallel()
	for _, body := range []string{`{"type":"access","type":"erasure"}`, `{"TYPE":"erasure"}`} {
		var d doc
		require.NoError(t, json.Unmarshal([]byte(body), &d), body)
		require.Equal(t, "erasure", *d.Type, body)
		require.Error(t, strictjson.Check([]byte(body), &d), body)
	}
	var d doc
	require.NoError(t, json.Unmarshal([]byte(`{"`+"\u212a"+`ind":"x"}`), &d))
	require.Equal(t, "x", d.Kind, "the Kelvin sign matches k")
}
