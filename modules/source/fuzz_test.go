package source

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzBindNamed checks the SQL named-parameter binder on any query: only
// @subject_id and @email are ever bound, and binding its own output binds
// nothing and changes nothing, so no placeholder can be formed, left
// behind or moved into or out of a literal or comment. The seeds in
// testdata/fuzz/FuzzBindNamed (quotes, comments, escapes) run as a normal test.
func FuzzBindNamed(f *testing.F) {
	f.Add("SELECT * FROM t WHERE id = @subject_id OR e = @email", true)
	f.Add(`SELECT 'a\'@email' WHERE e = @email`, false)
	f.Add("SELECT '@email' -- @email\n/* @subject_id */ WHERE x = @subject_idx AND y = @@email", true)
	f.Add("SELECT 'unterminated @email", false)
	f.Add("-@email-/@subject_id*", true)
	f.Fuzz(func(t *testing.T, q string, dollar bool) {
		out, params := bindNamed(q, dollar)
		for _, p := range params {
			require.Contains(t, []string{paramSubjectID, paramEmail}, p)
		}
		again, more := bindNamed(out, dollar)
		require.Empty(t, more, "binding the output bound again: %q", out)
		require.Equal(t, out, again)
	})
}
