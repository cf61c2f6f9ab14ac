package testkit

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/require"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// Statements counts what pgx sends to PostgreSQL, BEGIN and COMMIT included
// (database/sql's transactions are statements on the wire too). Tests that
// keep a hot path's statement count from rising read it.
type Statements struct{ total, begins, commits atomic.Int64 }

// TraceQueryStart counts one statement (pgx.QueryTracer).
func (s *Statements) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	s.total.Add(1)
	switch sql := strings.ToLower(strings.TrimSpace(d.SQL)); {
	case strings.HasPrefix(sql, "begin"):
		s.begins.Add(1)
	case sql == "commit":
		s.commits.Add(1)
	}
	return ctx
}

// TraceQueryEnd does nothing (pgx.QueryTracer).
func (*Statements) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// Total is the number of statements sent so far.
func (s *Statements) Total() int64 { return s.total.Load() }

// Begins is the number of transactions begun so far.
func (s *Statements) Begins() int64 { return s.begins.Load() }

// Commits is the number of COMMITs sent so far.
func (s *Statements) Commits() int64 { return s.commits.Load() }

// CountingGorm opens dsn as the roles do (gorm without its default
// transaction) with every statement counted; it closes with the test.
func CountingGorm(t testing.TB, dsn string) (*gorm.DB, *Statements) {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	require.NoError(t, err)
	counter := &Statements{}
	cfg.Tracer = counter
	sqlDB := stdlib.OpenDB(*cfg)
	t.Cleanup(func() { _ = sqlDB.Close() })
	gdb, err := gorm.Open(postgres.New(postgres.Config{Conn: sqlDB}), &gorm.Config{Logger: logger.Discard, SkipDefaultTransaction: true})
	require.NoError(t, err)
	return gdb, counter
}
