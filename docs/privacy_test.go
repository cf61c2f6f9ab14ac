package docs_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/docs"
)

// TestRecordOfProcessingParses: every row of docs/privacy.md's table names
// its place, lifetime, remover and what an erasure does, and the places the
// erasure test relies on are there.
func TestRecordOfProcessingParses(t *testing.T) {
	t.Parallel()
	places, err := docs.RecordOfProcessing()
	require.NoError(t, err)
	cases := []struct {
		kind, key string
		kept      bool
	}{
		{"table", "requests.subject_email", false},
		{"table", "erasures.subject_id", false},
		{"table", "scheduled_messages.body", false},
		{"redis", "intake:idem:0123abcd", true},
		{"redis", "intake:accepted:0193a5c2-7e0b-7c4d-8f00-0000000000a1", false},
		{"files", "report storage", false},
	}
	for _, tc := range cases {
		p, ok := docs.Find(places, tc.kind, tc.key)
		require.True(t, ok, "%s %s is listed", tc.kind, tc.key)
		require.Equal(t, tc.kept, p.KeptAfterErasure(), "%s %s", tc.kind, tc.key)
	}
	_, ok := docs.Find(places, "table", "audit_events.details")
	require.False(t, ok, "the audit log holds no personal data")
}
