package requests_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/requests"
)

type reportRow struct {
	DeletedAt     *time.Time
	DeletedReason string
	FileRemoved   bool
}

func (e *env) report(t *testing.T, requestID string) reportRow {
	t.Helper()
	var r reportRow
	require.NoError(t, e.db.Raw(`SELECT deleted_at, deleted_reason, file_removed FROM reports WHERE request_id = ?`, requestID).Scan(&r).Error)
	return r
}

// TestErasureScrubsTheSubjectsEarlierRequestsAndDeletesTheirReports: once an
// erasure finishes, every finished request of the same subject (by id, or
// by address in any case, by phone number, or by one named identifier)
// loses the subject and its report, exactly once; another subject's request,
// even with another value of the same named identifier, is untouched.
func TestErasureScrubsTheSubjectsEarlierRequestsAndDeletesTheirReports(t *testing.T) {
	t.Parallel()
	e := newEnv(t, newBuilder(nil))
	byID := submitted(t, event.KindAccess, event.Subject{ID: "scrub-a"})
	byEmail := submitted(t, event.KindAccess, event.Subject{Email: "scrub-a@example.com"})
	byPhone := submitted(t, event.KindAccess, event.Subject{Phone: "+4915100000001"})
	byCard := submitted(t, event.KindAccess, event.Subject{Identifiers: map[string]string{"loyalty_card": "LC-1", "crm": "x"}})
	other := submitted(t, event.KindAccess, event.Subject{ID: "scrub-b", Email: "scrub-b@example.com", Phone: "+4915100000002",
		Identifiers: map[string]string{"loyalty_card": "LC-2"}})
	for _, m := range []message.Message{byID, byEmail, byPhone, byCard, other} {
		require.NoError(t, e.mgr.Handle(t.Context(), m))
	}
	e.drain(t)
	erasure := submitted(t, event.KindErasure, event.Subject{ID: "scrub-a", Email: "Scrub-A@Example.com", Phone: "+4915100000001",
		Identifiers: map[string]string{"loyalty_card": "LC-1"}})
	erasureID := requestID(t, erasure)
	require.NoError(t, e.mgr.Handle(t.Context(), erasure))
	e.drain(t)
	require.Equal(t, requests.StateHandedOver, e.row(t, erasureID).State)
	for _, m := range []message.Message{byID, byEmail, byPhone, byCard} {
		require.Empty(t, e.report(t, requestID(t, m)).DeletedReason, "nothing goes before the erasure is finished")
	}

	fin, err := message.New(event.TypeErasureFinished, event.ErasureFinished{RequestID: erasureID}, nil)
	require.NoError(t, err)
	require.NoError(t, e.mgr.Handle(t.Context(), fin))
	require.NoError(t, e.mgr.Handle(t.Context(), fin)) // a redelivery changes nothing

	for _, m := range []message.Message{byID, byEmail, byPhone, byCard} {
		id := requestID(t, m)
		r := e.row(t, id)
		require.Empty(t, r.SubjectID, id)
		require.Empty(t, r.SubjectEmail, id)
		require.True(t, r.HadEmail || m.ID != byEmail.ID, "had_email survives")
		var left int
		require.NoError(t, e.db.Raw(`SELECT count(*) FROM requests WHERE id = ? AND (subject_phone <> '' OR subject_identifiers <> '{}')`, id).Scan(&left).Error)
		require.Zero(t, left, "phone and identifiers of %s are scrubbed", id)
		var erasedBy string
		require.NoError(t, e.db.Raw(`SELECT erased_by::text FROM requests WHERE id = ? AND pii_scrubbed_at IS NOT NULL`, id).Scan(&erasedBy).Error)
		require.Equal(t, erasureID, erasedBy, id)
		rep := e.report(t, id)
		require.NotNil(t, rep.DeletedAt, id)
		require.Equal(t, requests.DeletedSubjectErasure, rep.DeletedReason, id)
		require.True(t, rep.FileRemoved, id)
		_, deletes := e.builder.count("r-" + id)
		require.Equal(t, 1, deletes, "the file of %s is removed once", id)
	}
	otherID := requestID(t, other)
	o := e.row(t, otherID)
	require.Equal(t, "scrub-b", o.SubjectID)
	require.Equal(t, "scrub-b@example.com", o.SubjectEmail)
	var kept int
	require.NoError(t, e.db.Raw(`SELECT count(*) FROM requests WHERE id = ? AND subject_phone = '+4915100000002' AND subject_identifiers = '{"loyalty_card":"LC-2"}'`, otherID).Scan(&kept).Error)
	require.Equal(t, 1, kept)
	require.Nil(t, e.report(t, otherID).DeletedAt)
	_, deletes := e.builder.count("r-" + otherID)
	require.Zero(t, deletes)

	got, found, err := e.mgr.Store().ReportOf(t.Context(), requestID(t, byID))
	require.NoError(t, err)
	require.True(t, found)
	require.True(t, got.Deleted)
	require.Equal(t, requests.DeletedSubjectErasure, got.Reason)
}

