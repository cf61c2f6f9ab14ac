package config_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/gdpr-oss/gdpr/app"
	"github.com/gdpr-oss/gdpr/config"
	"github.com/gdpr-oss/gdpr/modules/console"
	"github.com/gdpr-oss/gdpr/modules/source"
)

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gdpr.yaml")
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	return path
}

// run executes the gdpr command line in-process with exactly environ as its
// environment.
func run(t *testing.T, environ []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	code = app.ExecuteArgs(ctx, args, &out, &errOut, environ)
	return code, out.String(), errOut.String()
}

// printed runs `gdpr config print` and returns the effective configuration.
func printed(t *testing.T, environ []string, args ...string) map[string]any {
	t.Helper()
	code, out, errOut := run(t, environ, append([]string{"config", "print"}, args...)...)
	require.Equal(t, 0, code, "stderr: %s", errOut)
	var cfg map[string]any
	require.NoError(t, yaml.Unmarshal([]byte(out), &cfg))
	return cfg
}

func setting(cfg map[string]any, path string) any {
	var v any = cfg
	for _, part := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[part]
	}
	return v
}

func TestPrecedenceDefaultsFileEnvFlags(t *testing.T) {
	t.Parallel()
	file := writeFile(t, "amqp:\n  prefix: from-file\nworker:\n  concurrency: 3\nlog:\n  level: warn\n")
	cases := []struct {
		name    string
		environ []string
		args    []string
		prefix  string
		level   string
	}{
		{name: "defaults", prefix: "gdpr", level: "info"},
		{name: "file over defaults", args: []string{"--config", file}, prefix: "from-file", level: "warn"},
		{name: "file named by GDPR_CONFIG", environ: []string{"GDPR_CONFIG=" + file}, prefix: "from-file", level: "warn"},
		{name: "env over file", environ: []string{"GDPR_AMQP_PREFIX=from-env"}, args: []string{"--config", file}, prefix: "from-env", level: "warn"},
		{name: "flag over env", environ: []string{"GDPR_AMQP_PREFIX=from-env", "GDPR_LOG_LEVEL=error"}, args: []string{"--config", file, "--amqp-prefix", "from-flag"}, prefix: "from-flag", level: "error"},
		{name: "flag over defaults", args: []string{"--log-level=debug", "--amqp-prefix=f"}, prefix: "f", level: "debug"},
		{name: "unrelated GDPR_ variables are ignored", environ: []string{"GDPR_TEST_SOMETHING=1", "PATH=/bin"}, prefix: "gdpr", level: "info"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := printed(t, tc.environ, tc.args...)
			require.Equal(t, tc.prefix, setting(cfg, "amqp.prefix"))
			require.Equal(t, tc.level, setting(cfg, "log.level"))
			want := 8
			if slicesContain(tc.args, file) || slicesContain(tc.environ, "GDPR_CONFIG="+file) {
				want = 3
			}
			require.Equal(t, want, setting(cfg, "worker.concurrency"))
		})
	}
}

