package report

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/source"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

var update = flag.Bool("update", false, "rewrite the golden report files in testdata/report/golden")

const (
	testdataDir = "../../testdata/report"
	apiToken    = "Bearer test-token"
	requestID   = "0b7e1c1e-5f4a-4d8e-9d51-000000000001"
)

var (
	subject  = event.Subject{ID: "u-1001", Email: "ana+gdpr@example.com"}
	fixedNow = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	testKey  = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
)

// seedPostgres creates a database with the source tables of testdata/report/postgres.sql.
func seedPostgres(t testing.TB) string {
	t.Helper()
	dsn := testkit.PostgresDSN(t)
	sqlText, err := os.ReadFile(filepath.Join(testdataDir, "postgres.sql"))
	require.NoError(t, err)
	conn, err := pgx.Connect(context.Background(), dsn)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	_, err = conn.Exec(context.Background(), string(sqlText))
	require.NoError(t, err)
	return dsn
}

// thirdPartyAPI stands in for two third-party APIs: a newsletter service
// answering GET with an array, and a support desk answering POST with an
// envelope object.
func thirdPartyAPI(t testing.TB) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/subscribers", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != apiToken {
			http.Error(w, `{"error":"unauthorized"}`, http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		// Exact match: a wrongly escaped "+" would arrive as a space.
		if r.URL.Query().Get("email") != subject.Email {
			_, _ = io.WriteString(w, "[]")
			return
		}
		_, _ = io.WriteString(w, `[
			{"list": "weekly", "subscribed_at": "2023-01-01T00:00:00Z", "confirmed": true},
			{"list": "offers", "subscribed_at": "2023-06-01T00:00:00Z", "confirmed": false, "source": {"campaign": "summer", "ip": "192.0.2.1"}},
			"legacy-flag"
		]`)
	})
	mux.HandleFunc("POST /v2/tickets/{id}/search", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != apiToken {
			http.Error(w, `{"error":"unauthorized"}`, http.StatusUnauthorized)
			return
		}
		var body struct {
			Email string `json:"email"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, `{"error":"bad body"}`, http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if r.PathValue("id") != subject.ID || body.Email != subject.Email {
			_, _ = io.WriteString(w, `{"data": {"tickets": []}}`)
			return
		}
		_, _ = io.WriteString(w, `{"meta": {"page": 1}, "data": {"count": 2, "tickets": [
			{"id": 77, "subject": "Cannot log in", "messages": [{"from": "customer", "text": "Hi,\nI cannot log in."}]},
			{"id": 78, "subject": "Refund", "status": null}
		]}}`)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func loginDocs() []map[string]any {
	var docs []map[string]any
	for i := range 5 {
		docs = append(docs, map[string]any{"user_id": "u-1001", "ip": fmt.Sprintf("198.51.100.%d", i+1), "at": fmt.Sprintf("2024-08-0%dT10:00:00Z", i+1)})
	}
	docs = append(docs, map[string]any{"user_id": "u-1002", "ip": "203.0.113.9", "at": "2024-08-09T10:00:00Z"})
	return docs
}

// goldenSources are one source of every kind, as in a real deployment.
func goldenSources(pgDSN, api, es string) []source.Config {
	return []source.Config{
		{Name: "customers", Kind: "postgres", DSN: pgDSN,
			Query: `SELECT id, email, name, created_at, vip, balance, visits, score, prefs, avatar, note
			        FROM customers WHERE id = @subject_id OR email = @email ORDER BY id`},
		{Name: "orders", Kind: "postgres", DSN: pgDSN,
			Query: `SELECT id, total, placed_at, items FROM orders WHERE customer_id = @subject_id ORDER BY id`},
		{Name: "newsletter", Kind: "http", URL: api + "/v1/subscribers?email={email}", AuthHeader: apiToken},
		{Name: "support", Kind: "http", Method: "POST", URL: api + "/v2/tickets/{subject_id}/search",
			Body: `{"email": "{email}"}`, AuthHeader: apiToken, RecordsPath: "data.tickets"},
		{Name: "logins", Kind: "elasticsearch", URL: es, Index: "logins", PageSize: 2,
			Query: `{"query": {"bool": {"filter": [{"term": {"user_id": "{subject_id}"}}]}}, "sort": ["_doc"]}`},
	}
}

func reportConfig(t testing.TB, sources ...source.Config) Config {
	cfg := DefaultConfig()
	cfg.StorageDir = t.TempDir()
	cfg.SpoolDir = t.TempDir()
	cfg.EncryptionKey = testKey
	cfg.SourceTimeout = 30 * time.Second
	cfg.Sources = sources
	return cfg
}

func newBuilder(t testing.TB, cfg Config, opts ...Option) *Builder {
	t.Helper()
	require.NoError(t, cfg.Validate())
	b, err := New(cfg, testkit.Logger(t), prometheus.NewRegistry(), opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// readReport opens a stored report and returns its files by name.
func readReport(t *testing.T, b *Builder, id string) map[string][]byte {
	t.Helper()
	rc, size, err := b.Open(t.Context(), id)
	require.NoError(t, err)
	defer rc.Close()
	data, err := io.ReadAll(rc)
	require.NoError(t, err)
	require.Equal(t, size, int64(len(data)), "Open's size is the decrypted size")
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	require.NoError(t, err)
	files := map[string][]byte{}
	for _, f := range zr.File {
		r, err := f.Open()
		require.NoError(t, err)
		files[f.Name], err = io.ReadAll(r)
		require.NoError(t, err)
		_ = r.Close()
	}
	return files
}

// storedFiles lists every file in the storage and spool directories.
func storedFiles(t *testing.T, dirs ...string) []string {
	t.Helper()
	var names []string
	for _, dir := range dirs {
		entries, err := os.ReadDir(dir)
		require.NoError(t, err)
		for _, e := range entries {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names
}

func TestBuildGoldenReport(t *testing.T) {
	t.Parallel()
	pg := seedPostgres(t)
	api := thirdPartyAPI(t)
	es := newFakeES(t, loginDocs())
	es.auth = apiToken
	srcs := goldenSources(pg, api.URL, es.URL)
	srcs[4].AuthHeader = apiToken
	cfg := reportConfig(t, srcs...)
	reg := prometheus.NewRegistry()
	b, err := New(cfg, testkit.Logger(t), reg, WithClock(func() time.Time { return fixedNow }), WithChunkSize(1024))
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })

	res, err := b.Build(t.Context(), requestID, subject)
	require.NoError(t, err)
	require.Equal(t, requestID, res.ReportID)
	require.Equal(t, map[string]int64{"customers": 1, "orders": 3, "newsletter": 3, "support": 2, "logins": 5}, res.Rows())
	require.Equal(t, []string{requestID + ".zip.enc"}, storedFiles(t, cfg.StorageDir, cfg.SpoolDir))
	require.Equal(t, 1.0, counterValue(t, b.generated))
	require.Equal(t, float64(res.Bytes), counterValue(t, b.bytes))
	require.Equal(t, 1, es.cleared, "the scroll context is cleared")

	files := readReport(t, b, requestID)
	var names []string
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	require.Equal(t, []string{"customers.csv", "customers.json", "logins.csv", "logins.json", "manifest.json",
		"newsletter.csv", "newsletter.json", "orders.csv", "orders.json", "support.csv", "support.json"}, names)

	golden := filepath.Join(testdataDir, "golden")
	if *update {
		require.NoError(t, os.RemoveAll(golden))
		require.NoError(t, os.MkdirAll(golden, 0o755))
		for name, data := range files {
			require.NoError(t, os.WriteFile(filepath.Join(golden, name), data, 0o644))
		}
	}
	for name, data := range files {
		want, err := os.ReadFile(filepath.Join(golden, name))
		require.NoError(t, err, "golden file %s (run with -update to create)", name)
		require.Equal(t, string(want), string(data), "file %s differs from testdata/report/golden (run with -update after checking the change)", name)
	}

	// The manifest's sums are those of the files, and every JSON file parses
	// to as many records as the manifest counts.
	var man Manifest
	require.NoError(t, json.Unmarshal(files[ManifestName], &man))
	require.Equal(t, subject.ID, man.SubjectID)
	require.NotContains(t, string(files[ManifestName]), subject.Email, "the manifest names the subject by id only")
	for _, f := range man.Files {
		require.Equal(t, int64(len(files[f.Name])), f.Bytes, f.Name)
		require.Equal(t, sha256hex(files[f.Name]), f.SHA256, f.Name)
	}
	for _, s := range man.Sources {
		var recs []json.RawMessage
		require.NoError(t, json.Unmarshal(files[s.Name+".json"], &recs), s.Name)
		require.Len(t, recs, int(s.Rows), s.Name)
	}
	// The whole download's sum is what the caller records.
	rc, _, err := b.Open(t.Context(), requestID)
	require.NoError(t, err)
	whole, err := io.ReadAll(rc)
	require.NoError(t, err)
	require.NoError(t, rc.Close())
	require.Equal(t, res.SHA256, sha256hex(whole))
	require.Equal(t, res.Bytes, int64(len(whole)))
}

func TestBuildSkipsSourcesNeedingAMissingIdentifier(t *testing.T) {
	t.Parallel()
	pg := seedPostgres(t)
	api := thirdPartyAPI(t)
	es := newFakeES(t, loginDocs())
	b := newBuilder(t, reportConfig(t, goldenSources(pg, api.URL, es.URL)...))

	// Only an id: the newsletter (email in the URL) and the support desk
	// (email in the body) must not be called with an empty email.
	res, err := b.Build(t.Context(), requestID, event.Subject{ID: "u-1001"})
	require.NoError(t, err)
	require.Equal(t, map[string]int64{"customers": 1, "orders": 3, "newsletter": 0, "support": 0, "logins": 5}, res.Rows())
	files := readReport(t, b, requestID)
	var man Manifest
	require.NoError(t, json.Unmarshal(files[ManifestName], &man))
	skipped := map[string]bool{}
	for _, s := range man.Sources {
		skipped[s.Name] = s.Skipped != ""
	}
	require.Equal(t, map[string]bool{"customers": false, "orders": false, "newsletter": true, "support": true, "logins": false}, skipped)
	require.Equal(t, "[]\n", string(files["newsletter.json"]))
	require.Empty(t, files["newsletter.csv"])
}

func TestBuildRetryOverwritesAndDeleteIsIdempotent(t *testing.T) {
	t.Parallel()
	pg := seedPostgres(t)
	cfg := reportConfig(t, goldenSources(pg, "http://unused", "http://unused")[:2]...)
	b := newBuilder(t, cfg)

	first, err := b.Build(t.Context(), requestID, subject)
	require.NoError(t, err)
	second, err := b.Build(t.Context(), requestID, subject)
	require.NoError(t, err)
	require.Equal(t, first.ReportID, second.ReportID)
	require.Equal(t, []string{requestID + ".zip.enc"}, storedFiles(t, cfg.StorageDir, cfg.SpoolDir), "a retry replaces, never duplicates")

	require.NoError(t, b.Delete(t.Context(), requestID))
	require.NoError(t, b.Delete(t.Context(), requestID))
	require.Empty(t, storedFiles(t, cfg.StorageDir))
	_, _, err = b.Open(t.Context(), requestID)
	require.ErrorIs(t, err, ErrNotFound)
	_, err = b.Build(t.Context(), "../escape", subject)
	require.ErrorIs(t, err, ErrInvalidID)
}

func TestBuildFailingSourceLeavesNothing(t *testing.T) {
	t.Parallel()
	pg := seedPostgres(t)
	healthy := goldenSources(pg, "", "")[1] // orders: read first, so a partial spool exists

	mux := http.NewServeMux()
	mux.HandleFunc("/503", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", http.StatusServiceUnavailable) })
	mux.HandleFunc("/404", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) })
	mux.HandleFunc("/badjson", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, `[{"a": 1}, {"b": `) })
	mux.HandleFunc("/notjson", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, `<html>oops</html>`) })
	mux.HandleFunc("/nopath", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, `{"other": []}`) })
	mux.HandleFunc("/hang", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `[{"a": 1},`)
		w.(http.Flusher).Flush()
		<-r.Context().Done() // until the client gives up
	})
	api := httptest.NewServer(mux)
	t.Cleanup(api.Close)
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	shardsES := newFakeES(t, loginDocs())
	shardsES.failShards = true
	es5xx := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Elastic-Product", "Elasticsearch")
		http.Error(w, `{"error":"boom"}`, http.StatusInternalServerError)
	}))
	t.Cleanup(es5xx.Close)

	esQuery := `{"query": {"term": {"user_id": "{subject_id}"}}}`
	cases := []struct {
		name     string
		src      source.Config
		class    string
		sentinel error
	}{
		{"sql error", source.Config{Kind: "postgres", DSN: pg, Query: "SELECT * FROM no_such_table WHERE id = @subject_id"}, source.ClassQuery, source.ErrQuery},
		{"sql write refused", source.Config{Kind: "postgres", DSN: pg, Query: "DELETE FROM customers WHERE id = @subject_id RETURNING id"}, source.ClassQuery, source.ErrQuery},
		{"sql timeout", source.Config{Kind: "postgres", DSN: pg, Timeout: 300 * time.Millisecond, Query: "SELECT pg_sleep(60), @subject_id::text AS id"}, source.ClassTimeout, source.ErrTimeout},
		{"sql unreachable", source.Config{Kind: "postgres", DSN: "postgres://root@127.0.0.1:1/x?sslmode=disable&connect_timeout=5", Query: "SELECT @subject_id::text"}, source.ClassUnavailable, source.ErrUnavailable},
		{"http 5xx", source.Config{Kind: "http", URL: api.URL + "/503?id={subject_id}"}, source.ClassHTTP5xx, source.ErrHTTP5xx},
		{"http 4xx", source.Config{Kind: "http", URL: api.URL + "/404?id={subject_id}"}, source.ClassHTTP4xx, source.ErrHTTP4xx},
		{"http bad json", source.Config{Kind: "http", URL: api.URL + "/badjson?id={subject_id}"}, source.ClassBadResponse, source.ErrBadResponse},
		{"http not json", source.Config{Kind: "http", URL: api.URL + "/notjson?id={subject_id}"}, source.ClassBadResponse, source.ErrBadResponse},
		{"http records path missing", source.Config{Kind: "http", URL: api.URL + "/nopath?id={subject_id}", RecordsPath: "data"}, source.ClassBadResponse, source.ErrBadResponse},
		{"http timeout", source.Config{Kind: "http", URL: api.URL + "/hang?id={subject_id}", Timeout: 300 * time.Millisecond}, source.ClassTimeout, source.ErrTimeout},
		{"http unreachable", source.Config{Kind: "http", URL: closed.URL + "/x?id={subject_id}"}, source.ClassUnavailable, source.ErrUnavailable},
		{"elasticsearch failed shards", source.Config{Kind: "elasticsearch", URL: shardsES.URL, Index: "logins", Query: esQuery}, source.ClassPartial, source.ErrPartial},
		{"elasticsearch 5xx", source.Config{Kind: "elasticsearch", URL: es5xx.URL, Index: "logins", Query: esQuery}, source.ClassHTTP5xx, source.ErrHTTP5xx},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.src.Name = "failing"
			cfg := reportConfig(t, healthy, tc.src)
			cfg.SourceConcurrency = 1
			b := newBuilder(t, cfg)
			// A whole report from an earlier attempt that crashed before it was
			// recorded must not survive a failed retry either.
			pending, err := b.storage.Create(t.Context(), requestID)
			require.NoError(t, err)
			_, _ = pending.Write([]byte("earlier whole report"))
			require.NoError(t, pending.Commit(t.Context()))

			_, err = b.Build(t.Context(), requestID, subject)
			require.Error(t, err)
			require.Equal(t, tc.class, ErrorClass(err))
			require.ErrorIs(t, err, tc.sentinel)
			require.NotContains(t, err.Error(), subject.Email, "error text must not carry personal data")
			require.NotContains(t, err.Error(), "ana%2Bgdpr", "error text must not carry personal data")
			require.Empty(t, storedFiles(t, cfg.StorageDir, cfg.SpoolDir))
			_, _, err = b.Open(t.Context(), requestID)
			require.ErrorIs(t, err, ErrNotFound)
		})
	}
}

func TestBuildCancelledMidSourceLeavesNothing(t *testing.T) {
	t.Parallel()
	pg := seedPostgres(t)
	started := make(chan struct{})
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `[{"a": 1}, {"a": 2},`)
		w.(http.Flusher).Flush()
		close(started)
		<-r.Context().Done()
	}))
	t.Cleanup(api.Close)
	cfg := reportConfig(t, goldenSources(pg, "", "")[1], source.Config{Name: "slow", Kind: "http", URL: api.URL + "/?id={subject_id}"})
	b := newBuilder(t, cfg)

	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		<-started
		cancel()
	}()
	_, err := b.Build(ctx, requestID, subject)
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, ClassCancelled, ErrorClass(err))
	require.Empty(t, storedFiles(t, cfg.StorageDir, cfg.SpoolDir))
}

// faultyStorage wraps Local and breaks the write path on purpose.
type faultyStorage struct {
	*Local
	onWrite func(written int) error
}

func (f *faultyStorage) Create(ctx context.Context, id string) (Pending, error) {
	p, err := f.Local.Create(ctx, id)
	if err != nil {
		return nil, err
	}
	return &faultyPending{Pending: p, onWrite: f.onWrite}, nil
}

type faultyPending struct {
	Pending
	onWrite func(written int) error
	written int
}

func (p *faultyPending) Write(b []byte) (int, error) {
	if err := p.onWrite(p.written); err != nil {
		return 0, err
	}
	p.written += len(b)
	return p.Pending.Write(b)
}

func TestBuildStorageFailuresLeaveNothing(t *testing.T) {
	t.Parallel()
	pg := seedPostgres(t)
	t.Run("disk full", func(t *testing.T) {
		t.Parallel()
		cfg := reportConfig(t, goldenSources(pg, "", "")[:2]...)
		local, err := NewLocal(cfg.StorageDir)
		require.NoError(t, err)
		b := newBuilder(t, cfg, WithChunkSize(64), WithStorage(&faultyStorage{Local: local, onWrite: func(written int) error {
			if written > 200 {
				return syscall.ENOSPC
			}
			return nil
		}}))
		_, err = b.Build(t.Context(), requestID, subject)
		require.ErrorIs(t, err, syscall.ENOSPC)
		require.Equal(t, ClassStorage, ErrorClass(err))
		require.Empty(t, storedFiles(t, cfg.StorageDir, cfg.SpoolDir))
	})
	t.Run("spool directory unusable", func(t *testing.T) {
		t.Parallel()
		cfg := reportConfig(t, goldenSources(pg, "", "")[:2]...)
		cfg.SpoolDir = filepath.Join(t.TempDir(), "missing")
		b := newBuilder(t, cfg)
		_, err := b.Build(t.Context(), requestID, subject)
		require.ErrorIs(t, err, os.ErrNotExist)
		require.Equal(t, ClassStorage, ErrorClass(err))
		require.Empty(t, storedFiles(t, cfg.StorageDir))
	})
	t.Run("cancelled while writing the zip", func(t *testing.T) {
		t.Parallel()
		cfg := reportConfig(t, goldenSources(pg, "", "")[:2]...)
		local, err := NewLocal(cfg.StorageDir)
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(t.Context())
		b := newBuilder(t, cfg, WithStorage(&faultyStorage{Local: local, onWrite: func(int) error {
			cancel() // the sources are read; the ZIP has started
			return nil
		}}))
		_, err = b.Build(ctx, requestID, subject)
		require.ErrorIs(t, err, context.Canceled)
		require.Equal(t, ClassCancelled, ErrorClass(err))
		require.Empty(t, storedFiles(t, cfg.StorageDir, cfg.SpoolDir))
	})
}

func TestOpenDetectsTamperingAndTruncation(t *testing.T) {
	t.Parallel()
	pg := seedPostgres(t)
	cfg := reportConfig(t, goldenSources(pg, "", "")[:2]...)
	b := newBuilder(t, cfg, WithChunkSize(256))
	_, err := b.Build(t.Context(), requestID, subject)
	require.NoError(t, err)
	path := filepath.Join(cfg.StorageDir, requestID+".zip.enc")
	orig, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NotContains(t, string(orig), "Nováková", "stored reports are encrypted")
	require.NotContains(t, string(orig), "PK\x03\x04", "stored reports are encrypted")

	readAll := func() error {
		rc, _, err := b.Open(t.Context(), requestID)
		if err != nil {
			return err
		}
		defer rc.Close()
		_, err = io.Copy(io.Discard, rc)
		return err
	}
	require.NoError(t, readAll())

	full := 256 + cryptTagLen
	cases := map[string][]byte{
		"flipped byte":                  func() []byte { c := bytes.Clone(orig); c[cryptHeaderLen+full+5] ^= 0x80; return c }(),
		"truncated at a chunk boundary": orig[:cryptHeaderLen+full],
		"truncated mid chunk":           orig[:len(orig)-3],
	}
	for name, data := range cases {
		require.NoError(t, os.WriteFile(path, data, 0o600))
		require.ErrorIs(t, readAll(), ErrCorrupt, name)
	}

	// Another request's report renamed into place does not open either.
	other := "0b7e1c1e-5f4a-4d8e-9d51-000000000002"
	_, err = b.Build(t.Context(), other, subject)
	require.NoError(t, err)
	require.NoError(t, os.Rename(filepath.Join(cfg.StorageDir, other+".zip.enc"), path))
	require.ErrorIs(t, readAll(), ErrCorrupt)
}

func TestSweepRemovesAbandonedTempFiles(t *testing.T) {
	t.Parallel()
	cfg := reportConfig(t)
	b := newBuilder(t, cfg)
	ctx := t.Context()

	// Two builds that "crashed" before Commit, one long ago, one just now.
	for _, id := range []string{"crashed-old", "in-flight"} {
		p, err := b.storage.Create(ctx, id)
		require.NoError(t, err)
		_, err = p.Write([]byte("partial"))
		require.NoError(t, err)
	}
	_, err := b.Build(ctx, "finished", subject)
	require.NoError(t, err)
	old := time.Now().Add(-2 * time.Hour)
	matches, err := filepath.Glob(filepath.Join(cfg.StorageDir, ".tmp-crashed-old-*"))
	require.NoError(t, err)
	require.Len(t, matches, 1)
	require.NoError(t, os.Chtimes(matches[0], old, old))

	n, err := b.Sweep(ctx, time.Hour)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	left := storedFiles(t, cfg.StorageDir)
	require.Len(t, left, 2)
	require.Equal(t, "finished.zip.enc", left[1])
	require.True(t, strings.HasPrefix(left[0], ".tmp-in-flight-"), "a temp file younger than the age is kept: %v", left)
	n, err = b.Sweep(ctx, time.Hour)
	require.NoError(t, err)
	require.Zero(t, n)
}

func TestNewRejectsBadKeyAndNilRegistererIsFine(t *testing.T) {
	t.Parallel()
	cfg := reportConfig(t)
	cfg.EncryptionKey = "short"
	_, err := New(cfg, nil, nil)
	require.ErrorContains(t, err, "report.encryption_key")
	cfg.EncryptionKey = testKey
	cfg.PreviousEncryptionKeys = []string{DevEncryptionKey, "short"}
	_, err = New(cfg, nil, nil)
	require.ErrorContains(t, err, "report.previous_encryption_keys[1]")
	cfg.PreviousEncryptionKeys = cfg.PreviousEncryptionKeys[:1]
	b, err := New(cfg, nil, nil)
	require.NoError(t, err)
	require.NoError(t, b.Close())
}

func TestErrorClass(t *testing.T) {
	t.Parallel()
	require.Equal(t, "", ErrorClass(nil))
	require.Equal(t, ClassCancelled, ErrorClass(fmt.Errorf("x: %w", context.Canceled)))
	require.Equal(t, source.ClassTimeout, ErrorClass(context.DeadlineExceeded))
	require.Equal(t, ClassStorage, ErrorClass(&storageError{errors.New("disk")}))
	require.Equal(t, ClassInternal, ErrorClass(errors.New("other")))
	require.Equal(t, ClassStorage, ErrorClass(&source.Error{Source: "s", Class: source.ClassSink, Err: syscall.ENOSPC}))
	require.Equal(t, source.ClassHTTP5xx, ErrorClass(fmt.Errorf("building: %w", &source.Error{Source: "s", Class: source.ClassHTTP5xx})))
}

func sha256hex(b []byte) string {
	h := newHashCounter(io.Discard)
	_, _ = h.Write(b)
	return h.sum()
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	require.NoError(t, c.Write(&m))
	return m.GetCounter().GetValue()
}
