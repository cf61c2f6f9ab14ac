package app

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/erasure"
	"github.com/gdpr-oss/gdpr/modules/requests"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// TestOfficerListFindsParticipantsOverdue: the admin list's
// participant_overdue filter selects the erasures still open with a
// participant an operator must act on (overdue, failed, cannot_erase), and
// every row and detail counts those participants, whichever store knows them.
func TestOfficerListFindsParticipantsOverdue(t *testing.T) {
	t.Parallel()
	r := startConsoleRun(t)
	now := time.Now().UTC()
	seed := func(kind, state string, erasureState erasure.ErasureState, participants map[string]erasure.State) string {
		t.Helper()
		id := uuid.NewString()
		require.NoError(t, r.gdb.Exec(`INSERT INTO requests (id, type, state, submitted_at, received_at, due_at, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?)`, id, kind, state, now, now, now.AddDate(0, 1, 0), now).Error)
		if erasureState == "" {
			return id
		}
		require.NoError(t, r.gdb.Exec(`INSERT INTO erasures (request_id, state) VALUES (?, ?)`, id, erasureState).Error)
		for name, st := range participants {
			require.NoError(t, r.gdb.Exec(`INSERT INTO erasure_participants (request_id, participant, kind, state, attempt)
				VALUES (?, ?, 'amqp', ?, 1)`, id, name, st).Error)
		}
		return id
	}
	oneOverdue := seed("erasure", "handed_over", erasure.ErasureOpen, map[string]erasure.State{"billing": erasure.StateOverdue, "crm": erasure.StateSent})
	twoStuck := seed("erasure", "handed_over", erasure.ErasureCompleted,
		map[string]erasure.State{"billing": erasure.StateFailed, "shop": erasure.StateCannotErase, "crm": erasure.StateErased})
	cancelled := seed("erasure", "cancelled", erasure.ErasureCancelled, map[string]erasure.State{"billing": erasure.StateOverdue})
	allSent := seed("erasure", "handed_over", erasure.ErasureOpen, map[string]erasure.State{"billing": erasure.StateSent})
	access := seed("access", "completed", "", nil)

	list := func(query string) map[string]int {
		t.Helper()
		code, body := r.do(t, http.MethodGet, "/v1/admin/requests"+query, consoleViewerToken, nil)
		require.Equal(t, http.StatusOK, code, "%s", body)
		var page requests.Page
		require.NoError(t, json.Unmarshal(body, &page))
		out := map[string]int{}
		for _, row := range page.Requests {
			out[row.ID] = row.ParticipantsOverdue
		}
		return out
	}
	require.Equal(t, map[string]int{oneOverdue: 1, twoStuck: 2}, list("?participant_overdue=true"),
		"only open erasures with a participant to act on")
	require.Equal(t, map[string]int{oneOverdue: 1, twoStuck: 2, cancelled: 1, allSent: 0, access: 0}, list(""))
	// Keyset pages of the filtered list: one each, nothing lost between them.
	code, body := r.do(t, http.MethodGet, "/v1/admin/requests?participant_overdue=true&limit=1", consoleViewerToken, nil)
	require.Equal(t, http.StatusOK, code, "%s", body)
	var first requests.Page
	require.NoError(t, json.Unmarshal(body, &first))
	require.Len(t, first.Requests, 1)
	require.NotEmpty(t, first.Next)
	code, body = r.do(t, http.MethodGet, "/v1/admin/requests?participant_overdue=true&limit=1&cursor="+first.Next, consoleViewerToken, nil)
	require.Equal(t, http.StatusOK, code, "%s", body)
	var second requests.Page
	require.NoError(t, json.Unmarshal(body, &second))
	require.Len(t, second.Requests, 1)
	require.Empty(t, second.Next)
	require.ElementsMatch(t, []string{oneOverdue, twoStuck}, []string{first.Requests[0].ID, second.Requests[0].ID})
	require.Equal(t, 2, r.detail(t, twoStuck).Request.ParticipantsOverdue)
	require.Equal(t, 0, r.detail(t, allSent).Request.ParticipantsOverdue)
}

// TestOfficerListFiltersByClient: the admin list's client filter selects
// the requests one API client submitted (requests.client), each row names
// its client, and an over-long client is refused naming the parameter.
func TestOfficerListFiltersByClient(t *testing.T) {
	t.Parallel()
	r := startConsoleRun(t)
	tag := testkit.ID()
	shop := r.submitWith(t, consoleShopToken, "access", "", "sam-"+tag, "sam."+tag+"@example.org")
	flat := r.submitAs(t, "access", "", "tim-"+tag, "tim."+tag+"@example.org")
	r.waitState(t, shop, "failed")
	r.waitState(t, flat, "failed")

	list := func(query string) map[string]string {
		t.Helper()
		code, body := r.do(t, http.MethodGet, "/v1/admin/requests"+query, consoleViewerToken, nil)
		require.Equal(t, http.StatusOK, code, "%s", body)
		var page requests.Page
		require.NoError(t, json.Unmarshal(body, &page))
		out := map[string]string{}
		for _, row := range page.Requests {
			out[row.ID] = row.Client
		}
		return out
	}
	all := list("")
	require.Len(t, all, 2)
	require.Equal(t, "shop", all[shop])
	require.NotEmpty(t, all[flat], "a flat api_tokens entry is recorded by its digest prefix")
	require.Equal(t, map[string]string{shop: "shop"}, list("?client=shop"))
	require.Equal(t, map[string]string{flat: all[flat]}, list("?client="+all[flat]))
	require.Empty(t, list("?client=nobody"))
	require.Equal(t, "shop", r.detail(t, shop).Request.Client)
	code, body := r.do(t, http.MethodGet, "/v1/admin/requests?client="+strings.Repeat("x", 65), consoleViewerToken, nil)
	require.Equal(t, http.StatusBadRequest, code, "%s", body)
	require.Contains(t, string(body), `"client"`)
}
