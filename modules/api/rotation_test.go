package api_test

import (
	"archive/zip"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/download"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/intake"
	"github.com/gdpr-oss/gdpr/modules/report"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// TestKeyRotation rotates the report encryption key and the download key as
// docs/operations.md describes, each step a fresh server and report builder
// on one report storage: reports and links issued before the rotation keep
// working beside those issued after it, until the old keys are removed.
func TestKeyRotation(t *testing.T) {
	t.Parallel()
	random := func() string {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		return hex.EncodeToString(b)
	}
	oldEnc, newEnc := random(), random()
	oldDL, newDL := []byte(random()), []byte(random())
	storage := t.TempDir()
	const (
		before = "0193a5c2-7e0b-7c4d-8f00-0000000000e1"
		after  = "0193a5c2-7e0b-7c4d-8f00-0000000000e2"
	)

	// step is one configuration of the service: its builder and server, with
	// the stored reports registered in its database.
	step := func(enc string, prevEnc []string, dl []byte, prevDL [][]byte) (*report.Builder, *harness) {
		b, err := report.New(report.Config{StorageDir: storage, EncryptionKey: enc, PreviousEncryptionKeys: prevEnc}, testkit.Logger(t), nil)
		require.NoError(t, err)
		t.Cleanup(func() { _ = b.Close() })
		return b, newHarness(t, harnessOptions{reports: b, downloadKey: dl, previousDownloadKeys: prevDL})
	}
	build := func(b *report.Builder, id string) report.Result {
		res, err := b.Build(t.Context(), id, event.Subject{ID: "user-" + id[len(id)-2:]})
		require.NoError(t, err)
		return res
	}
	register := func(h *harness, id string, res report.Result) {
		now := time.Now().UTC()
		require.NoError(t, h.db.Exec(`INSERT INTO requests (id, type, state, submitted_at, due_at, completed_at) VALUES (?, 'access', 'completed', ?, ?, ?)`,
			id, now, intake.DueAt(now), now).Error)
		require.NoError(t, h.db.Exec(`INSERT INTO reports (id, request_id, bytes, sha256) VALUES (?, ?, ?, ?)`, res.ReportID, id, res.Bytes, res.SHA256).Error)
	}
	link := func(key []byte, id string) string {
		return strings.TrimPrefix(download.URL(publicBase, key, id, 7*24*time.Hour, time.Now()), publicBase)
	}
	// fetch follows a link and, on 200, checks that it is the request's report.
	fetch := func(h *harness, path, id string) int {
		t.Helper()
		got := h.do(h.request(http.MethodGet, path, nil))
		if got.status == http.StatusOK {
			require.Equal(t, id, manifestRequestID(t, got.body))
		}
		return got.status
	}

	// 1. Before: one key of each.
	b1, h1 := step(oldEnc, nil, oldDL, nil)
	res1 := build(b1, before)
	register(h1, before, res1)
	oldLink := link(oldDL, before)
	require.Equal(t, http.StatusOK, fetch(h1, oldLink, before))

	// 2. Rotated: new keys active, the old ones previous.
	b2, h2 := step(newEnc, []string{oldEnc}, newDL, [][]byte{oldDL})
	res2 := build(b2, after)
	register(h2, before, res1)
	register(h2, after, res2)
	newLink := link(newDL, after)
	require.Equal(t, http.StatusOK, fetch(h2, oldLink, before), "a link and report from before the rotation")
	require.Equal(t, http.StatusOK, fetch(h2, newLink, after), "a link and report from after it")
	require.Equal(t, http.StatusOK, fetch(h2, link(newDL, before), before), "a new link to an old report")
	require.Equal(t, http.StatusForbidden, fetch(h1, newLink, after), "the server before the rotation does not know the new key")

	// 3. The old keys removed (after download_ttl, and once no report needs the old key).
	_, h3 := step(newEnc, nil, newDL, nil)
	register(h3, before, res1)
	register(h3, after, res2)
	require.Equal(t, http.StatusForbidden, fetch(h3, oldLink, before), "a link signed with a removed key")
	require.Equal(t, http.StatusOK, fetch(h3, newLink, after))
	require.Equal(t, http.StatusInternalServerError, fetch(h3, link(newDL, before), before), "a report sealed with a removed key does not open")
	require.Contains(t, h3.logs.String(), report.KeyID(mustHex(t, oldEnc)), "the log names the missing key")
}

const publicBase = "https://privacy.example.com"

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	require.NoError(t, err)
	return b
}

func manifestRequestID(t *testing.T, zipped []byte) string {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(zipped), int64(len(zipped)))
	require.NoError(t, err)
	f, err := zr.Open(report.ManifestName)
	require.NoError(t, err)
	defer f.Close()
	raw, err := io.ReadAll(f)
	require.NoError(t, err)
	var m report.Manifest
	require.NoError(t, json.Unmarshal(raw, &m))
	return m.RequestID
}