func slicesContain(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// API tokens are configured as SHA-256 digests.
var (
	tokenX = strings.Repeat("1", 64)
	tokenY = strings.Repeat("2", 64)
	tokenZ = strings.Repeat("3", 64)
)

// TestLoadAndSetPrecedence checks the same order on the package API, for a
// setting of every kind (int, duration, bool, list, list of structs).
func TestLoadAndSetPrecedence(t *testing.T) {
	t.Parallel()
	file := writeFile(t, `
worker:
  concurrency: 3
  poll_interval: 3s
amqp:
  confirm_timeout: 7s
serve:
  api_tokens: [aaaa]
canceller:
  participants:
    - {name: billing, kind: amqp}
`)
	cfg, err := config.Load(config.Default(), file, []string{
		"GDPR_WORKER_CONCURRENCY=5",
		"GDPR_POSTGRES_MIGRATE_ON_START=true",
		"GDPR_SERVE_API_TOKENS=" + tokenX + ", " + tokenY + " ," + tokenZ,
	})
	require.NoError(t, err)
	require.Equal(t, 5, cfg.Worker.Concurrency, "env over file")
	require.Equal(t, 3*time.Second, cfg.Worker.PollInterval, "file over default")
	require.Equal(t, 7*time.Second, cfg.AMQP.ConfirmTimeout)
	require.True(t, cfg.Postgres.MigrateOnStart)
	require.Equal(t, []string{tokenX, tokenY, tokenZ}, cfg.Serve.APITokens, "env lists are comma separated, trimmed")
	require.Len(t, cfg.Canceller.Participants, 1)
	require.Equal(t, "billing", cfg.Canceller.Participants[0].Name)
	require.Equal(t, config.Default().Worker.MaxAttempts, cfg.Worker.MaxAttempts, "untouched settings keep their defaults")

	require.NoError(t, cfg.Set("worker.concurrency", "9"), "flags are applied last with Set")
	require.Equal(t, 9, cfg.Worker.Concurrency)
	require.NoError(t, cfg.Validate())

	empty, err := config.Load(config.Default(), writeFile(t, "# nothing set here\n"), nil)
	require.NoError(t, err, "an empty file is valid")
	require.Equal(t, config.Default().Worker, empty.Worker)
}

func TestValidationErrorsNameTheSetting(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		modify func(*config.Config)
		want   string
	}{
		{"worker concurrency", func(c *config.Config) { c.Worker.Concurrency = 0 }, "config: worker.concurrency must be >= 1, got 0"},
		{"log format", func(c *config.Config) { c.Log.Format = "xml" }, `config: log.format must be json or text, got "xml"`},
		{"queue type", func(c *config.Config) { c.AMQP.QueueType = "lazy" }, `config: amqp.queue_type must be quorum or classic, got "lazy"`},
		{"confirm timeout", func(c *config.Config) { c.AMQP.ConfirmTimeout = 0 }, "config: amqp.confirm_timeout must be > 0, got 0s"},
		{"publish channels", func(c *config.Config) { c.AMQP.PublishChannels = 0 }, "config: amqp.publish_channels must be >= 1, got 0"},
		{"delivery limit", func(c *config.Config) { c.AMQP.DeliveryLimit = 0 }, "config: amqp.delivery_limit must be >= 1, got 0"},
		{"retry for", func(c *config.Config) { c.AMQP.RetryFor = 0 }, "config: amqp.retry_for must be > 0, got 0s"},
		{"resend after", func(c *config.Config) { c.Notify.ResendAfter = c.Notify.Timeout }, "config: notify.resend_after must be longer than notify.timeout (30s), got 30s"},
		{"lock ttl", func(c *config.Config) { c.Lock.TTL = 100 * time.Millisecond }, "config: lock.ttl must be >= 1s, got 100ms"},
		{"postgres dsn", func(c *config.Config) { c.Postgres.DSN = "" }, "config: postgres.dsn must be set"},
		{"max conns", func(c *config.Config) { c.Serve.MaxConns = 0 }, "config: serve.max_conns must be >= 16, got 0"},
		{"read timeout", func(c *config.Config) { c.Serve.ReadTimeout = time.Second }, "config: serve.read_timeout must be >= serve.read_header_timeout (5s), got 1s"},
		{"report retention", func(c *config.Config) { c.Report.Retention = time.Hour },
			"config: report.retention must be >= serve.download_ttl (168h0m0s): a report must outlive its link, got 1h0m0s"},
		{"retention scrub after", func(c *config.Config) { c.Retention.ScrubAfter = 0 }, "config: retention.scrub_after must be > 0, got 0s"},
		{"max value bytes", func(c *config.Config) { c.Report.MaxValueBytes = 10 }, "config: report.max_value_bytes must be >= 1024, got 10"},
		{"report encryption key", func(c *config.Config) { c.Report.EncryptionKey = "abcd" }, "config: report.encryption_key must be 32 bytes as 64 hex characters or base64"},
		{"report source name", func(c *config.Config) {
			c.Report.Sources = []source.Config{{Name: "manifest", Kind: "http", URL: "https://api.example.com/u/{subject_id}"}}
		}, `config: report.sources[0].name must be letters, digits, '_', '-' or '.' (not starting with '.', not "manifest"), got "manifest"`},
		{"report source repeats", func(c *config.Config) {
			c.Report.Sources = []source.Config{{Name: "a", Kind: "http", URL: "https://x.example/{email}"}, {Name: "a", Kind: "http", URL: "https://y.example/{email}"}}
		}, `config: report.sources[1].name must be unique, "a" repeats`},
		{"otlp endpoint", func(c *config.Config) { c.Telemetry.OTLP.Endpoint = "collector:4318" }, `config: telemetry.otlp_endpoint must be an http:// or https:// URL with a host, got "collector:4318"`},
		{"console session ttl", func(c *config.Config) { c.Console.SessionTTL = time.Second }, "config: console.session_ttl must be >= 1m, got 1s"},
		{"console operator role", func(c *config.Config) {
			c.Console.Operators = []console.Operator{{Name: "ana", Role: "admin", TokenSHA256: strings.Repeat("a", 64)}}
		}, `config: console.operators[0].role must be viewer or operator, got "admin"`},
		{"console operator digest", func(c *config.Config) {
			c.Console.Operators = []console.Operator{{Name: "ana", Role: "viewer", TokenSHA256: "raw-token"}}
		}, "config: console.operators[0].token_sha256 must be a SHA-256 hex digest (64 hex characters)"},
		{"console near deadline", func(c *config.Config) { c.Console.NearDeadline.LGPD = 0 }, "config: console.near_deadline.lgpd must be > 0, got 0s"},
		{"console client regulation", func(c *config.Config) {
			c.Console.ClientRegulations = []console.ClientRegulation{{Client: "shop", Regulation: "hipaa"}}
		}, `config: console.client_regulations[0].regulation must be gdpr, ccpa or lgpd, got "hipaa"`},
	}
	require.NoError(t, config.Default().Validate(), "the defaults are valid")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := config.Default()
			tc.modify(&cfg)
			err := cfg.Validate()
			require.ErrorIs(t, err, config.ErrInvalid)
			require.EqualError(t, err, tc.want)
		})
	}

	t.Run("every bad setting is reported", func(t *testing.T) {
		cfg := config.Default()
		cfg.Worker.Concurrency = 0
		cfg.AMQP.Prefetch = 0
		err := cfg.Validate()
		require.ErrorContains(t, err, "worker.concurrency")
		require.ErrorContains(t, err, "amqp.prefetch")
	})
}

