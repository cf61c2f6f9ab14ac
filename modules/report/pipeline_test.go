package report

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/source"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// TestBuildLargeSourcesAtEveryCompressConcurrency builds a report of a
// PostgreSQL source (fixed columns: both files encoded while it is read)
// and an HTTP source whose records' keys vary (the CSV written from the
// spilled records after the read), each large enough that records and
// deflated entries spill to encrypted files, with report.compress_concurrency
// 0, 1 and 2. It decrypts and unzips each report and checks every entry
// against what the reference encoders (encoding/json, encoding/csv) make of
// the same rows, and the manifest's sizes and sums.
func TestBuildLargeSourcesAtEveryCompressConcurrency(t *testing.T) {
	t.Parallel()
	const rows = 20_000
	dsn := testkit.PostgresDSN(t)
	conn, err := pgx.Connect(t.Context(), dsn)
	require.NoError(t, err)
	_, err = conn.Exec(t.Context(), `CREATE TABLE events AS
		SELECT g AS id, 'u-1001'::text AS subject_id, md5(g::text) AS payload,
		       CASE WHEN g % 7 = 0 THEN 'with "quote", comma' WHEN g % 11 = 0 THEN NULL ELSE 'page_view' END AS kind,
		       jsonb_build_object('n', g, 'tags', jsonb_build_array('a', g % 3)) AS extra
		FROM generate_series(1, `+fmt.Sprint(rows)+`) g`)
	require.NoError(t, err)
	require.NoError(t, conn.Close(context.Background()))

	var body strings.Builder
	body.WriteString("[")
	for i := range rows {
		if i > 0 {
			body.WriteString(",")
		}
		// Keys appear over time, so the CSV header is known only at the end.
		fmt.Fprintf(&body, `{"n": %d, "text": "line\nbreak %x"`, i, i*2654435761)
		if i%3 == 0 {
			fmt.Fprintf(&body, `, "k%d": %d`, i%50, i)
		}
		if i%5 == 0 {
			body.WriteString(`, "nested": {"a": [1, null, "x"]}, "n": "repeated"`)
		}
		body.WriteString("}")
	}
	body.WriteString("]")
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, body.String())
	}))
	t.Cleanup(api.Close)
	sources := []source.Config{
		{Name: "events", Kind: "postgres", DSN: dsn, Query: "SELECT id, kind, payload, extra FROM events WHERE subject_id = @subject_id ORDER BY id"},
		{Name: "api", Kind: "http", URL: api.URL + "/?id={subject_id}"},
	}

	var first map[string][]byte
	for _, workers := range []int{0, 1, 2} {
		t.Run(fmt.Sprintf("compress_concurrency %d", workers), func(t *testing.T) {
			cfg := reportConfig(t, sources...)
			cfg.CompressConcurrency = workers
			b := newBuilder(t, cfg)
			res, err := b.Build(t.Context(), requestID, subject)
			require.NoError(t, err)
			require.Equal(t, map[string]int64{"events": rows, "api": rows}, res.Rows())
			files := readReport(t, b, requestID)
			var man Manifest
			require.NoError(t, json.Unmarshal(files[ManifestName], &man))
			require.Len(t, man.Files, 4)
			for _, f := range man.Files {
				require.Equal(t, int64(len(files[f.Name])), f.Bytes, f.Name)
				require.Equal(t, sha256hex(files[f.Name]), f.SHA256, f.Name)
			}
			for _, name := range []string{"events", "api"} {
				var recs []json.RawMessage
				require.NoError(t, json.Unmarshal(files[name+".json"], &recs), name)
				require.Len(t, recs, rows, name)
				// The JSON file is one record per line between the brackets.
				lines := strings.Split(strings.TrimSuffix(string(files[name+".json"]), "\n"), "\n")
				require.Equal(t, "[", lines[0])
				require.Equal(t, "]", lines[len(lines)-1])
				objs := make([][]byte, len(recs))
				for i, l := range lines[1 : len(lines)-1] {
					objs[i] = []byte(strings.TrimSuffix(l, ","))
				}
				cols, colIdx := firstSeenKeys(t, objs)
				require.Equal(t, string(csvReference(t, cols, colIdx, objs)), string(files[name+".csv"]), name)
			}
			require.Contains(t, string(files["events.csv"]), `"with ""quote"", comma"`)
			require.Contains(t, string(files["api.csv"]), "\"line\nbreak ")
			if first == nil {
				first = files
			} else {
				for name, data := range first {
					if name != ManifestName {
						require.Equal(t, string(data), string(files[name]), name)
					}
				}
			}
			require.Equal(t, []string{requestID + ".zip.enc"}, storedFiles(t, cfg.StorageDir, cfg.SpoolDir), "spool files are unlinked")
			entries, err := os.ReadDir(cfg.SpoolDir)
			require.NoError(t, err)
			require.Empty(t, entries)
		})
	}
}

// firstSeenKeys is the CSV header of records: every key, in first-seen order.
func firstSeenKeys(t *testing.T, objs [][]byte) ([]string, map[string]int) {
	t.Helper()
	var cols []string
	idx := map[string]int{}
	for _, obj := range objs {
		require.NoError(t, source.Fields(obj, func(key string, _ []byte) error {
			if _, ok := idx[key]; !ok {
				idx[key] = len(cols)
				cols = append(cols, key)
			}
			return nil
		}))
	}
	return cols, idx
}

// TestSinkSurfacesSpoolFailures: when a spool cannot be written (here its
// directory is gone) while a large source is read, the reader gets the
// error from its encoders, at every report.compress_concurrency, and the
// sink closes without waiting forever for batches that will not come back.
func TestSinkSurfacesSpoolFailures(t *testing.T) {
	t.Parallel()
	key := newMasterKey(bytes.Repeat([]byte{9}, 32))
	for _, workers := range []int{0, 1, 2} {
		for _, fixed := range []bool{true, false} {
			t.Run(fmt.Sprintf("compress_concurrency %d, fixed columns %v", workers, fixed), func(t *testing.T) {
				t.Parallel()
				var p pools
				missing := filepath.Join(t.TempDir(), "gone")
				s := newSourceSink(t.Context(), &p, "big", missing, key, workers)
				defer s.close()
				if fixed {
					require.NoError(t, s.Columns([]string{"id", "payload"}))
				}
				random := make([]byte, 48)
				var err error
				for i := 0; i < 200_000 && err == nil; i++ {
					_, _ = rand.Read(random)
					err = s.Row(fmt.Appendf(nil, `{"id":%d,"payload":"%x"}`, i, random))
				}
				if err == nil {
					err = s.finish()
				}
				require.ErrorIs(t, err, os.ErrNotExist)
			})
		}
	}
}
