package intake_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/intake"
)

// FuzzParse checks the request decoder on any body: it never panics, every
// refusal is a *FieldError naming a field, and an accepted body holds
// exactly the members of the API spelled exactly, none twice, with the
// values the submission reports, every identifier within the identifier
// rules (docs/api.md). Run with go test -fuzz FuzzParse; the seeds in
// testdata/fuzz/FuzzParse (duplicate and miscased members, dot and
// invisible identifiers, and a valid body using each optional member) run
// as a normal test.
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		s, err := intake.Parse(body)
		if err != nil {
			var fe *intake.FieldError
			require.ErrorAs(t, err, &fe)
			require.ErrorIs(t, err, intake.ErrInvalid)
			require.NotEmpty(t, fe.Field)
			require.NotEmpty(t, fe.Message)
			return
		}
		require.Contains(t, []string{event.KindAccess, event.KindErasure}, s.Type)
		require.False(t, s.Subject.Empty(), "an accepted subject identifies someone")
		if s.Subject.ID != "" {
			require.Empty(t, event.IdentifierProblem(s.Subject.ID, event.MaxSubjectIDLen), "subject.id %q is within the identifier rules", s.Subject.ID)
		}
		if s.Subject.Email != "" {
			require.Empty(t, event.IdentifierProblem(s.Subject.Email, event.MaxEmailLen), "subject.email %q is within the identifier rules", s.Subject.Email)
		}
		for name, v := range s.Subject.Identifiers {
			require.Empty(t, event.IdentifierProblem(v, event.MaxSubjectIDLen), "subject.identifiers.%s %q is within the identifier rules", name, v)
		}

		top := members(t, body)
		require.Subset(t, []string{"type", "subject", "regulation", "verification", "locale"}, names(top), "only the API's members, spelled exactly")
		var typ string
		require.NoError(t, json.Unmarshal(top["type"], &typ))
		require.Equal(t, s.Type, typ)
		subject := members(t, top["subject"])
		require.Subset(t, []string{"id", "email", "phone", "identifiers"}, names(subject))
		var got event.Subject
		require.NoError(t, json.Unmarshal(top["subject"], &got))
		// The email's domain is case-insensitive (RFC 5321 2.4) and comes
		// back lower-cased; the local part is kept as sent. A phone number
		// comes back in E.164.
		if local, domain, ok := strings.Cut(got.Email, "@"); ok {
			got.Email = local + "@" + strings.ToLower(domain)
		}
		if got.Phone != "" {
			got.Phone, err = intake.NormalizePhone(got.Phone)
			require.NoError(t, err)
		}
		if len(got.Identifiers) == 0 {
			got.Identifiers = nil
		}
		require.Equal(t, s.Subject, got)

		// What was accepted round-trips.
		again := map[string]any{"type": s.Type, "subject": s.Subject}
		if s.Regulation != "" {
			again["regulation"] = s.Regulation
		}
		if s.Locale != "" {
			again["locale"] = s.Locale
		}
		if s.Verification != nil {
			again["verification"] = s.Verification
		}
		back, err := intake.Parse(mustJSON(t, again))
		require.NoError(t, err)
		require.Equal(t, s, back)
	})
}

// members returns the members of the JSON object in data by name, failing
// the test on a repeated name (kept apart: the map would hide it).
func members(t *testing.T, data []byte) map[string]json.RawMessage {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	require.NoError(t, err)
	require.Equal(t, json.Delim('{'), tok)
	out := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		require.NoError(t, err)
		name := tok.(string)
		_, seen := out[name]
		require.False(t, seen, "member %q twice", name)
		var v json.RawMessage
		require.NoError(t, dec.Decode(&v))
		out[name] = v
	}
	_, err = dec.Token()
	require.NoError(t, err)
	_, err = dec.Token()
	require.True(t, errors.Is(err, io.EOF), "one value only")
	return out
}

func names(m map[string]json.RawMessage) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}
