package intake_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/intake"
)

// TestParseRefusesDuplicateAndMiscasedMembers: encoding/json alone lets the
// last of two members win and matches names in any case, so
// {"type":"access","type":"erasure"} would run an erasure.
func TestParseRefusesDuplicateAndMiscasedMembers(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, body, field, message string
	}{
		{"duplicate type", `{"type":"access","type":"erasure","subject":{"id":"u1"}}`, "type", `duplicate member "type"`},
		{"duplicate type, same value", `{"type":"access","type":"access","subject":{"id":"u1"}}`, "type", `duplicate member "type"`},
		{"duplicate type spelled with an escape", `{"type":"access","\u0074ype":"erasure","subject":{"id":"u1"}}`, "type", `duplicate member "type"`},
		{"duplicate subject", `{"type":"access","subject":{"id":"u1"},"subject":{"id":"u2"}}`, "subject", `duplicate member "subject"`},
		{"duplicate subject.id", `{"type":"access","subject":{"id":"u1","id":"u2"}}`, "subject.id", `duplicate member "id"`},
		{"duplicate subject.email", `{"type":"access","subject":{"email":"a@example.com","email":"b@example.com"}}`, "subject.email", `duplicate member "email"`},
		{"duplicate unknown member", `{"type":"access","subject":{"id":"u1"},"x":1,"x":2}`, "x", `duplicate member "x"`},
		{"TYPE", `{"TYPE":"erasure","subject":{"id":"u1"}}`, "TYPE", `member "TYPE" must be spelled "type"`},
		{"Type beside type", `{"type":"access","Type":"erasure","subject":{"id":"u1"}}`, "Type", `member "Type" must be spelled "type"`},
		{"Subject", `{"type":"access","Subject":{"id":"u1"}}`, "Subject", `must be spelled "subject"`},
		{"subject.ID", `{"type":"access","subject":{"ID":"u1"}}`, "subject.ID", `must be spelled "id"`},
		{"subject.Email", `{"type":"access","subject":{"Email":"a@example.com"}}`, "subject.Email", `must be spelled "email"`},
		{"long s in subject", `{"type":"access","` + "\u017f" + `ubject":{"id":"u1"}}`, "\u017fubject", `must be spelled "subject"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := intake.Parse([]byte(tc.body))
			require.ErrorIs(t, err, intake.ErrInvalid)
			var fe *intake.FieldError
			require.ErrorAs(t, err, &fe)
			require.Equal(t, tc.field, fe.Field, "message: %s", fe.Message)
			require.Contains(t, fe.Message, tc.message)
		})
	}
}
