package intake_test

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/intake"
)

func TestParseNamesTheFieldOfBadInput(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, body, field string
	}{
		{"malformed JSON", `{"type":`, "body"},
		{"not JSON at all", `type=access`, "body"},
		{"empty body", ``, "body"},
		{"array", `[]`, "body"},
		{"two objects", `{"type":"access","subject":{"id":"u1"}} {}`, "body"},
		{"missing type", `{"subject":{"id":"u1"}}`, "type"},
		{"unknown type", `{"type":"delete","subject":{"id":"u1"}}`, "type"},
		{"type not a string", `{"type":1,"subject":{"id":"u1"}}`, "type"},
		{"missing subject", `{"type":"access"}`, "subject"},
		{"null subject", `{"type":"access","subject":null}`, "subject"},
		{"empty subject", `{"type":"access","subject":{}}`, "subject"},
		{"subject not an object", `{"type":"access","subject":"u1"}`, "subject"},
		{"unknown member", `{"type":"access","subject":{"id":"u1"},"priority":1}`, "priority"},
		{"unknown subject member", `{"type":"access","subject":{"id":"u1","phone":"1"}}`, "subject.phone"},
		{"id not a string", `{"type":"access","subject":{"id":7}}`, "subject.id"},
		{"empty id", `{"type":"access","subject":{"id":""}}`, "subject.id"},
		{"id with space", `{"type":"access","subject":{"id":"u 1"}}`, "subject.id"},
		{"dot-dot id", `{"type":"access","subject":{"id":".."}}`, "subject.id"},
		{"dot id", `{"type":"access","subject":{"id":"."}}`, "subject.id"},
		{"id with right-to-left override", `{"type":"access","subject":{"id":"u\u202e1"}}`, "subject.id"},
		{"id with an invalid UTF-8 byte", "{\"type\":\"access\",\"subject\":{\"id\":\"u\xff1\"}}", "subject.id"},
		{"id with a lone surrogate escape", `{"type":"access","subject":{"id":"u\ud8001"}}`, "subject.id"},
		{"email with an invalid UTF-8 byte", "{\"type\":\"access\",\"subject\":{\"email\":\"ann\xc3@example.com\"}}", "subject.email"},
		{"id with zero-width space", `{"type":"access","subject":{"id":"u\u200b1"}}`, "subject.id"},
		{"id with byte order mark", `{"type":"access","subject":{"id":"\ufeffu1"}}`, "subject.id"},
		{"id with soft hyphen", `{"type":"access","subject":{"id":"u\u00ad1"}}`, "subject.id"},
		{"id with NUL", `{"type":"access","subject":{"id":"u\u00001"}}`, "subject.id"},
		{"id with DEL", `{"type":"access","subject":{"id":"u\u007f1"}}`, "subject.id"},
		{"id with newline", `{"type":"access","subject":{"id":"u\n1"}}`, "subject.id"},
		{"id with no-break space", `{"type":"access","subject":{"id":"u\u00a01"}}`, "subject.id"},
		{"id with line separator", `{"type":"access","subject":{"id":"u\u20281"}}`, "subject.id"},
		{"email with right-to-left override", `{"type":"access","subject":{"email":"ann\u202e@example.com"}}`, "subject.email"},
		{"email with zero-width space", `{"type":"access","subject":{"email":"ann@exa\u200bmple.com"}}`, "subject.email"},
		{"id exactly too long", `{"type":"access","subject":{"id":"` + strings.Repeat("é", 129) + `"}}`, "subject.id"},
		{"id too long", `{"type":"access","subject":{"id":"` + strings.Repeat("x", 257) + `"}}`, "subject.id"},
		{"bad email", `{"type":"access","subject":{"email":"not-an-email"}}`, "subject.email"},
		{"email with name", `{"type":"access","subject":{"email":"Ann <ann@example.com>"}}`, "subject.email"},
		{"email without domain dot", `{"type":"access","subject":{"email":"ann@localhost"}}`, "subject.email"},
		{"empty email", `{"type":"access","subject":{"email":""}}`, "subject.email"},
		{"bad email with good id", `{"type":"erasure","subject":{"id":"u1","email":"x@"}}`, "subject.email"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := intake.Parse([]byte(tc.body))
			require.ErrorIs(t, err, intake.ErrInvalid)
			var fe *intake.FieldError
			require.ErrorAs(t, err, &fe)
			require.Equal(t, tc.field, fe.Field, "message: %s", fe.Message)
			require.NotEmpty(t, fe.Message)
		})
	}
}

