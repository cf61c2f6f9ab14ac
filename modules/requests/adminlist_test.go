package requests_test

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/modules/requests"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// TestAdminListFiltersSortsPagesAndCounts checks each filter of the
// officer's request list (docs/console.md) against rows whose attributes
// are known, each sort order, keyset pages that neither lose nor repeat a
// row, and the counts per state.
func TestAdminListFiltersSortsPagesAndCounts(t *testing.T) {
	t.Parallel()
	gdb, _ := testkit.Postgres(t)
	store := requests.NewStore(gdb, nil)
	now := time.Now().UTC().Truncate(time.Second)
	day := 24 * time.Hour
	type row struct {
		name, typ, state, regulation, client string
		submitted, due                       time.Duration // from now
	}
	rows := []row{
		{"a", "access", "received", "gdpr", "shop", -10 * day, 20 * day},
		{"b", "erasure", "handed_over", "ccpa", "app", -9 * day, 5 * day}, // near (ccpa 7 d)
		{"c", "access", "failed", "lgpd", "shop", -20 * day, -5 * day},    // overdue
		{"d", "access", "completed", "gdpr", "app", -30 * day, -1 * day},  // past but answered
		{"e", "erasure", "processing", "lgpd", "", -2 * day, 2 * day},     // near (lgpd 3 d)
		{"f", "access", "received", "gdpr", "shop", -1 * day, 29 * day},
	}
	ids := map[string]string{}
	names := map[string]string{}
	for _, r := range rows {
		id := insertAdminRow(t, gdb, r.typ, r.state, r.regulation, r.client, now.Add(r.submitted), now.Add(r.due))
		ids[r.name], names[id] = id, r.name
	}
	near := map[string]time.Duration{"gdpr": 7 * day, "ccpa": 7 * day, "lgpd": 3 * day}
	list := func(f requests.Filter) []string {
		t.Helper()
		f.Limit = 100
		page, err := store.List(t.Context(), f)
		require.NoError(t, err)
		var out []string
		for _, r := range page.Requests {
			out = append(out, names[r.ID])
		}
		return out
	}
	cases := []struct {
		name string
		f    requests.Filter
		want []string
	}{
		{"everything, by deadline", requests.Filter{}, []string{"c", "d", "e", "b", "a", "f"}},
		{"by deadline, latest first", requests.Filter{Sort: requests.SortDeadlineDesc}, []string{"f", "a", "b", "e", "d", "c"}},
		{"by submission", requests.Filter{Sort: requests.SortSubmittedAt}, []string{"d", "c", "a", "b", "e", "f"}},
		{"by submission, newest first", requests.Filter{Sort: requests.SortSubmittedAtDesc}, []string{"f", "e", "b", "a", "c", "d"}},
		{"states", requests.Filter{States: []string{"received", "failed"}}, []string{"c", "a", "f"}},
		{"type", requests.Filter{Type: "erasure"}, []string{"e", "b"}},
		{"regulation", requests.Filter{Regulation: "lgpd"}, []string{"c", "e"}},
		{"client", requests.Filter{Client: "app"}, []string{"d", "b"}},
		{"due before", requests.Filter{DueBefore: now.Add(3 * day)}, []string{"c", "d", "e"}},
		{"overdue: open and past the deadline", requests.Filter{Overdue: true}, []string{"c"}},
		{"near the deadline, per regulation", requests.Filter{NearDeadline: true, Near: near}, []string{"e", "b"}},
		{"submitted between", requests.Filter{SubmittedAfter: now.Add(-15 * day), SubmittedBefore: now.Add(-5 * day)}, []string{"b", "a"}},
		{"filters combine", requests.Filter{Type: "access", Client: "shop", States: []string{"received"}}, []string{"a", "f"}},
	}
	for _, tc := range cases {
		require.Equal(t, tc.want, list(tc.f), tc.name)
	}

	// Keyset pages of two: every row once, in order, then no next page.
	var paged []string
	f := requests.Filter{Limit: 2, Sort: requests.SortSubmittedAtDesc}
	for range 10 {
		page, err := store.List(t.Context(), f)
		require.NoError(t, err)
		require.LessOrEqual(t, len(page.Requests), 2)
		for _, r := range page.Requests {
			paged = append(paged, names[r.ID])
		}
		if page.Next == "" {
			break
		}
		f.Cursor = page.Next
	}
	require.Equal(t, []string{"f", "e", "b", "a", "c", "d"}, paged)
	// A cursor of one sort order is refused for another.
	first, err := store.List(t.Context(), requests.Filter{Limit: 2, Sort: requests.SortDeadline})
	require.NoError(t, err)
	_, err = store.List(t.Context(), requests.Filter{Limit: 2, Sort: requests.SortSubmittedAt, Cursor: first.Next})
	require.ErrorIs(t, err, requests.ErrBadCursor)

	counts, err := store.Counts(t.Context())
	require.NoError(t, err)
	require.Equal(t, 2, counts["received"])
	require.Equal(t, 1, counts["failed"])
	require.Equal(t, 1, counts["completed"])
	require.Equal(t, 1, counts["handed_over"])
	require.Equal(t, 1, counts["processing"])
}

func insertAdminRow(t *testing.T, gdb *gorm.DB, typ, state, regulation, client string, submitted, due time.Time) string {
	t.Helper()
	id := uuid.NewString()
	require.NoError(t, gdb.Exec(`INSERT INTO requests (id, type, state, regulation, client, submitted_at, received_at, due_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, id, typ, state, regulation, client, submitted, submitted, due, submitted).Error)
	return id
}