func TestSetRejectsBadValuesAndUnknownSettings(t *testing.T) {
	t.Parallel()
	cases := []struct {
		path, value, want string
	}{
		{"worker.concurrency", "many", `config: worker.concurrency must be an integer, got "many"`},
		{"amqp.confirm_timeout", "5", `config: amqp.confirm_timeout must be a duration like 30s, got "5"`},
		{"postgres.migrate_on_start", "maybe", `config: postgres.migrate_on_start must be true or false, got "maybe"`},
		{"worker.concurency", "1", "config: unknown setting worker.concurency"},
		{"worker.concurrency.x", "1", "config: unknown setting worker.concurrency.x"},
	}
	for _, tc := range cases {
		cfg := config.Default()
		err := cfg.Set(tc.path, tc.value)
		require.ErrorIs(t, err, config.ErrInvalid, tc.path)
		require.EqualError(t, err, tc.want)
	}

	_, err := config.Load(config.Default(), "", []string{"GDPR_WORKER_CONCURRENCY=lots"})
	require.ErrorContains(t, err, "GDPR_WORKER_CONCURRENCY", "an env error names the variable")
	require.ErrorContains(t, err, "worker.concurrency")
}

func TestUnknownYAMLKeyIsRejected(t *testing.T) {
	t.Parallel()
	for _, content := range []string{
		"worker:\n  concurency: 4\n",
		"wokrer:\n  concurrency: 4\n",
	} {
		_, err := config.Load(config.Default(), writeFile(t, content), nil)
		require.ErrorIs(t, err, config.ErrInvalid)
		require.ErrorContains(t, err, "not found", content)
	}
	_, err := config.Load(config.Default(), filepath.Join(t.TempDir(), "missing.yaml"), nil)
	require.ErrorIs(t, err, config.ErrInvalid, "a missing file is a configuration error")
}

