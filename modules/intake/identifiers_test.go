package intake_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/intake"
)

// TestPhoneNumbersAreValidatedAndNormalisedToE164: the usual separators
// are removed; a number without '+' and country code, with a trunk zero,
// letters, or too few or many digits is refused.
func TestPhoneNumbersAreValidatedAndNormalisedToE164(t *testing.T) {
	t.Parallel()
	cases := []struct{ in, want string }{
		{"+4915112345678", "+4915112345678"},
		{"+49 151 1234-5678", "+4915112345678"},
		{" +1 (415) 555.0132 ", "+14155550132"},
		{"+44 20/7946 0958", "+442079460958"},
		{"+49\u00a0151\u00a012345678", "+4915112345678"},
		{"015112345678", ""},
		{"+0151123456", ""},
		{"+49 151 CALL-ME", ""},
		{"+49 151", ""},
		{"+1234567890123456", ""},
		{"++4915112345678", ""},
		{"+49 151 1234+5678", ""},
		{"", ""},
	}
	for _, tc := range cases {
		got, err := intake.NormalizePhone(tc.in)
		if tc.want == "" {
			require.Error(t, err, "%q", tc.in)
			continue
		}
		require.NoError(t, err, "%q", tc.in)
		require.Equal(t, tc.want, got, "%q", tc.in)
	}
}

// TestParseReadsPhoneAndNamedIdentifiers: a subject may be a phone number
// or named identifiers alone; bad ones are refused naming the member.
func TestParseReadsPhoneAndNamedIdentifiers(t *testing.T) {
	t.Parallel()
	sub, err := intake.Parse([]byte(`{"type":"erasure","subject":{"phone":"+49 151 1234-5678","identifiers":{"loyalty_card":"LC-991","crm2":"77"}}}`))
	require.NoError(t, err)
	require.Equal(t, "+4915112345678", sub.Subject.Phone)
	require.Equal(t, map[string]string{"loyalty_card": "LC-991", "crm2": "77"}, sub.Subject.Identifiers)
	require.Empty(t, sub.Subject.ID)

	for body, field := range map[string]string{
		`{"type":"access","subject":{"phone":"0151 1234"}}`:                "subject.phone",
		`{"type":"access","subject":{"phone":42}}`:                         "subject.phone",
		`{"type":"access","subject":{"identifiers":{"Loyalty":"x"}}}`:      "subject.identifiers",
		`{"type":"access","subject":{"identifiers":{"identifier.x":"x"}}}`: "subject.identifiers",
		`{"type":"access","subject":{"identifiers":{"card":".."}}}`:        "subject.identifiers.card",
		`{"type":"access","subject":{"identifiers":{"card":"a b"}}}`:       "subject.identifiers.card",
		`{"type":"access","subject":{"identifiers":{"card":5}}}`:           "subject.identifiers",
		`{"type":"access","subject":{"identifiers":{}}}`:                   "subject",
		`{"type":"access","subject":{"fax":"+4930123456"}}`:                "subject.fax",
	} {
		_, err := intake.Parse([]byte(body))
		var fe *intake.FieldError
		require.ErrorAs(t, err, &fe, body)
		require.Equal(t, field, fe.Field, body)
	}
}
