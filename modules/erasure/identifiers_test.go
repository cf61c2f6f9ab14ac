package erasure_test

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/erasure"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// calls records what an upstream received.
type calls struct {
	mu   sync.Mutex
	reqs []*http.Request
}

func (c *calls) add(r *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reqs = append(c.reqs, r.Clone(r.Context()))
}

func (c *calls) paths() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, r := range c.reqs {
		out = append(out, r.Method+" "+r.URL.Path)
	}
	return out
}

func (c *calls) all() []*http.Request {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*http.Request(nil), c.reqs...)
}

// customersAPI is a real net/http upstream (its ServeMux cleans paths) that
// deletes one customer, the whole collection, or everything at the root:
// the calls an empty or dot identifier would turn an erasure into.
func customersAPI(t *testing.T, got *calls) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	for _, pattern := range []string{"DELETE /customers/{id}", "DELETE /customers/", "DELETE /{$}", "GET /"} {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			got.add(r)
			w.WriteHeader(http.StatusNoContent)
		})
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// TestHTTPParticipantsAreNeverCalledWithEmptyOrDotIdentifiers: an erasure
// that has only an email does not DELETE /customers/ (the collection): the
// participant that needs the id is cannot_erase, visible in the status,
// the attention gauge and the erasure's state. An id ".." is refused before
// any call (it once sent DELETE /).
func TestHTTPParticipantsAreNeverCalledWithEmptyOrDotIdentifiers(t *testing.T) {
	t.Parallel()
	var got calls
	api := customersAPI(t, &got)
	h := newHarness(t, []erasure.Participant{
		{Name: "byid", Kind: "http", URL: api.URL + "/customers/{subject_id}", AuthHeader: "Bearer s3cret"},
		{Name: "byemail", Kind: "http", URL: api.URL + "/customers/{subject_email}", AuthHeader: "Bearer s3cret"},
	}, nil)
	h.startDispatcher()
	h.startCanceller()

	emailOnly := subject{RequestID: uuid.NewString(), Subject: event.Subject{Email: "ann@example.com"}}
	h.request(emailOnly)
	testkit.Eventually(t, 30*time.Second, func() bool {
		st, _ := h.participantState(emailOnly.RequestID, "byemail")
		return st == erasure.StateErased
	}, "the participant keyed by email erases")
	ps, err := erasure.Participants(t.Context(), h.db, emailOnly.RequestID)
	require.NoError(t, err)
	require.Len(t, ps, 2)
	byID := ps[1] // by name: byemail, byid
	require.Equal(t, "byid", byID.Participant)
	require.Equal(t, erasure.StateCannotErase, byID.State)
	require.Equal(t, "missing identifier {subject_id}", byID.Detail)
	require.Zero(t, byID.Attempts, "never called")
	require.Equal(t, erasure.ErasureOpen, h.erasureState(emailOnly.RequestID), "the erasure does not claim completion")
	require.Equal(t, 1.0, metricValue(t, h.registry, "gdpr_erasure_participants_attention", map[string]string{"participant": "byid", "state": "cannot_erase"}))

	dots := subject{RequestID: uuid.NewString(), Subject: event.Subject{ID: "..", Email: "bob@example.com"}}
	h.request(dots)
	dead := h.deadLetters(1, 30*time.Second)
	require.Contains(t, dead[0].Headers["x-gdpr-dead-letter-reason"], "subject.id")
	var n int
	require.NoError(t, h.db.Raw(`SELECT count(*) FROM erasures WHERE request_id = ?`, dots.RequestID).Scan(&n).Error)
	require.Zero(t, n)

	require.Equal(t, []string{"DELETE /customers/ann@example.com"}, got.paths(), "only the subject's own record is deleted")
}

// TestHTTPParticipantCallRefusesDotIdentifiersItFindsStored: the expander
// refuses ".." even when it reaches a call (a row stored before the rules,
// a message from elsewhere): cannot_erase, nothing sent.
func TestHTTPParticipantCallRefusesDotIdentifiersItFindsStored(t *testing.T) {
	t.Parallel()
	var got calls
	api := customersAPI(t, &got)
	h := newHarness(t, []erasure.Participant{{Name: "byid", Kind: "http", URL: api.URL + "/customers/{subject_id}"}}, nil)
	c := h.startCanceller()
	id := uuid.NewString()
	require.NoError(t, h.db.Exec(`INSERT INTO erasures (request_id, state, subject_id, subject_email) VALUES (?, 'open', '..', '')`, id).Error)
	require.NoError(t, h.db.Exec(`INSERT INTO erasure_participants (request_id, participant, kind, state) VALUES (?, 'byid', 'http', 'pending')`, id).Error)
	m, err := message.New(erasure.TypeTimer, erasure.Timer{RequestID: id, Participant: "byid", Action: erasure.ActionSend, Attempt: 1}, nil)
	require.NoError(t, err)
	require.NoError(t, c.HandleTimer(t.Context(), m))
	st, _ := h.participantState(id, "byid")
	require.Equal(t, erasure.StateCannotErase, st)
	ps, err := erasure.Participants(t.Context(), h.db, id)
	require.NoError(t, err)
	require.Contains(t, ps[0].Detail, "{subject_id}")
	require.NotContains(t, ps[0].Detail, "..", "the detail names the placeholder, not the value")
	require.Empty(t, got.paths())
}

