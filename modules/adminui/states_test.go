package adminui_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/adminui"
	"github.com/gdpr-oss/gdpr/modules/console"
	"github.com/gdpr-oss/gdpr/modules/erasure"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/officer"
	"github.com/gdpr-oss/gdpr/modules/requests"
)

// fakeOfficer answers the console's reads with fixed data; the embedded
// interface is nil, so any other call panics (this test makes none).
type fakeOfficer struct {
	adminui.Officer
	detail    officer.Detail
	dashboard officer.Dashboard
}

func (f fakeOfficer) Session(context.Context, string, *console.Operators) (officer.Session, error) {
	return officer.Session{Principal: console.Principal{Name: "ana", Role: console.RoleOperator}, CSRF: "csrf", ExpiresAt: time.Now().Add(time.Hour)}, nil
}

func (f fakeOfficer) Detail(context.Context, string) (officer.Detail, error) { return f.detail, nil }

func (f fakeOfficer) Dashboard(context.Context) (officer.Dashboard, error) { return f.dashboard, nil }

func get(t *testing.T, c http.Handler, path string) string {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, path, nil)
	r.AddCookie(&http.Cookie{Name: adminui.CookieName, Value: "session"})
	w := httptest.NewRecorder()
	c.ServeHTTP(w, r)
	body, err := io.ReadAll(w.Result().Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, w.Code, "%s", body)
	return string(body)
}

// TestConsoleShowsParticipantStates: the request page and the dashboard
// render erasure.State values (typed constants of modules/erasure) as
// badges and labels, and the request page offers an operator the
// participant actions only for a participant not yet confirmed
// (erasure.State.Confirmed), as it did when it compared the literals.
func TestConsoleShowsParticipantStates(t *testing.T) {
	t.Parallel()
	now := time.Now().UTC()
	const id = "0193a5c2-7e0b-7c4d-8f00-0000000000a1"
	parts := []erasure.ParticipantState{
		{Participant: "billing", Kind: erasure.KindAMQP, State: erasure.StateErased, Attempts: 1, UpdatedAt: now},
		{Participant: "crm", Kind: erasure.KindHTTP, State: erasure.StateNotFound, Attempts: 1, UpdatedAt: now},
		{Participant: "shop", Kind: erasure.KindAMQP, State: erasure.StateOverdue, Attempts: 6, UpdatedAt: now},
		{Participant: "ledger", Kind: erasure.KindHTTP, State: erasure.StateCannotErase, UpdatedAt: now},
		{Participant: "mailer", Kind: erasure.KindEmail, State: erasure.StateWaiting, UpdatedAt: now},
	}
	f := fakeOfficer{
		detail: officer.Detail{
			Request: requests.AdminRow{ID: id, Type: event.KindErasure, State: requests.StateHandedOver, Regulation: "gdpr",
				SubmittedAt: now, DueAt: now.AddDate(0, 1, 0), Deadline: now.AddDate(0, 1, 0)},
			Participants: parts,
			Allowed:      map[string]bool{officer.ActionResend: true, officer.ActionConfirmManually: true, officer.ActionNotApplicable: true},
		},
		dashboard: officer.Dashboard{
			Counts: map[string]int{},
			Participants: []erasure.AttentionRow{
				{RequestID: id, Participant: "ledger", Kind: erasure.KindHTTP, State: erasure.StateCannotErase, UpdatedAt: now},
			},
		},
	}
	c, err := adminui.New(f, nil, adminui.Options{}, slog.New(slog.DiscardHandler))
	require.NoError(t, err)

	page := get(t, c, "/admin/requests/"+id)
	for _, p := range parts {
		require.Contains(t, page, `<span class="badge `+string(p.State)+`">`, p.Participant)
		if p.State.Confirmed() {
			require.NotContains(t, page, "Act on "+p.Participant, "a confirmed participant offers no action")
		} else {
			require.Contains(t, page, "Act on "+p.Participant)
		}
	}
	require.Contains(t, page, ">cannot erase</span>")
	require.Contains(t, page, ">not found</span>")

	dash := get(t, c, "/admin/")
	require.Contains(t, dash, `<span class="badge cannot_erase">cannot erase</span>`)
}