func TestParseAcceptsValidRequests(t *testing.T) {
	t.Parallel()
	cases := []struct {
		body string
		want intake.Submission
	}{
		{`{"type":"access","subject":{"id":"u1"}}`, intake.Submission{Type: "access", Subject: event.Subject{ID: "u1"}}},
		{`{"subject":{"email":"ann@example.com"},"type":"erasure"}`, intake.Submission{Type: "erasure", Subject: event.Subject{Email: "ann@example.com"}}},
		{` {"type":"access","subject":{"id":"u1","email":"a.b+c@mail.example.org"}} `, intake.Submission{Type: "access", Subject: event.Subject{ID: "u1", Email: "a.b+c@mail.example.org"}}},
		{`{"type":"erasure","subject":{"email":"Ann.Lee@Mail.EXAMPLE.com"}}`, intake.Submission{Type: "erasure", Subject: event.Subject{Email: "Ann.Lee@mail.example.com"}}},
		{`{"type":"access","subject":{"id":"..."}}`, intake.Submission{Type: "access", Subject: event.Subject{ID: "..."}}},
		{`{"type":"access","subject":{"id":"ü-1.2_x~"}}`, intake.Submission{Type: "access", Subject: event.Subject{ID: "ü-1.2_x~"}}},
		{`{"type":"access","subject":{"id":"` + strings.Repeat("x", 256) + `"}}`, intake.Submission{Type: "access", Subject: event.Subject{ID: strings.Repeat("x", 256)}}},
	}
	for _, tc := range cases {
		got, err := intake.Parse([]byte(tc.body))
		require.NoError(t, err, tc.body)
		require.Equal(t, tc.want, got)
	}
}

func TestDueAtIsOneCalendarMonthClampedToMonthEnd(t *testing.T) {
	t.Parallel()
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		require.NoError(t, err)
		return v
	}
	cases := map[string]string{
		"2026-01-15T10:00:00Z": "2026-02-15T10:00:00Z",
		"2026-01-31T10:00:00Z": "2026-02-28T10:00:00Z",
		"2028-01-31T10:00:00Z": "2028-02-29T10:00:00Z",
		"2026-03-31T23:59:59Z": "2026-04-30T23:59:59Z",
		"2026-12-31T00:00:00Z": "2027-01-31T00:00:00Z",
		// Counted in UTC: this is 30 April there.
		"2026-05-01T01:00:00+02:00": "2026-05-30T23:00:00Z",
	}
	for in, want := range cases {
		require.Equal(t, at(want), intake.DueAt(at(in)), in)
	}
}

func TestTokensMatchOnlyConfiguredDigests(t *testing.T) {
	t.Parallel()
	digest := func(s string) string {
		sum := sha256.Sum256([]byte(s))
		return hex.EncodeToString(sum[:])
	}
	tokens, err := intake.ParseTokens([]string{digest("alpha-token"), digest("beta-token")})
	require.NoError(t, err)
	a, ok := tokens.Match("alpha-token")
	require.True(t, ok)
	b, ok := tokens.Match("beta-token")
	require.True(t, ok)
	require.NotEqual(t, a, b, "callers are told apart")
	for _, bad := range []string{"", "alpha", "alpha-token ", digest("alpha-token")} {
		_, matched := tokens.Match(bad)
		require.False(t, matched, bad)
	}
	_, err = intake.ParseTokens([]string{"alpha-token"})
	require.Error(t, err, "a raw token instead of a digest is refused")
	empty, err := intake.ParseTokens(nil)
	require.NoError(t, err)
	_, ok = empty.Match("alpha-token")
	require.False(t, ok)
}

