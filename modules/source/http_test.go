package source_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/expand"
	"github.com/gdpr-oss/gdpr/modules/source"
)

type rows struct{ rows []string }

func (r *rows) Columns([]string) error { return nil }
func (r *rows) Row(obj []byte) error   { r.rows = append(r.rows, string(obj)); return nil }

// seen records what an upstream received.
type seen struct {
	mu   sync.Mutex
	reqs []*http.Request
}

func (s *seen) add(r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reqs = append(s.reqs, r.Clone(r.Context()))
}

func (s *seen) all() []*http.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*http.Request(nil), s.reqs...)
}

// exportAPI is a real net/http upstream whose ServeMux cleans paths (it
// redirects /users/../export to /export), with a per-user export and an
// all-users export behind the same credentials.
func exportAPI(t *testing.T, hits *seen) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /users/{id}/export", func(w http.ResponseWriter, r *http.Request) {
		hits.add(r)
		_ = json.NewEncoder(w).Encode([]map[string]string{{"user": r.PathValue("id")}})
	})
	mux.HandleFunc("GET /export", func(w http.ResponseWriter, r *http.Request) {
		hits.add(r)
		if r.Header.Get("Authorization") != "Bearer s3cret" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		_ = json.NewEncoder(w).Encode([]map[string]string{{"user": "u1"}, {"user": "u2"}, {"user": "u3"}})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestDotIdentifiersNeverWalkOutOfTheSourcePath(t *testing.T) {
	t.Parallel()
	var hits seen
	api := exportAPI(t, &hits)
	src, err := source.New(source.Config{Name: "desk", Kind: "http", URL: api.URL + "/users/{subject_id}/export", AuthHeader: "Bearer s3cret"}, source.Options{})
	require.NoError(t, err)

	var ok rows
	require.NoError(t, src.Read(t.Context(), event.Subject{ID: "u2"}, &ok))
	require.Equal(t, []string{`{"user":"u2"}`}, ok.rows)

	for _, id := range []string{"..", ".", ""} {
		require.False(t, src.Applies(event.Subject{ID: id, Email: "ann@example.com"}), "id %q: the report skips the source", id)
		var got rows
		err := src.Read(t.Context(), event.Subject{ID: id, Email: "ann@example.com"}, &got)
		require.ErrorIs(t, err, source.ErrRefused, "id %q", id)
		require.Equal(t, source.ClassRefused, source.Class(err))
		require.Empty(t, got.rows, "id %q: no other subject's records", id)
	}
	for _, r := range hits.all() {
		require.Equal(t, "/users/u2/export", r.URL.Path, "only the subject's own export is fetched")
	}
	require.Len(t, hits.all(), 1)
}

func TestSourceRedirectsStayOnTheOriginWithoutReferer(t *testing.T) {
	t.Parallel()
	var elsewhere seen
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.add(r)
		_, _ = io.WriteString(w, `[{"stolen":true}]`)
	}))
	t.Cleanup(other.Close)
	var here seen
	mux := http.NewServeMux()
	mux.HandleFunc("/away", func(w http.ResponseWriter, r *http.Request) {
		here.add(r)
		http.Redirect(w, r, other.URL+"/collect", http.StatusFound)
	})
	mux.HandleFunc("/moved", func(w http.ResponseWriter, r *http.Request) {
		here.add(r)
		http.Redirect(w, r, "/new?"+r.URL.RawQuery, http.StatusMovedPermanently)
	})
	mux.HandleFunc("/new", func(w http.ResponseWriter, r *http.Request) {
		here.add(r)
		_, _ = io.WriteString(w, `[{"ok":true}]`)
	})
	api := httptest.NewServer(mux)
	t.Cleanup(api.Close)
	subject := event.Subject{ID: "u1", Email: "ann@example.com"}

	t.Run("another origin is not followed", func(t *testing.T) {
		src, err := source.New(source.Config{Name: "away", Kind: "http", URL: api.URL + "/away?e={email}", AuthHeader: "Bearer s3cret"}, source.Options{})
		require.NoError(t, err)
		var got rows
		err = src.Read(t.Context(), subject, &got)
		require.ErrorIs(t, err, source.ErrRedirect)
		require.Equal(t, source.ClassRedirect, source.Class(err))
		require.Empty(t, got.rows)
		require.Empty(t, elsewhere.all(), "the other origin sees no request, so no Authorization")
	})
	t.Run("the same origin is followed without Referer", func(t *testing.T) {
		src, err := source.New(source.Config{Name: "moved", Kind: "http", URL: api.URL + "/moved?e={email}", AuthHeader: "Bearer s3cret"}, source.Options{})
		require.NoError(t, err)
		var got rows
		require.NoError(t, src.Read(t.Context(), subject, &got))
		require.Equal(t, []string{`{"ok":true}`}, got.rows)
		var final *http.Request
		for _, r := range here.all() {
			require.Empty(t, r.Header.Get("Referer"), "%s carries no Referer (it would hold the email)", r.URL.Path)
			if r.URL.Path == "/new" {
				final = r
			}
		}
		require.NotNil(t, final)
		require.Equal(t, "Bearer s3cret", final.Header.Get("Authorization"))
	})
	t.Run("a redirect that changes the method is not followed", func(t *testing.T) {
		src, err := source.New(source.Config{Name: "post", Kind: "http", Method: "POST", URL: api.URL + "/moved", Body: `{"e":"{email}"}`}, source.Options{})
		require.NoError(t, err)
		require.ErrorIs(t, src.Read(t.Context(), subject, &rows{}), source.ErrRedirect)
	})
}

func TestBodyPlaceholdersOnlyInStringValues(t *testing.T) {
	t.Parallel()
	for _, cfg := range []source.Config{
		{Name: "es", Kind: "elasticsearch", URL: "http://127.0.0.1:1", Index: "x", Query: `{"terms":{"user_id":[{subject_id}]}}`},
		{Name: "api", Kind: "http", Method: "POST", URL: "http://127.0.0.1:1/search", Body: `{"ids":[{subject_id}]}`},
	} {
		_, err := source.New(cfg, source.Options{})
		require.ErrorIs(t, err, expand.ErrTemplate, cfg.Name)
	}

	var got seen
	bodies := make(chan []byte, 1)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.add(r)
		b, _ := io.ReadAll(r.Body)
		bodies <- b
		_, _ = io.WriteString(w, `[]`)
	}))
	t.Cleanup(api.Close)
	src, err := source.New(source.Config{Name: "api", Kind: "http", Method: "POST", URL: api.URL + "/search", Body: `{"ids":["{subject_id}"]}`}, source.Options{})
	require.NoError(t, err)
	require.NoError(t, src.Read(t.Context(), event.Subject{ID: `1001","1002","1003`}, &rows{}))
	var body struct{ IDs []string }
	require.NoError(t, json.Unmarshal(<-bodies, &body))
	require.Equal(t, []string{`1001","1002","1003`}, body.IDs, "one id, however it is written")
}
