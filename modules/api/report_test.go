package api_test

import (
	"archive/zip"
	"bytes"
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

// TestReportDownloadStreamsAStoredReport downloads a report that
// modules/report built and stored encrypted, through the emailed link.
func TestReportDownloadStreamsAStoredReport(t *testing.T) {
	t.Parallel()
	builder, err := report.New(report.Config{StorageDir: t.TempDir(), EncryptionKey: report.DevEncryptionKey}, testkit.Logger(t), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = builder.Close() })
	h := newHarness(t, harnessOptions{reports: builder})

	id := "0193a5c2-7e0b-7c4d-8f00-0000000000d4"
	res, err := builder.Build(t.Context(), id, event.Subject{ID: "user-4"})
	require.NoError(t, err)
	now := time.Now().UTC()
	require.NoError(t, h.db.Exec(`INSERT INTO requests (id, type, state, submitted_at, due_at, completed_at) VALUES (?, 'access', 'completed', ?, ?, ?)`,
		id, now, intake.DueAt(now), now).Error)
	require.NoError(t, h.db.Exec(`INSERT INTO reports (id, request_id, bytes, sha256) VALUES (?, ?, ?, ?)`, res.ReportID, id, res.Bytes, res.SHA256).Error)

	link := download.URL("https://privacy.example.com", h.key, id, 7*24*time.Hour, time.Now())
	path := strings.TrimPrefix(link, "https://privacy.example.com")
	got := h.do(h.request(http.MethodGet, path, nil))
	require.Equal(t, http.StatusOK, got.status, "%s", got.body)
	require.EqualValues(t, res.Bytes, len(got.body))
	zr, err := zip.NewReader(bytes.NewReader(got.body), int64(len(got.body)))
	require.NoError(t, err)
	var manifest report.Manifest
	for _, f := range zr.File {
		if f.Name != "manifest.json" {
			continue
		}
		rc, err := f.Open()
		require.NoError(t, err)
		raw, err := io.ReadAll(rc)
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal(raw, &manifest))
	}
	require.Equal(t, id, manifest.RequestID)

	other := h.do(h.request(http.MethodGet, strings.Replace(path, id, "0193a5c2-7e0b-7c4d-8f00-0000000000d5", 1), nil))
	require.Equal(t, http.StatusForbidden, other.status)
}
