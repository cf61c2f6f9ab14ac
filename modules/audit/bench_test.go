package audit_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/modules/audit"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// BenchmarkAuditRecord measures audit rows written per second (PII
// scrubbing, JSON details, idempotent insert) by the recorder's handlers at
// the audit consumer's default concurrency, which share commits, and by 4
// writers of one row per commit, next to the ceiling of the same database:
// bare single-row autocommit inserts of one id by 4 writers, in the same run.
func BenchmarkAuditRecord(b *testing.B) {
	gdb, _ := testkit.Postgres(b)
	require.NoError(b, gdb.Exec(`CREATE TABLE bench_ceiling (id text PRIMARY KEY)`).Error)
	store := audit.NewStore(gdb)
	recorder := audit.NewRecorder(store, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	const perRun = 4000
	writers := 4
	m, err := message.New(event.TypeRequestSubmitted, event.RequestSubmitted{RequestID: uuid.NewString(), Type: "access",
		Subject: event.Subject{ID: "s1", Email: "bench@example.org"}, SubmittedAt: time.Now()}, nil)
	require.NoError(b, err)
	run := func(write func(ctx context.Context, i int) error) float64 {
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		begin := time.Now()
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range perRun / writers {
					if err := write(context.Background(), w*perRun+i); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		require.NoError(b, <-errs)
		return float64(perRun/writers*writers) / time.Since(begin).Seconds()
	}
	ceilingOf := func(db *gorm.DB, round int) func(context.Context, int) error {
		return func(ctx context.Context, i int) error {
			return db.WithContext(ctx).Exec(`INSERT INTO bench_ceiling (id) VALUES (?)`, fmt.Sprintf("%d-%d", round, i)).Error
		}
	}
	b.ResetTimer()
	for n := 0; b.Loop(); n++ {
		ceiling := run(ceilingOf(gdb, n))
		single := run(func(ctx context.Context, i int) error {
			mm := m
			mm.ID = uuid.NewString()
			_, err := store.Record(ctx, audit.FromMessage(mm, time.Now()))
			return err
		})
		writers = audit.DefaultConfig().Concurrency
		rate := run(func(ctx context.Context, i int) error {
			mm := m
			mm.ID = uuid.NewString()
			return recorder.Handle(ctx, mm)
		})
		writers = 4
		b.ReportMetric(rate, "audit_rows/s")
		b.ReportMetric(single, "single_row_commits/s")
		b.ReportMetric(ceiling, "ceiling_inserts/s")
		b.ReportMetric(rate/ceiling, "ratio")
		b.Logf("audit rows %.0f/s by %d handlers sharing commits, %.0f/s one row per commit (4 writers), vs bare single-row inserts %.0f/s (4 writers): ratio %.2f",
			rate, audit.DefaultConfig().Concurrency, single, ceiling, rate/ceiling)
	}
}