// TestHTTPParticipantRedirects: a redirect to another origin is not
// followed (the other server sees no request, so no credentials), nor one
// that turns the DELETE into a GET; a same-origin 307 is followed without
// a Referer.
func TestHTTPParticipantRedirects(t *testing.T) {
	t.Parallel()
	var elsewhere calls
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.add(r)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(other.Close)
	var here calls
	mux := http.NewServeMux()
	mux.HandleFunc("DELETE /away/{id}", func(w http.ResponseWriter, r *http.Request) {
		here.add(r)
		http.Redirect(w, r, other.URL+"/collect/"+r.PathValue("id"), http.StatusTemporaryRedirect)
	})
	mux.HandleFunc("DELETE /found/{id}", func(w http.ResponseWriter, r *http.Request) {
		here.add(r)
		http.Redirect(w, r, "/v2/"+r.PathValue("id"), http.StatusFound)
	})
	mux.HandleFunc("DELETE /moved/{id}", func(w http.ResponseWriter, r *http.Request) {
		here.add(r)
		http.Redirect(w, r, "/v2/"+r.PathValue("id"), http.StatusTemporaryRedirect)
	})
	mux.HandleFunc("/v2/{id}", func(w http.ResponseWriter, r *http.Request) {
		here.add(r)
		w.WriteHeader(http.StatusNoContent)
	})
	api := httptest.NewServer(mux)
	t.Cleanup(api.Close)
	h := newHarness(t, []erasure.Participant{
		{Name: "away", Kind: "http", URL: api.URL + "/away/{subject_id}", AuthHeader: "Bearer s3cret"},
		{Name: "found", Kind: "http", URL: api.URL + "/found/{subject_id}", AuthHeader: "X-Api-Key: k3y"},
		{Name: "moved", Kind: "http", URL: api.URL + "/moved/{subject_id}?email={subject_email}", AuthHeader: "Bearer s3cret"},
	}, nil)
	h.startDispatcher()
	h.startCanceller()
	s := newSubjects(1)[0]
	h.request(s)
	want := map[string]erasure.State{"away": erasure.StateFailed, "found": erasure.StateFailed, "moved": erasure.StateErased}
	for name, state := range want {
		testkit.Eventually(t, 30*time.Second, func() bool {
			st, _ := h.participantState(s.RequestID, name)
			return st == state
		}, "%s reaches %s", name, state)
	}
	ps, err := erasure.Participants(t.Context(), h.db, s.RequestID)
	require.NoError(t, err)
	for _, p := range ps {
		if p.State == erasure.StateFailed {
			require.Contains(t, p.Detail, "redirect not followed", p.Participant)
		}
	}
	require.Empty(t, elsewhere.all(), "the other origin sees no request, so no Authorization")
	var followed bool
	for _, r := range here.all() {
		require.Empty(t, r.Header.Get("Referer"), "%s %s", r.Method, r.URL.Path)
		require.Equal(t, http.MethodDelete, r.Method, "a DELETE never becomes a GET")
		if r.URL.Path == "/v2/"+s.Subject.ID {
			followed = true
			require.Equal(t, "Bearer s3cret", r.Header.Get("Authorization"))
		}
	}
	require.True(t, followed, "the same-origin 307 was followed")
}

