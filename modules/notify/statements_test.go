package notify_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/gdpr-oss/gdpr/modules/notify"
	"github.com/gdpr-oss/gdpr/modules/outbox"
	"github.com/gdpr-oss/gdpr/modules/requests"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// statementCounter counts what pgx sends to PostgreSQL, BEGIN and COMMIT
// included (database/sql's transactions are statements on the wire too).
type statementCounter struct{ n atomic.Int64 }

func (c *statementCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	return ctx
}

func (c *statementCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// countingDB opens dsn with every statement counted.
func countingDB(t *testing.T, dsn string) (*gorm.DB, *statementCounter) {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	require.NoError(t, err)
	counter := &statementCounter{}
	cfg.Tracer = counter
	sqlDB := stdlib.OpenDB(*cfg)
	t.Cleanup(func() { _ = sqlDB.Close() })
	gdb, err := gorm.Open(postgres.New(postgres.Config{Conn: sqlDB}), &gorm.Config{Logger: logger.Discard, SkipDefaultTransaction: true})
	require.NoError(t, err)
	return gdb, counter
}

// TestNotifierStatementsPerEmail counts the statements (BEGIN and COMMIT
// included) the notifier sends to PostgreSQL for one report email, and for
// its redelivery after the email was recorded. A count is no speed: it only
// rises when a statement is added to the hot path, and this test says so.
func TestNotifierStatementsPerEmail(t *testing.T) {
	t.Parallel()
	setup, dsn := testkit.Postgres(t)
	gdb, counter := countingDB(t, dsn)
	mp := testkit.StartMailpit(t)
	n, err := notify.New(gdb, requests.NewStore(gdb, nil), outbox.NewStore(gdb), notify.NewSMTP(smtpConfig(mp)), link,
		notify.Options{ResendAfter: 3 * smtpConfig(mp).Timeout, MessageIDDomain: "test.invalid"}, testkit.Logger(t), prometheus.NewRegistry())
	require.NoError(t, err)
	e := &env{db: setup, mail: mp, n: n}
	id := e.request(t, "access", "stmt@example.com")
	m := reportReady(t, id)

	before := counter.n.Load()
	require.NoError(t, n.Handle(t.Context(), m))
	first := counter.n.Load() - before
	require.NoError(t, n.Handle(t.Context(), m))
	again := counter.n.Load() - before - first
	t.Logf("statements: %d for a report email, %d for its redelivery", first, again)
	require.LessOrEqual(t, first, int64(7), "statements for one report email")
	require.Equal(t, 1, e.sentEvents(t, id))
	msgs, err := mp.Messages(t.Context())
	require.NoError(t, err)
	require.Len(t, msgs, 1, "the redelivery sent nothing")
}
