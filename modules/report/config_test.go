package report_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/report"
	"github.com/gdpr-oss/gdpr/modules/source"
)

func TestReportValidateNamesTheSetting(t *testing.T) {
	t.Parallel()
	ok := func() report.Config {
		r := report.DefaultConfig()
		r.Sources = []source.Config{
			{Name: "crm", Kind: "postgres", DSN: "postgres://x", Query: "SELECT * FROM c WHERE id = @subject_id"},
			{Name: "api", Kind: "http", URL: "https://api.example.com/u/{subject_id}?e={email}"},
			{Name: "logs", Kind: "elasticsearch", URL: "http://es:9200", Index: "logs-*", Query: `{"query":{"term":{"email":"{email}"}}}`},
		}
		return r
	}
	require.NoError(t, ok().Validate())
	cases := []struct {
		setting string
		mutate  func(*report.Config)
	}{
		{"report.storage_dir", func(r *report.Config) { r.StorageDir = "" }},
		{"report.encryption_key", func(r *report.Config) { r.EncryptionKey = "abcd" }},
		{"report.source_timeout", func(r *report.Config) { r.SourceTimeout = 0 }},
		{"report.source_concurrency", func(r *report.Config) { r.SourceConcurrency = 0 }},
		{"report.compress_concurrency", func(r *report.Config) { r.CompressConcurrency = -1 }},
		{"report.compress_concurrency", func(r *report.Config) { r.CompressConcurrency = 3 }},
		{"report.sources[0].name", func(r *report.Config) { r.Sources[0].Name = "" }},
		{"report.sources[0].name", func(r *report.Config) { r.Sources[0].Name = "../x" }},
		{"report.sources[1].name", func(r *report.Config) { r.Sources[1].Name = "crm" }},
		{"report.sources[2].name", func(r *report.Config) { r.Sources[2].Name = "manifest" }},
		{"report.sources[0].kind", func(r *report.Config) { r.Sources[0].Kind = "oracle" }},
		{"report.sources[0].dsn", func(r *report.Config) { r.Sources[0].DSN = "" }},
		{"report.sources[0].query", func(r *report.Config) { r.Sources[0].Query = "" }},
		{"report.sources[0].query", func(r *report.Config) { r.Sources[0].Query = "SELECT * FROM customers" }},
		{"report.sources[1].url", func(r *report.Config) { r.Sources[1].URL = "https://api.example.com/all" }},
		{"report.sources[2].query", func(r *report.Config) { r.Sources[2].Query = `{"query":{"match_all":{}}}` }},
		{"report.sources[0].timeout", func(r *report.Config) { r.Sources[0].Timeout = -time.Second }},
		{"report.sources[1].url", func(r *report.Config) { r.Sources[1].URL = "ftp://x" }},
		{"report.sources[1].method", func(r *report.Config) { r.Sources[1].Method = "DELETE" }},
		{"report.sources[2].index", func(r *report.Config) { r.Sources[2].Index = "" }},
		{"report.sources[2].query", func(r *report.Config) { r.Sources[2].Query = "" }},
		// The probe's case: ids "1001,1002,1003" became three array elements.
		{"report.sources[2].query", func(r *report.Config) { r.Sources[2].Query = `{"terms":{"user_id":[{subject_id}]}}` }},
		{"report.sources[2].query", func(r *report.Config) { r.Sources[2].Query = `{"query":{"term":{"{email}":"x"}}}` }},
		{"report.sources[2].query", func(r *report.Config) { r.Sources[2].Query = `{"size":{subject_id}}` }},
		{"report.sources[1].body", func(r *report.Config) { r.Sources[1].Method, r.Sources[1].Body = "POST", `{"ids":[{subject_id}]}` }},
		{"report.sources[1].body", func(r *report.Config) { r.Sources[1].Method, r.Sources[1].Body = "POST", `not json {email}` }},
		{"report.sources[1].url", func(r *report.Config) { r.Sources[1].URL = "https://{subject_id}.api.example.com/u" }},
		{"report.sources[1].url", func(r *report.Config) { r.Sources[1].URL = "https://api.example.com/u?{subject_id}" }},
		{"report.sources[1].url", func(r *report.Config) { r.Sources[1].URL = "https://api.example.com/u#{email}" }},
		{"report.sources[1].url", func(r *report.Config) { r.Sources[1].URL = "https://api.example.com/{user}" }},
	}
	for _, tc := range cases {
		r := ok()
		r.Sources = append([]source.Config(nil), r.Sources...)
		tc.mutate(&r)
		err := r.Validate()
		require.Error(t, err, tc.setting)
		require.ErrorContains(t, err, tc.setting+" ")
	}
}

func TestParseEncryptionKey(t *testing.T) {
	t.Parallel()
	b, err := report.ParseEncryptionKey(report.DevEncryptionKey)
	require.NoError(t, err)
	require.Len(t, b, 32)
	b64, err := report.ParseEncryptionKey("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
	require.NoError(t, err)
	require.Equal(t, byte(31), b64[31])
	_, err = report.ParseEncryptionKey("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxw=") // 28 bytes
	require.ErrorIs(t, err, report.ErrBadKey)
	require.ErrorContains(t, err, "report.encryption_key")
}
