package requests_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/config"
	"github.com/gdpr-oss/gdpr/docs"
	"github.com/gdpr-oss/gdpr/modules/selfservice"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// personalDataHits lists every place of s's installation holding needle: a
// "table.column" of its database, a Redis key (without the prefix), or a
// file of the report directory.
func (s *system) personalDataHits(ctx context.Context, rdb *redis.Client, needle string) (columns, keys, files []string) {
	s.t.Helper()
	var cols []struct {
		TableName  string
		ColumnName string
		DataType   string
	}
	require.NoError(s.t, s.db.Raw(`SELECT table_name, column_name, data_type FROM information_schema.columns
		WHERE table_schema = 'public'
		  AND data_type IN ('text', 'character varying', 'character', 'json', 'jsonb', 'bytea', 'ARRAY')
		ORDER BY table_name, column_name`).Scan(&cols).Error)
	require.NotEmpty(s.t, cols)
	for _, c := range cols {
		cond := fmt.Sprintf(`strpos(lower(%q::text), lower(?)) > 0`, c.ColumnName)
		if c.DataType == "bytea" {
			cond = fmt.Sprintf(`position(convert_to(?, 'UTF8') in %q) > 0`, c.ColumnName)
		}
		var n int
		require.NoError(s.t, s.db.Raw(fmt.Sprintf(`SELECT count(*) FROM %q WHERE %s`, c.TableName, cond), needle).Scan(&n).Error)
		if n > 0 {
			columns = append(columns, c.TableName+"."+c.ColumnName)
		}
	}
	all, err := rdb.Keys(ctx, s.cfg.Redis.Prefix+"*").Result()
	require.NoError(s.t, err)
	for _, k := range all {
		var values []string
		switch rdb.Type(ctx, k).Val() {
		case "hash":
			m, err := rdb.HGetAll(ctx, k).Result()
			require.NoError(s.t, err)
			for f, v := range m {
				values = append(values, f, v)
			}
		case "string":
			values = append(values, rdb.Get(ctx, k).Val())
		default:
			values = append(values, k) // a type gdpr does not write: count it
		}
		for _, v := range append(values, k) {
			if strings.Contains(strings.ToLower(v), strings.ToLower(needle)) {
				keys = append(keys, strings.TrimPrefix(k, s.cfg.Redis.Prefix))
				break
			}
		}
	}
	require.NoError(s.t, filepath.WalkDir(s.cfg.Report.StorageDir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if strings.Contains(string(b), needle) || strings.Contains(path, needle) {
			files = append(files, path)
		}
		return nil
	}))
	return columns, keys, files
}

func get(t *testing.T, link, accept string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, link, nil)
	require.NoError(t, err)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

