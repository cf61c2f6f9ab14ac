package api_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDuplicateAndMiscasedMembersAreRefused sends bodies encoding/json alone
// would accept (the last duplicate winning, names matched in any case) to
// the real server: each gets 400 naming the member, and nothing is published.
func TestDuplicateAndMiscasedMembersAreRefused(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{})
	cases := []struct {
		name, body, field, message string
	}{
		{"duplicate type", `{"type":"access","type":"erasure","subject":{"id":"u1"}}`, "type", `duplicate member "type"`},
		{"duplicate subject.id", `{"type":"erasure","subject":{"id":"u1","id":"u2"}}`, "subject.id", `duplicate member "id"`},
		{"TYPE", `{"TYPE":"erasure","subject":{"id":"u1"}}`, "TYPE", `member "TYPE" must be spelled "type" (member names are case-sensitive)`},
		{"subject.Email", `{"type":"access","subject":{"Email":"ann@example.com"}}`, "subject.Email", `member "Email" must be spelled "email" (member names are case-sensitive)`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := h.submit(tc.body)
			require.Equal(t, http.StatusBadRequest, res.status, "%s", res.body)
			require.Equal(t, map[string]any{"error": "invalid_request", "field": tc.field, "message": tc.message}, res.json(t))
		})
	}
	require.Empty(t, h.take(), "refused bodies publish nothing")
	require.Equal(t, 0.0, h.submittedCount("erasure"))
	require.Equal(t, 0.0, h.submittedCount("access"))
}
