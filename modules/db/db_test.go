package db_test

import (
	"bytes"
	"context"
	"io/fs"
	"log/slog"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/app"
	"github.com/gdpr-oss/gdpr/migrations"
	"github.com/gdpr-oss/gdpr/modules/db"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// migrationFiles lists the embedded migration files, in order.
func migrationFiles(t *testing.T) []string {
	t.Helper()
	files, err := fs.Glob(migrations.FS, "*.sql")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	sort.Strings(files)
	return files
}

// userTables lists the tables of the public schema, goose's own excepted.
func userTables(t *testing.T, dsn string) []string {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	rows, err := conn.Query(t.Context(), `SELECT table_name FROM information_schema.tables
		WHERE table_schema = 'public' AND table_name <> 'goose_db_version' ORDER BY 1`)
	require.NoError(t, err)
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return names
}

func status(t *testing.T, m *db.Migrator) (names []string, applied int) {
	t.Helper()
	list, err := m.Status(t.Context())
	require.NoError(t, err)
	for _, s := range list {
		names = append(names, s.Name)
		if s.Applied {
			applied++
		}
	}
	return names, applied
}

func TestMigrationsUpIdempotentDownUp(t *testing.T) {
	t.Parallel()
	dsn := testkit.PostgresDSN(t)
	files := migrationFiles(t)
	logger := slog.New(slog.DiscardHandler)
	m, err := db.NewMigrator(dsn)
	require.NoError(t, err)
	defer m.Close()

	names, applied := status(t, m)
	require.Equal(t, files, names, "status lists every migration file")
	require.Zero(t, applied)
	require.Empty(t, userTables(t, dsn), "the database starts empty")

	require.NoError(t, m.Up(t.Context(), logger))
	_, applied = status(t, m)
	require.Equal(t, len(files), applied)
	tables := userTables(t, dsn)
	for _, want := range []string{"inbox", "requests", "scheduled_messages"} {
		require.Contains(t, tables, want)
	}

	require.NoError(t, m.Up(t.Context(), logger), "a second up is a no-op")
	_, applied = status(t, m)
	require.Equal(t, len(files), applied)
	require.Equal(t, tables, userTables(t, dsn))

	for range files {
		require.NoError(t, m.Down(t.Context(), logger))
	}
	_, applied = status(t, m)
	require.Zero(t, applied)
	require.Empty(t, userTables(t, dsn), "every down section removes what its up created")
	require.ErrorIs(t, m.Down(t.Context(), logger), db.ErrNoMigration)

	require.NoError(t, m.Up(t.Context(), logger), "up again after down all the way")
	_, applied = status(t, m)
	require.Equal(t, len(files), applied)
	require.Equal(t, tables, userTables(t, dsn))
}

func TestConcurrentMigrationsApplyOnce(t *testing.T) {
	t.Parallel()
	dsn := testkit.PostgresDSN(t)
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := db.NewMigrator(dsn)
			if err != nil {
				errs[i] = err
				return
			}
			defer m.Close()
			errs[i] = m.Up(t.Context(), slog.New(slog.DiscardHandler))
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err, "roles started together with --migrate all succeed")
	}
	m, err := db.NewMigrator(dsn)
	require.NoError(t, err)
	defer m.Close()
	_, applied := status(t, m)
	require.Equal(t, len(migrationFiles(t)), applied)
}

func TestEnsureDatabaseCreatesOnce(t *testing.T) {
	t.Parallel()
	u, err := url.Parse(testkit.PostgresDSN(t))
	require.NoError(t, err)
	name := "gdpr_test_ensure_" + testkit.ID()
	u.Path = "/" + name
	dsn := u.String()
	t.Cleanup(func() {
		admin := *u
		admin.Path = "/postgres"
		conn, err := pgx.Connect(context.Background(), admin.String())
		if err != nil {
			return
		}
		defer conn.Close(context.Background())
		_, _ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})

	require.NoError(t, db.EnsureDatabase(t.Context(), dsn))
	require.NoError(t, db.EnsureDatabase(t.Context(), dsn), "an existing database is fine")
	gdb, err := db.Open(t.Context(), db.Config{DSN: dsn, MaxOpenConns: 1})
	require.NoError(t, err)
	require.NoError(t, db.Checker{DB: gdb}.Check(t.Context()))
	sqlDB, _ := gdb.DB()
	require.NoError(t, sqlDB.Close())
}

func TestMigrateCommands(t *testing.T) {
	t.Parallel()
	dsn := testkit.PostgresDSN(t)
	environ := []string{"GDPR_POSTGRES_DSN=" + dsn, "GDPR_LOG_FORMAT=text"}
	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		var out, errOut bytes.Buffer
		code := app.ExecuteArgs(ctx, args, &out, &errOut, environ)
		require.Equal(t, 0, code, "gdpr %s: %s", strings.Join(args, " "), errOut.String())
		return out.String()
	}
	files := migrationFiles(t)

	out := run("migrate", "status")
	for _, f := range files {
		require.Contains(t, out, f)
	}
	require.Equal(t, len(files), strings.Count(out, "pending"))

	run("migrate", "up")
	out = run("migrate", "status")
	for _, f := range files {
		require.Contains(t, out, f)
	}
	require.Zero(t, strings.Count(out, "pending"))

	run("migrate", "down")
	out = run("migrate", "status")
	require.Equal(t, 1, strings.Count(out, "pending"), "down rolls back one migration")
	require.Regexp(t, files[len(files)-1]+`\s+pending`, out, "the most recent one")
}
