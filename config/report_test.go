package config

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestReportValidateNamesTheSetting(t *testing.T) {
	t.Parallel()
	ok := func() Report {
		r := defaultReport()
		r.Sources = []Source{
			{Name: "crm", Kind: "postgres", DSN: "postgres://x", Query: "SELECT * FROM c WHERE id = @subject_id"},
			{Name: "api", Kind: "http", URL: "https://api.example.com/u/{subject_id}?e={email}"},
			{Name: "logs", Kind: "elasticsearch", URL: "http://es:9200", Index: "logs-*", Query: `{"query":{"term":{"email":"{email}"}}}`},
		}
		return r
	}
	require.NoError(t, ok().validate())
	cases := []struct {
		setting string
		mutate  func(*Report)
	}{
		{"report.storage_dir", func(r *Report) { r.StorageDir = "" }},
		{"report.encryption_key", func(r *Report) { r.EncryptionKey = "abcd" }},
		{"report.source_timeout", func(r *Report) { r.SourceTimeout = 0 }},
		{"report.source_concurrency", func(r *Report) { r.SourceConcurrency = 0 }},
		{"report.sources[0].name", func(r *Report) { r.Sources[0].Name = "" }},
		{"report.sources[0].name", func(r *Report) { r.Sources[0].Name = "../x" }},
		{"report.sources[1].name", func(r *Report) { r.Sources[1].Name = "crm" }},
		{"report.sources[2].name", func(r *Report) { r.Sources[2].Name = "manifest" }},
		{"report.sources[0].kind", func(r *Report) { r.Sources[0].Kind = "oracle" }},
		{"report.sources[0].dsn", func(r *Report) { r.Sources[0].DSN = "" }},
		{"report.sources[0].query", func(r *Report) { r.Sources[0].Query = "" }},
		{"report.sources[0].query", func(r *Report) { r.Sources[0].Query = "SELECT * FROM customers" }},
		{"report.sources[1].url", func(r *Report) { r.Sources[1].URL = "https://api.example.com/all" }},
		{"report.sources[2].query", func(r *Report) { r.Sources[2].Query = `{"query":{"match_all":{}}}` }},
		{"report.sources[0].timeout", func(r *Report) { r.Sources[0].Timeout = -time.Second }},
		{"report.sources[1].url", func(r *Report) { r.Sources[1].URL = "ftp://x" }},
		{"report.sources[1].method", func(r *Report) { r.Sources[1].Method = "DELETE" }},
		{"report.sources[2].index", func(r *Report) { r.Sources[2].Index = "" }},
		{"report.sources[2].query", func(r *Report) { r.Sources[2].Query = "" }},
		// The probe's case: ids "1001,1002,1003" became three array elements.
		{"report.sources[2].query", func(r *Report) { r.Sources[2].Query = `{"terms":{"user_id":[{subject_id}]}}` }},
		{"report.sources[2].query", func(r *Report) { r.Sources[2].Query = `{"query":{"term":{"{email}":"x"}}}` }},
		{"report.sources[2].query", func(r *Report) { r.Sources[2].Query = `{"size":{subject_id}}` }},
		{"report.sources[1].body", func(r *Report) { r.Sources[1].Method, r.Sources[1].Body = "POST", `{"ids":[{subject_id}]}` }},
		{"report.sources[1].body", func(r *Report) { r.Sources[1].Method, r.Sources[1].Body = "POST", `not json {email}` }},
		{"report.sources[1].url", func(r *Report) { r.Sources[1].URL = "https://{subject_id}.api.example.com/u" }},
		{"report.sources[1].url", func(r *Report) { r.Sources[1].URL = "https://api.example.com/u?{subject_id}" }},
		{"report.sources[1].url", func(r *Report) { r.Sources[1].URL = "https://api.example.com/u#{email}" }},
		{"report.sources[1].url", func(r *Report) { r.Sources[1].URL = "https://api.example.com/{user}" }},
	}
	for _, tc := range cases {
		r := ok()
		r.Sources = append([]Source(nil), r.Sources...)
		tc.mutate(&r)
		err := r.validate()
		require.ErrorIs(t, err, ErrInvalid, tc.setting)
		require.ErrorContains(t, err, tc.setting+" ")
	}
}

func TestParseEncryptionKey(t *testing.T) {
	t.Parallel()
	b, err := ParseEncryptionKey(DevEncryptionKey)
	require.NoError(t, err)
	require.Len(t, b, 32)
	b64, err := ParseEncryptionKey("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
	require.NoError(t, err)
	require.Equal(t, byte(31), b64[31])
	_, err = ParseEncryptionKey("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxw=") // 28 bytes
	require.ErrorContains(t, err, "report.encryption_key")
}
