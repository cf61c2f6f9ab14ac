package erasure_test

import (
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/erasure"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// TestStatesAreTheSchemas: erasure.States and erasure.ErasureStates list
// exactly the values the tables' CHECK constraints allow, in their order,
// so that a state added to one is not missing from the other.
func TestStatesAreTheSchemas(t *testing.T) {
	t.Parallel()
	gdb, _ := testkit.Postgres(t)
	allowed := func(constraint string) []string {
		t.Helper()
		var def string
		require.NoError(t, gdb.Raw(`SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = ?`, constraint).Scan(&def).Error)
		require.NotEmpty(t, def, constraint)
		var out []string
		for _, m := range regexp.MustCompile(`'([a-z_]+)'`).FindAllStringSubmatch(def, -1) {
			out = append(out, m[1])
		}
		return out
	}
	var states, erasureStates []string
	for _, s := range erasure.States() {
		states = append(states, string(s))
	}
	for _, s := range erasure.ErasureStates() {
		erasureStates = append(erasureStates, string(s))
	}
	require.Equal(t, allowed("erasure_participants_state_check"), states)
	require.Equal(t, allowed("erasures_state_check"), erasureStates)
	for _, s := range erasure.States() {
		require.Equal(t, s == erasure.StateErased || s == erasure.StateNotFound, s.Confirmed(), s)
	}
}