func TestParseID(t *testing.T) {
	t.Parallel()
	id, err := intake.ParseID("0193A5C2-7E0B-7C4D-8F00-0123456789AB")
	require.NoError(t, err)
	require.Equal(t, "0193a5c2-7e0b-7c4d-8f00-0123456789ab", id)
	for _, bad := range []string{"", "42", "not-a-uuid", "{0193a5c2-7e0b-7c4d-8f00-0123456789ab}", "urn:uuid:0193a5c2-7e0b-7c4d-8f00-0123456789ab"} {
		_, err := intake.ParseID(bad)
		var fe *intake.FieldError
		require.ErrorAs(t, err, &fe, bad)
		require.Equal(t, "id", fe.Field)
	}
}

func TestParseRegulation(t *testing.T) {
	t.Parallel()
	for body, want := range map[string]string{
		`{"type":"access","subject":{"id":"u1"}}`:                      "",
		`{"type":"access","subject":{"id":"u1"},"regulation":"ccpa"}`:  "ccpa",
		`{"type":"erasure","subject":{"id":"u1"},"regulation":"lgpd"}`: "lgpd",
	} {
		sub, err := intake.Parse([]byte(body))
		require.NoError(t, err, body)
		require.Equal(t, want, sub.Regulation, body)
	}
	for _, body := range []string{
		`{"type":"access","subject":{"id":"u1"},"regulation":"hipaa"}`,
		`{"type":"access","subject":{"id":"u1"},"regulation":""}`,
		`{"type":"access","subject":{"id":"u1"},"regulation":1}`,
	} {
		_, err := intake.Parse([]byte(body))
		var fe *intake.FieldError
		require.ErrorAs(t, err, &fe, body)
		require.Equal(t, "regulation", fe.Field, body)
	}
}

// TestParseReadsVerificationAndLocale: an app states how it verified the
// subject and the language of the emails; a bad member is named.
func TestParseReadsVerificationAndLocale(t *testing.T) {
	t.Parallel()
	sub, err := intake.Parse([]byte(`{"type":"access","subject":{"id":"u-1"},"locale":"de-AT",
		"verification":{"method":"session","verified_at":"2026-01-02T03:04:05Z"}}`))
	require.NoError(t, err)
	require.Equal(t, "de-at", sub.Locale)
	require.NotNil(t, sub.Verification)
	require.Equal(t, "session", sub.Verification.Method)
	require.Equal(t, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), sub.Verification.VerifiedAt)

	for body, field := range map[string]string{
		`{"type":"access","subject":{"id":"u"},"verification":{"verified_at":"2026-01-02T03:04:05Z"}}`:                              "verification.method",
		`{"type":"access","subject":{"id":"u"},"verification":{"method":"Session!","verified_at":"2026-01-02T03:04:05Z"}}`:          "verification.method",
		`{"type":"access","subject":{"id":"u"},"verification":{"method":"session"}}`:                                                "verification.verified_at",
		`{"type":"access","subject":{"id":"u"},"verification":{"method":"session","verified_at":"yesterday"}}`:                      "verification.verified_at",
		`{"type":"access","subject":{"id":"u"},"verification":{"method":"session","verified_at":"2999-01-01T00:00:00Z"}}`:           "verification.verified_at",
		`{"type":"access","subject":{"id":"u"},"verification":{"method":"session","verified_at":"2026-01-02T03:04:05Z","who":"x"}}`: "verification.who",
		`{"type":"access","subject":{"id":"u"},"locale":"english please"}`:                                                          "locale",
	} {
		_, err := intake.Parse([]byte(body))
		var fe *intake.FieldError
		require.ErrorAs(t, err, &fe, body)
		require.Equal(t, field, fe.Field, body)
	}
}
