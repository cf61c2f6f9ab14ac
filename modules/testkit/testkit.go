// Package testkit gives tests isolated resources on the real local services:
// a fresh PostgreSQL database, unique RabbitMQ exchange and queue names, a
// unique Redis key prefix. Everything is removed when the test ends, so tests
// run in parallel and twice in a row.
package testkit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/db"
)

// Env names that point tests at other servers than the local defaults.
const (
	EnvPostgresURL = "GDPR_TEST_POSTGRES_URL" // server URL without database, e.g. postgres://root@127.0.0.1:5432
	EnvAMQPURL     = "GDPR_TEST_AMQP_URL"
	EnvRedisAddr   = "GDPR_TEST_REDIS_ADDR"
	// EnvBinary names a gdpr binary built from this tree; `make test` builds
	// it once so that parallel test packages do not each compile their own.
	EnvBinary = "GDPR_TEST_BINARY"
)

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// ID returns a short random identifier usable in database, queue and key names.
func ID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Logger writes a test's logs to its output.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// PostgresDSN creates an empty database for t (dropped at cleanup) and returns its DSN.
func PostgresDSN(t testing.TB) string {
	t.Helper()
	server := env(EnvPostgresURL, "postgres://root@127.0.0.1:5432")
	name := "gdpr_test_" + ID()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, server+"/postgres?sslmode=disable")
	require.NoError(t, err, "connecting to PostgreSQL (is it running? `make services`)")
	_, err = conn.Exec(ctx, "CREATE DATABASE "+name)
	_ = conn.Close(ctx)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, server+"/postgres?sslmode=disable")
		if err != nil {
			t.Logf("dropping %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("dropping %s: %v", name, err)
		}
	})
	return server + "/" + name + "?sslmode=disable"
}

// Postgres creates a migrated database for t and returns a gorm handle and its DSN.
func Postgres(t testing.TB) (*gorm.DB, string) {
	t.Helper()
	dsn := PostgresDSN(t)
	m, err := db.NewMigrator(dsn)
	require.NoError(t, err)
	require.NoError(t, m.Up(context.Background(), slog.New(slog.DiscardHandler)))
	require.NoError(t, m.Close())
	gdb, err := db.Open(context.Background(), db.Config{DSN: dsn, MaxOpenConns: 20})
	require.NoError(t, err)
	t.Cleanup(func() {
		if sqlDB, err := gdb.DB(); err == nil {
			_ = sqlDB.Close()
		}
	})
	return gdb, dsn
}

// AMQP returns AMQP settings with a prefix unique to t.
func AMQP(t testing.TB) bus.Config {
	c := bus.DefaultConfig()
	c.URL = env(EnvAMQPURL, c.URL)
	c.Prefix = "t." + ID()
	return c
}

// Bus connects with cfg and topology and deletes the topology's queues and
// exchanges when t ends.
func Bus(t testing.TB, cfg bus.Config, topology bus.Topology) *bus.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := bus.Dial(ctx, cfg, "gdpr-test-"+cfg.Prefix, topology, Logger(t))
	require.NoError(t, err, "connecting to RabbitMQ (is it running? `make services`)")
	t.Cleanup(func() {
		DeleteTopology(t, cfg, topology)
		_ = conn.Close()
	})
	return conn
}

// DeleteTopology removes the exchanges and queues a test declared under cfg.Prefix.
func DeleteTopology(t testing.TB, cfg bus.Config, topology bus.Topology) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := bus.Dial(ctx, cfg, "gdpr-test-cleanup", bus.Topology{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Logf("cleaning up amqp %s: %v", cfg.Prefix, err)
		return
	}
	defer conn.Close()
	ch, err := conn.Channel(ctx)
	if err != nil {
		return
	}
	defer ch.Close()
	for _, q := range topology.Queues {
		_, _ = ch.QueueDelete(conn.QueueName(q.Name), false, false, false)
	}
	_, _ = ch.QueueDelete(conn.DeadLetterQueue(), false, false, false)
	_ = ch.ExchangeDelete(conn.Exchange(), false, false)
	_ = ch.ExchangeDelete(conn.DeadLetterExchange(), false, false)
}

// Redis returns a client and a key prefix unique to t; keys under it are deleted at cleanup.
func Redis(t testing.TB) (*redis.Client, string) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: env(EnvRedisAddr, "127.0.0.1:6379")})
	require.NoError(t, rdb.Ping(context.Background()).Err(), "connecting to Redis (is it running? `make services`)")
	prefix := "t:" + ID() + ":"
	t.Cleanup(func() {
		ctx := context.Background()
		iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
		_ = rdb.Close()
	})
	return rdb, prefix
}

// Build returns the path of a gdpr binary built from this tree: the one
// named by GDPR_TEST_BINARY, else one compiled into a temporary directory.
func Build(t testing.TB) string {
	t.Helper()
	if bin := os.Getenv(EnvBinary); bin != "" {
		_, err := os.Stat(bin)
		require.NoError(t, err, "%s names a missing binary", EnvBinary)
		return bin
	}
	dir := t.TempDir()
	out := dir + "/gdpr"
	root := moduleRoot(t)
	cmd := execCommand(root, "go", "build", "-o", out, ".")
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, "building gdpr: %s", b)
	return out
}

func moduleRoot(t testing.TB) string {
	dir, err := os.Getwd()
	require.NoError(t, err)
	for {
		if _, err := os.Stat(dir + "/go.mod"); err == nil {
			return dir
		}
		parent := dir[:strings.LastIndex(dir, "/")]
		if parent == "" || parent == dir {
			t.Fatalf("no go.mod above %s", dir)
		}
		dir = parent
	}
}

// Eventually waits until cond holds or timeout passes, polling every 20ms.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %s", timeout, fmt.Sprintf(format, args...))
		}
		time.Sleep(20 * time.Millisecond) //nolint:forbidigo // the polling step of the condition wait itself
	}
}