// TestGDPRErasesItsOwnCopy runs an access request and then an erasure for
// one subject against the real services, then scans every text, json and
// bytea column of every table, the report directory, the Redis keys under
// the installation's prefix and the process log for the subject's id and
// address and phone number: each hit must be a place docs/privacy.md lists as kept after an
// erasure. The old download link answers 410 and its file is gone; a
// second subject's request, report and link are untouched.
func TestGDPRErasesItsOwnCopy(t *testing.T) {
	t.Parallel()
	s := newSystem(t, 2, nil)
	all := s.start("all")
	ctx := t.Context()
	erased, kept := 0, 1
	accessErased, err := s.submit(ctx, "access", erased)
	require.NoError(t, err)
	accessKept, err := s.submit(ctx, "access", kept)
	require.NoError(t, err)
	s.waitStates([]string{accessErased, accessKept}, "completed", 90*time.Second)
	s.waitEmails(2)
	emails := s.emails()
	links := map[string]string{}
	for _, id := range []string{accessErased, accessKept} {
		require.Len(t, emails[id], 1)
		raw, err := s.mail.Raw(ctx, emails[id][0].ID)
		require.NoError(t, err)
		links[id] = linkRE.FindString(strings.ReplaceAll(string(raw), "=\r\n", ""))
		require.NotEmpty(t, links[id])
		checkReport(t, id, map[string]int{accessErased: erased, accessKept: kept}[id], s.download(emails[id][0]))
	}
	reportFile := func(id string) string { return filepath.Join(s.cfg.Report.StorageDir, id+".zip.enc") }
	require.FileExists(t, reportFile(accessErased))

	erasure, err := s.submit(ctx, "erasure", erased)
	require.NoError(t, err)
	s.waitStates([]string{erasure}, "completed", 90*time.Second)
	testkit.Eventually(t, 60*time.Second, func() bool {
		return s.count(`SELECT count(*) FROM requests WHERE id = ? AND subject_email = '' AND subject_id = ''`, erasure) == 1 &&
			s.count(`SELECT count(*) FROM notifications WHERE request_id = ? AND state IN ('sent', 'skipped')`, erasure) == 1
	}, "the deleted email is recorded and the erasure scrubbed")
	s.waitEmails(3)

	status, body := get(t, links[accessErased], "")
	require.Equal(t, http.StatusGone, status, body)
	require.Contains(t, body, "report_erased")
	require.Contains(t, body, "own request")
	status, body = get(t, links[accessErased], "text/html,application/xhtml+xml,*/*;q=0.8")
	require.Equal(t, http.StatusGone, status)
	require.Contains(t, body, "<h1>Report deleted</h1>")
	// The file goes after the scrub commits, and its removal is recorded
	// after the unlink: the record may trail the missing file by a moment.
	testkit.Eventually(t, 30*time.Second, func() bool {
		return s.count(`SELECT count(*) FROM reports WHERE request_id = ? AND deleted_reason = 'subject_erasure' AND file_removed`, accessErased) == 1
	}, "the report's file removal is recorded")
	require.NoFileExists(t, reportFile(accessErased))
	require.Equal(t, 1, s.count(`SELECT count(*) FROM requests WHERE id = ? AND erased_by = ? AND pii_scrubbed_at IS NOT NULL`, accessErased, erasure))

	places, err := docs.RecordOfProcessing()
	require.NoError(t, err)
	rdb := redis.NewClient(&redis.Options{Addr: s.cfg.Redis.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	all.mu.Lock()
	logs := all.out.String()
	all.mu.Unlock()
	require.Equal(t, 1, s.count(`SELECT count(*) FROM requests WHERE id = ? AND subject_phone = ''`, erasure), "the erasure's own phone number is scrubbed")
	for _, needle := range []string{subjectID(erased), subjectID(erased) + "@example.com", subjectPhone(erased)} {
		columns, keys, files := s.personalDataHits(ctx, rdb, needle)
		for _, c := range columns {
			p, ok := docs.Find(places, "table", c)
			require.True(t, ok, "%s holds the erased subject's %q and is not in docs/privacy.md", c, needle)
			require.True(t, p.KeptAfterErasure(), "%s holds the erased subject's %q; docs/privacy.md says the erasure removes it", c, needle)
		}
		for _, k := range keys {
			p, ok := docs.Find(places, "redis", k)
			require.True(t, ok, "Redis key %s holds the erased subject's %q and is not in docs/privacy.md", k, needle)
			require.True(t, p.KeptAfterErasure(), "Redis key %s holds the erased subject's %q; docs/privacy.md says the erasure removes it", k, needle)
		}
		require.Empty(t, files, "report storage holds the erased subject's %q", needle)
		require.NotContains(t, logs, needle, "the process log names the subject")
	}

	// Every Redis place in docs/privacy.md ends by Redis expiry, within the
	// longest window the list names: a key without a TTL, or with a longer
	// one, outlives what the list says.
	longest := slices.Max([]time.Duration{s.cfg.Serve.IdempotencyTTL, s.cfg.Serve.AcceptedTTL,
		s.cfg.Privacy.CodeTTL, s.cfg.Privacy.SendWindow, s.cfg.Privacy.CodeFailureWindow})
	redisKeys, err := rdb.Keys(ctx, s.cfg.Redis.Prefix+"*").Result()
	require.NoError(t, err)
	require.NotEmpty(t, redisKeys)
	for _, k := range redisKeys {
		ttl, err := rdb.TTL(ctx, k).Result()
		require.NoError(t, err)
		require.Positive(t, ttl, "Redis key %s has no expiry", strings.TrimPrefix(k, s.cfg.Redis.Prefix))
		require.LessOrEqual(t, ttl, longest, "Redis key %s lives longer than docs/privacy.md says", strings.TrimPrefix(k, s.cfg.Redis.Prefix))
	}

	// The PII-free record still answers by request id.
	out, err := s.run("reconcile", "--since", "1h", "--stuck-after", "1h")
	require.NoError(t, err, "reconcile is in sync after the scrub:\n%s", out)
	for id, last := range map[string]string{accessErased: "report.ready", erasure: "erasure.completed"} {
		out, err = s.run("timeline", id)
		require.NoError(t, err, "%s", out)
		require.Contains(t, out, last, "the timeline of %s", id)
		require.NotContains(t, out, subjectID(erased))
	}
	out, err = s.run("retention", "run", "--dry-run")
	require.NoError(t, err, "%s", out)
	require.Contains(t, out, "would delete 0", "nothing is past its lifetime yet")

	// The second subject is untouched.
	require.Equal(t, 1, s.count(`SELECT count(*) FROM requests WHERE id = ? AND subject_id = ? AND subject_email = ? AND subject_phone = ? AND pii_scrubbed_at IS NULL`,
		accessKept, subjectID(kept), subjectID(kept)+"@example.com", subjectPhone(kept)))
	require.FileExists(t, reportFile(accessKept))
	status, _ = get(t, links[accessKept], "")
	require.Equal(t, http.StatusOK, status)
	columns, _, _ := s.personalDataHits(ctx, rdb, subjectID(kept)+"@example.com")
	require.Contains(t, columns, "requests.subject_email")
}

// run runs a gdpr command against s's installation and returns its output.
func (s *system) run(args ...string) (string, error) {
	cmd := exec.CommandContext(s.t.Context(), s.bin, args...)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, config.EnvPrefix) {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, "GDPR_CONFIG="+s.file)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestPrivacyPagesSayTheReportWasDeletedAtTheSubjectsRequest: a probe found
// the self-service status page still offering "Go to the download page"
// after the subject's erasure, and the download page minting a fresh link
// to a report that answered 410. Both now say the report was deleted at
// the subject's own request, and no download link is made.
func TestPrivacyPagesSayTheReportWasDeletedAtTheSubjectsRequest(t *testing.T) {
	t.Parallel()
	s := newSystem(t, 1, func(c *config.Config) { c.Privacy.Enabled = true })
	s.start("all")
	ctx := t.Context()
	access, err := s.submit(ctx, "access", 0)
	require.NoError(t, err)
	s.waitStates([]string{access}, "completed", 90*time.Second)
	key, now := []byte(s.cfg.Serve.DownloadKey), time.Now()
	statusLink := selfservice.StatusURL(s.cfg.Serve.PublicURL, key, access, time.Hour, now)
	pageLink := selfservice.DownloadPageURL(s.cfg.Serve.PublicURL, key, access, time.Hour, now)

	code, body := get(t, statusLink, "text/html")
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, `id="download-page"`, "a ready report is offered")
	require.NotContains(t, body, `id="report-deleted"`)
	code, body = get(t, pageLink, "text/html")
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, `id="download-button"`)

	erasure, err := s.submit(ctx, "erasure", 0)
	require.NoError(t, err)
	s.waitStates([]string{erasure}, "completed", 90*time.Second)
	testkit.Eventually(t, 60*time.Second, func() bool {
		return s.count(`SELECT count(*) FROM reports WHERE request_id = ? AND deleted_reason = 'subject_erasure'`, access) == 1
	}, "the erasure deleted the earlier report")

	code, body = get(t, statusLink, "text/html")
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, `id="report-deleted"`)
	require.Contains(t, body, "deleted at your own request")
	require.NotContains(t, body, `id="download-page"`, "no link to a deleted report")
	require.NotContains(t, body, "/privacy/download", "no download link is minted")
	for _, link := range []string{pageLink, selfservice.DownloadPageURL(s.cfg.Serve.PublicURL, key, access, -time.Hour, now)} {
		code, body = get(t, link, "text/html")
		require.Equal(t, http.StatusGone, code, body)
		require.Contains(t, body, "deleted at your own request", "fresh and expired links alike say why")
		require.NotContains(t, body, `id="download-button"`)
	}
}