// TestPurgeFinishesReportDeletionsACrashLeftUndone: a deletion recorded but
// whose file was not removed (the process died in between) is finished by
// the purge, once; a live report is left alone.
func TestPurgeFinishesReportDeletionsACrashLeftUndone(t *testing.T) {
	t.Parallel()
	e := newEnv(t, newBuilder(nil))
	undone, live := submitted(t, event.KindAccess, event.Subject{ID: "purge-a"}), submitted(t, event.KindAccess, event.Subject{ID: "purge-b"})
	for _, m := range []message.Message{undone, live} {
		require.NoError(t, e.mgr.Handle(t.Context(), m))
	}
	e.drain(t)
	require.NoError(t, e.db.Exec(`UPDATE reports SET deleted_at = now(), deleted_reason = 'retention' WHERE request_id = ?`, requestID(t, undone)).Error)

	store := e.mgr.Store()
	would, err := store.PurgeRemovedReports(t.Context(), time.Now().Add(time.Minute), 100, true)
	require.NoError(t, err)
	require.Equal(t, []string{"r-" + requestID(t, undone)}, would)
	_, deletes := e.builder.count("r-" + requestID(t, undone))
	require.Zero(t, deletes, "a dry run removes nothing")

	for range 2 {
		_, err := store.PurgeRemovedReports(t.Context(), time.Now().Add(time.Minute), 100, false)
		require.NoError(t, err)
	}
	_, deletes = e.builder.count("r-" + requestID(t, undone))
	require.Equal(t, 1, deletes)
	require.True(t, e.report(t, requestID(t, undone)).FileRemoved)
	_, deletes = e.builder.count("r-" + requestID(t, live))
	require.Zero(t, deletes)
}

// TestDeniedRequestsLoseTheirIdentifiersAndTheSubjectsErasureScrubsThem: a
// denial scrubs every identifier at once (id, phone number, named ones;
// only the address stays, for the denial email), and the subject's later
// erasure scrubs a denied request too. A denied request kept its phone
// number and named identifiers for ever, and the erasure's scrub skipped
// it (it took only completed and failed requests).
func TestDeniedRequestsLoseTheirIdentifiersAndTheSubjectsErasureScrubsThem(t *testing.T) {
	t.Parallel()
	e := newEnv(t, newBuilder(nil))
	subject := event.Subject{ID: "deny-a", Email: "deny-a@example.com", Phone: "+4915100000003", Identifiers: map[string]string{"loyalty_card": "LC-3"}}
	access := submitted(t, event.KindAccess, subject)
	deniedID := requestID(t, access)
	require.NoError(t, e.mgr.Handle(t.Context(), access))
	_, ok, err := e.mgr.Store().Deny(t.Context(), deniedID, "officer", "unverified", "could not verify", nil)
	require.NoError(t, err)
	require.True(t, ok)
	left := func(cond string) int {
		var n int
		require.NoError(t, e.db.Raw(`SELECT count(*) FROM requests WHERE id = ? AND `+cond, deniedID).Scan(&n).Error)
		return n
	}
	require.Equal(t, 1, left(`state = 'denied' AND subject_id = '' AND subject_phone = '' AND subject_identifiers = '{}' AND subject_email = 'deny-a@example.com'`),
		"only the address stays, for the denial email")

	erasure := submitted(t, event.KindErasure, subject)
	erasureID := requestID(t, erasure)
	require.NoError(t, e.mgr.Handle(t.Context(), erasure))
	e.drain(t)
	require.Equal(t, requests.StateHandedOver, e.row(t, erasureID).State)
	fin, err := message.New(event.TypeErasureFinished, event.ErasureFinished{RequestID: erasureID}, nil)
	require.NoError(t, err)
	require.NoError(t, e.mgr.Handle(t.Context(), fin))
	require.Equal(t, 1, left(`subject_email = '' AND closed_reason = '' AND denial_code = 'unverified' AND erased_by = '`+erasureID+`' AND pii_scrubbed_at IS NOT NULL`),
		"the erasure scrubs the denied request, the operator's free text with it")
}
