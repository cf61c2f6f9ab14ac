package erasure_test

import (
	"context"
	"database/sql"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/erasure"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/participant"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// fakeAPI is a third-party API holding subjects by id: DELETE /users/{id}.
type fakeAPI struct {
	mu      sync.Mutex
	users   map[string]bool
	calls   map[string]int
	fail    map[string]int // id -> how many more calls answer 503
	auth    string
	badAuth int
}

func newFakeAPI(auth string) *fakeAPI {
	return &fakeAPI{users: map[string]bool{}, calls: map[string]int{}, fail: map[string]int{}, auth: auth}
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Header.Get("Authorization") != f.auth {
		f.badAuth++
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	id, ok := strings.CutPrefix(r.URL.Path, "/users/")
	if r.Method != http.MethodDelete || !ok {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	f.calls[id]++
	if f.fail[id] > 0 {
		f.fail[id]--
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	if !f.users[id] {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	delete(f.users, id)
	w.WriteHeader(http.StatusNoContent)
}

func (f *fakeAPI) remaining() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.users)
}

// serviceDB is the participants' own database (not gdpr's), with one table
// per participant service.
func serviceDB(t testing.TB, tables ...string) *sql.DB {
	sdb, err := sql.Open("pgx", testkit.PostgresDSN(t))
	require.NoError(t, err)
	sdb.SetMaxOpenConns(4)
	t.Cleanup(func() { _ = sdb.Close() })
	for _, tbl := range tables {
		_, err := sdb.Exec(`CREATE TABLE ` + tbl + ` (id bigserial PRIMARY KEY, subject_id text NOT NULL, payload text NOT NULL)`)
		require.NoError(t, err)
	}
	_, err = sdb.Exec(`CREATE TABLE mailer_erasures (email text NOT NULL, erased_at timestamptz NOT NULL DEFAULT now())`)
	require.NoError(t, err)
	return sdb
}

// deleteFrom is an SDK erase function deleting a subject's rows from table.
func deleteFrom(sdb *sql.DB, table string) participant.EraseFunc {
	return func(ctx context.Context, s event.Subject) (string, error) {
		res, err := sdb.ExecContext(ctx, `DELETE FROM `+table+` WHERE subject_id = $1`, s.ID)
		if err != nil {
			return "", participant.Failed("database error")
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return event.OutcomeNotFound, nil
		}
		return event.OutcomeErased, nil
	}
}

func startParticipant(t testing.TB, h *harness, name string, erase participant.EraseFunc, sdb *sql.DB) *participant.Participant {
	p, err := participant.New(h.conn, name, erase, participant.Options{DB: sdb, Concurrency: 8, Logger: h.logger})
	require.NoError(t, err)
	require.NoError(t, p.Start(context.Background()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = p.Stop(ctx)
	})
	return p
}

// fiveParticipants is the end-to-end fixture: three SDK services deleting
// rows from their own tables, a third-party HTTP API and the email system.
type fiveParticipants struct {
	h            *harness
	api          *fakeAPI
	sdb          *sql.DB
	tables       []string
	participants []erasure.Participant
	delay        time.Duration
}

func newFiveParticipants(t *testing.T, delay time.Duration) *fiveParticipants {
	api := newFakeAPI("Bearer s3cret")
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	f := &fiveParticipants{api: api, tables: []string{"billing", "crm", "analytics"}, delay: delay}
	f.participants = []erasure.Participant{
		{Name: "billing", Kind: "amqp"},
		{Name: "crm", Kind: "amqp"},
		{Name: "analytics", Kind: "amqp"},
		{Name: "partnerapi", Kind: "http", URL: srv.URL + "/users/{subject_id}", AuthHeader: "Bearer s3cret", Timeout: 5 * time.Second},
		{Name: "mailer", Kind: "email"},
	}
	f.h = newHarness(t, f.participants, func(c *erasure.Config) { c.EmailDelay = delay })
	f.sdb = serviceDB(t, f.tables...)
	// A bystander whose rows must survive.
	for _, tbl := range f.tables {
		_, err := f.sdb.Exec(`INSERT INTO ` + tbl + ` (subject_id, payload) VALUES ('bystander', 'keep')`)
		require.NoError(t, err)
	}
	return f
}

// seed gives every subject three rows in each table and an account in the API.
func (f *fiveParticipants) seed(t *testing.T, subjects []subject) {
	for _, s := range subjects {
		for _, tbl := range f.tables {
			for range 3 {
				_, err := f.sdb.Exec(`INSERT INTO `+tbl+` (subject_id, payload) VALUES ($1, 'x')`, s.Subject.ID)
				require.NoError(t, err)
			}
		}
		f.api.mu.Lock()
		f.api.users[s.Subject.ID] = true
		f.api.mu.Unlock()
	}
}

// startServices runs the three SDK services and the email system.
func (f *fiveParticipants) startServices(t *testing.T) {
	for _, tbl := range f.tables {
		startParticipant(t, f.h, tbl, deleteFrom(f.sdb, tbl), f.sdb)
	}
	startParticipant(t, f.h, "mailer", func(ctx context.Context, s event.Subject) (string, error) {
		if _, err := f.sdb.ExecContext(ctx, `INSERT INTO mailer_erasures (email) VALUES ($1)`, s.Email); err != nil {
			return "", err
		}
		return event.OutcomeErased, nil
	}, f.sdb)
}

// TestEndToEndFiveParticipants: three SDK services with their own tables, a
// third-party HTTP API and the email system erase 100 subjects, starting
// from erasure.requested; the "deleted" email goes out once each, before the
// email system's erasure. TestFullChainFiveParticipants runs the same
// through `gdpr all` and the HTTP API.
func TestEndToEndFiveParticipants(t *testing.T) {
	t.Parallel()
	const n = 100
	// Long enough for the notifier to send 100 emails on a busy machine first.
	f := newFiveParticipants(t, 6*time.Second)
	h := f.h
	subjects := newSubjects(n)
	f.seed(t, subjects)
	h.storeRequests(subjects)

	mp := testkit.StartMailpit(t)
	h.startDispatcher()
	h.startCanceller()
	h.startNotifier(mp)
	f.startServices(t)

	for _, s := range subjects {
		h.request(s)
	}
	testkit.Eventually(t, 120*time.Second, func() bool { return h.countFinished() == n }, "all %d erasures finished", n)
	f.check(t, subjects, mp)
}

// check asserts everything the end-to-end tests promise once every erasure finished.
func (f *fiveParticipants) check(t *testing.T, subjects []subject, mp *testkit.Mailpit) {
	h, api, sdb, tables, participants, delay, n := f.h, f.api, f.sdb, f.tables, f.participants, f.delay, len(subjects)
	for _, tbl := range tables {
		var left, bystander int
		require.NoError(t, sdb.QueryRow(`SELECT count(*) FILTER (WHERE subject_id <> 'bystander'), count(*) FILTER (WHERE subject_id = 'bystander') FROM `+tbl).Scan(&left, &bystander))
		require.Zero(t, left, "rows left in %s", tbl)
		require.Equal(t, 1, bystander, "bystander row in %s", tbl)
	}
	require.Zero(t, api.remaining(), "subjects left in the HTTP API")
	require.Zero(t, api.badAuth)

	var rows int
	require.NoError(t, h.db.Raw(`SELECT count(*) FROM erasure_participants`).Scan(&rows).Error)
	require.Equal(t, n*len(participants), rows)
	var confirmed int
	require.NoError(t, h.db.Raw(`SELECT count(*) FROM erasure_participants WHERE state IN ('erased', 'not_found')`).Scan(&confirmed).Error)
	require.Equal(t, n*len(participants), confirmed)

	// Exactly one "deleted" email per subject.
	testkit.Eventually(t, 30*time.Second, func() bool {
		c, err := mp.Count(context.Background())
		return err == nil && c >= n
	}, "%d emails", n)
	msgs, err := mp.Messages(context.Background())
	require.NoError(t, err)
	perAddr := map[string]int{}
	for _, m := range msgs {
		for _, to := range m.To {
			perAddr[to.Address]++
		}
	}
	require.Len(t, msgs, n)
	for _, s := range subjects {
		require.Equal(t, 1, perAddr[s.Subject.Email], "emails to one subject")
	}

	// The email system erased each subject once, after the "deleted" email
	// was sent and after the delay (the database's clock throughout).
	for _, s := range subjects {
		var erasedAt []time.Time
		rows, err := sdb.Query(`SELECT erased_at FROM mailer_erasures WHERE email = $1`, s.Subject.Email)
		require.NoError(t, err)
		for rows.Next() {
			var at time.Time
			require.NoError(t, rows.Scan(&at))
			erasedAt = append(erasedAt, at)
		}
		require.NoError(t, rows.Err())
		require.NotEmpty(t, erasedAt, "email system erased %s", s.RequestID)
		var times struct {
			CompletedAt time.Time
			SentAt      time.Time
		}
		require.NoError(t, h.db.Raw(`SELECT e.completed_at, n.sent_at FROM erasures e
			JOIN notifications n ON n.request_id = e.request_id AND n.template = 'erasure_completed'
			WHERE e.request_id = ?`, s.RequestID).Scan(&times).Error)
		require.False(t, times.SentAt.IsZero(), "deleted email recorded for %s", s.RequestID)
		for _, at := range erasedAt {
			require.True(t, at.After(times.SentAt), "email system erased at %s, before the email was sent at %s (completed %s)", at, times.SentAt, times.CompletedAt)
			require.False(t, at.Before(times.CompletedAt.Add(delay)), "email system erased before the delay passed")
		}
	}
	for _, typ := range []string{event.TypeErasureCompleted, event.TypeErasureFinished} {
		testkit.Eventually(t, 30*time.Second, func() bool { return len(h.events.distinct(typ)) == n }, "%s for every request", typ)
		got := h.events.distinct(typ)
		require.Len(t, got, n, typ)
		for id, c := range got {
			require.Equal(t, 1, c, "%s for %s", typ, id)
		}
	}
}
