// Package configtest builds whole gdpr configurations for tests that run
// roles or the gdpr binary. It lives beside config, not in modules/testkit,
// because modules never import config: a module's own tests use testkit's
// pieces (Postgres, AMQP, Redis) and the module's own Config.
package configtest

import (
	"os"
	"strings"
	"testing"

	"github.com/gdpr-oss/gdpr/config"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// Config returns a complete configuration for t: a fresh migrated database,
// unique AMQP and Redis prefixes, admin and API servers on free ports.
func Config(t testing.TB) config.Config {
	t.Helper()
	_, dsn := testkit.Postgres(t)
	_, redisPrefix := testkit.Redis(t)
	cfg := config.Default()
	cfg.Postgres.DSN = dsn
	cfg.AMQP = testkit.AMQP(t)
	if addr := os.Getenv(testkit.EnvRedisAddr); addr != "" {
		cfg.Redis.Addr = addr
	}
	cfg.Redis.Prefix = redisPrefix
	cfg.Serve.Addr = "127.0.0.1:0"
	cfg.Serve.AdminAddr = "127.0.0.1:0"
	cfg.Worker.AdminAddr = "127.0.0.1:0"
	cfg.Scheduler.AdminAddr = "127.0.0.1:0"
	cfg.Canceller.AdminAddr = "127.0.0.1:0"
	cfg.Report.StorageDir = t.TempDir()
	return cfg
}

// Env renders cfg's scalar settings as GDPR_* variables for a child process.
func Env(cfg config.Config) []string {
	out := os.Environ()
	set := func(path, value string) {
		out = append(out, config.EnvPrefix+strings.ToUpper(strings.ReplaceAll(path, ".", "_"))+"="+value)
	}
	set("postgres.dsn", cfg.Postgres.DSN)
	set("amqp.url", cfg.AMQP.URL)
	set("amqp.prefix", cfg.AMQP.Prefix)
	set("redis.addr", cfg.Redis.Addr)
	set("redis.prefix", cfg.Redis.Prefix)
	set("report.storage_dir", cfg.Report.StorageDir)
	return out
}