func TestCommandLineConfigErrorsExitTwo(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		environ []string
		args    []string
		want    string
	}{
		{"flag", nil, []string{"worker", "--concurrency=0"}, "config: worker.concurrency must be >= 1, got 0"},
		{"env", []string{"GDPR_WORKER_CONCURRENCY=0"}, []string{"config", "print"}, "config: worker.concurrency must be >= 1, got 0"},
		{"unparsable flag", nil, []string{"worker", "--concurrency=x"}, `config: worker.concurrency must be an integer, got "x"`},
		{"unknown yaml key", nil, []string{"config", "print", "--config", writeFile(t, "amqp:\n  prefx: x\n")}, "field prefx not found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, _, errOut := run(t, tc.environ, tc.args...)
			require.Equal(t, 2, code, "stderr: %s", errOut)
			require.Contains(t, errOut, tc.want)
		})
	}
}

func TestConfigPrintMasksSecrets(t *testing.T) {
	t.Parallel()
	file := writeFile(t, `
report:
  sources:
    - name: crm
      kind: postgres
      dsn: postgres://crm:crm-pw@db.internal/crm?sslmode=disable
      query: SELECT 1 WHERE @subject_id <> ''
    - name: api
      kind: http
      url: https://api.internal/users/{subject_id}?api_key=key-in-url
      auth_header: Bearer source-token
canceller:
  participants:
    - name: zendesk
      kind: http
      url: https://zendesk.example/erase/{subject_id}
      auth_header: Bearer participant-token
`)
	environ := []string{
		"GDPR_AMQP_URL=amqp://gdpr:amqp-pw@rabbit.internal:5672/vh",
		"GDPR_POSTGRES_DSN=postgres://gdpr:pg-pw@pg.internal:5432/gdpr?sslmode=require&password=pg-pw-2",
		"GDPR_REDIS_PASSWORD=redis-pw",
		"GDPR_NOTIFY_PASSWORD=smtp-pw",
		"GDPR_SERVE_API_TOKENS=" + tokenX + "," + tokenY,
		`GDPR_SERVE_API_CLIENTS=[{"name":"crm","token_sha256":"` + tokenZ + `"}]`,
		"GDPR_SERVE_DOWNLOAD_KEY=download-key-0123456789",
		"GDPR_REPORT_ENCRYPTION_KEY=" + strings.Repeat("ab", 32),
	}
	code, out, errOut := run(t, environ, "config", "print", "--config", file)
	require.Equal(t, 0, code, "stderr: %s", errOut)
	for _, secret := range []string{
		"amqp-pw", "pg-pw", "redis-pw", "smtp-pw", tokenX, tokenY, tokenZ, "download-key",
		strings.Repeat("ab", 32), "crm-pw", "source-token", "participant-token", "key-in-url",
	} {
		require.NotContains(t, out, secret)
	}
	var cfg map[string]any
	require.NoError(t, yaml.Unmarshal([]byte(out), &cfg))
	// What helps an operator stays readable.
	require.Equal(t, "amqp://gdpr:****@rabbit.internal:5672/vh", setting(cfg, "amqp.url"))
	require.Contains(t, setting(cfg, "postgres.dsn"), "gdpr:****@pg.internal:5432/gdpr")
	// Every query value of a secret URL is masked; the names stay.
	require.Contains(t, setting(cfg, "postgres.dsn"), "?sslmode=****&password=****")
	require.Equal(t, "****", setting(cfg, "redis.password"))
	require.Equal(t, []any{"****", "****"}, setting(cfg, "serve.api_tokens"))
	require.Equal(t, []any{map[string]any{"name": "crm", "token_sha256": "****"}}, setting(cfg, "serve.api_clients"))
	require.Contains(t, out, "crm:****@db.internal/crm")
	require.Contains(t, out, "https://zendesk.example/erase")
}