// TestAMQPParticipantsThatCannotFindTheSubjectBlockCompletion: a probe sent
// an email-only erasure to a participant that finds people by id; it
// answered not_found, the erasure completed and the person was told their
// data was deleted while their row stayed. A participant that requires
// subject_id is now never commanded for such a subject (cannot_erase at
// once), and one that answers cannot_erase itself is not re-sent: either
// way the erasure stays open for an operator.
func TestAMQPParticipantsThatCannotFindTheSubjectBlockCompletion(t *testing.T) {
	t.Parallel()
	var commanded sync.Map
	h := newHarness(t, []erasure.Participant{
		{Name: "shop", Kind: "amqp", Requires: []string{"subject_id"}},
		{Name: "crm", Kind: "amqp"},
		{Name: "mail", Kind: "amqp"},
	}, nil)
	answers := map[string]string{"shop": event.OutcomeErased, "crm": event.OutcomeCannotErase, "mail": event.OutcomeErased}
	for name, outcome := range answers {
		rawParticipant(t, h, name, func(cmd event.ErasureCommand, m message.Message) []message.Message {
			n, _ := commanded.LoadOrStore(name+"/"+cmd.RequestID, new(atomic.Int32))
			n.(*atomic.Int32).Add(1)
			return []message.Message{confirmation(t, cmd, m, outcome)}
		})
	}
	h.startDispatcher()
	h.startCanceller()

	emailOnly := subject{RequestID: uuid.NewString(), Subject: event.Subject{Email: "ann@example.com"}}
	h.request(emailOnly)
	for name, state := range map[string]erasure.State{"mail": erasure.StateErased, "crm": erasure.StateCannotErase, "shop": erasure.StateCannotErase} {
		testkit.Eventually(t, 30*time.Second, func() bool {
			st, _ := h.participantState(emailOnly.RequestID, name)
			return st == state
		}, "%s reaches %s", name, state)
	}
	ps, err := erasure.Participants(t.Context(), h.db, emailOnly.RequestID)
	require.NoError(t, err)
	details := map[string]string{}
	for _, p := range ps {
		details[p.Participant] = p.Detail
	}
	require.Equal(t, "missing identifier {subject_id}", details["shop"])
	require.NotEmpty(t, details["crm"], "the SDK-less participant's cannot_erase is recorded with a detail")
	_, shopCommanded := commanded.Load("shop/" + emailOnly.RequestID)
	require.False(t, shopCommanded, "a participant that requires subject_id is not commanded without one")
	require.Equal(t, erasure.ErasureOpen, h.erasureState(emailOnly.RequestID), "the erasure does not claim completion")

	// With an id, the same participants erase (crm still cannot: it
	// answers so to everything) and crm was asked exactly once per request.
	both := subject{RequestID: uuid.NewString(), Subject: event.Subject{ID: "u-7", Email: "bob@example.com"}}
	h.request(both)
	testkit.Eventually(t, 30*time.Second, func() bool {
		st, _ := h.participantState(both.RequestID, "shop")
		return st == erasure.StateErased
	}, "shop erases a subject with an id")
	testkit.Eventually(t, 30*time.Second, func() bool {
		st, _ := h.participantState(both.RequestID, "crm")
		return st == erasure.StateCannotErase
	}, "crm answers cannot_erase")
	require.Equal(t, erasure.ErasureOpen, h.erasureState(both.RequestID))
	for _, id := range []string{emailOnly.RequestID, both.RequestID} {
		n, ok := commanded.Load("crm/" + id)
		require.True(t, ok)
		require.Equal(t, int32(1), n.(*atomic.Int32).Load(), "cannot_erase is not re-sent")
	}
}

// TestParticipantDetailsKeepNoIdentifierOfTheSubject: the free text kept
// on a participant's row (an operator's note here; a participant's detail
// goes through the same write) outlives the subject's identifiers by
// retention.record_for, so each identifier in it, in any case, is stored
// as its placeholder. It was stored as written.
func TestParticipantDetailsKeepNoIdentifierOfTheSubject(t *testing.T) {
	t.Parallel()
	h := newHarness(t, []erasure.Participant{{Name: "crm", Kind: "amqp"}, {Name: "shop", Kind: "amqp"}}, nil)
	c := h.startCanceller()
	id := uuid.NewString()
	require.NoError(t, h.db.Exec(`INSERT INTO erasures (request_id, state, subject_id, subject_email, subject_phone, subject_identifiers)
		VALUES (?, 'open', 'cust-4711', 'Ann.Lee@example.com', '+4915100000042', '{"loyalty_card":"LC-991"}')`, id).Error)
	for _, p := range []string{"crm", "shop"} {
		require.NoError(t, h.db.Exec(`INSERT INTO erasure_participants (request_id, participant, kind, state, attempt) VALUES (?, ?, 'amqp', 'sent', 1)`, id, p).Error)
	}
	_, err := c.NotApplicable(t.Context(), id, "crm", "no account for ANN.LEE@EXAMPLE.COM or +4915100000042", nil)
	require.NoError(t, err)
	_, err = c.ConfirmManually(t.Context(), id, "shop", "deleted cust-4711 and card lc-991 by hand", nil)
	require.NoError(t, err)
	ps, err := erasure.Participants(t.Context(), h.db, id)
	require.NoError(t, err)
	details := map[string]string{}
	for _, p := range ps {
		details[p.Participant] = p.Detail
	}
	require.Equal(t, map[string]string{
		"crm":  "no account for {subject_email} or {phone}",
		"shop": "deleted {subject_id} and card {identifier.loyalty_card} by hand",
	}, details)
}
