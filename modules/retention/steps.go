package retention

import (
	"context"
	"time"
)

// RequestStore is what the sweeper needs of the requests module's tables
// (requests.Store).
type RequestStore interface {
	PurgeRemovedReports(ctx context.Context, deletedBefore time.Time, limit int, dryRun bool) ([]string, error)
	DeleteExpiredReports(ctx context.Context, now, cutoff time.Time, limit int, dryRun bool) ([]string, error)
	ScrubFinished(ctx context.Context, now, cutoff time.Time, limit int, dryRun bool) ([]string, error)
	DeleteRecords(ctx context.Context, cutoff time.Time, limit int, dryRun bool) ([]string, error)
}

// RecordDeleter deletes up to limit records older than cutoff of another
// module's table (notify.DeleteRecords, erasure.DeleteRecords).
type RecordDeleter func(ctx context.Context, cutoff time.Time, limit int, dryRun bool) ([]string, error)

// purgeGrace keeps the purge off report files whose deletion another
// sweeper committed a moment ago and is removing right now, so each file
// is removed by the sweeper that deleted its report; a crash's leftovers
// are older.
const purgeGrace = 5 * time.Minute

// Steps are the sweeper's steps in order, each the owning module's store
// API: files a crash left behind first, then reports past reportRetention
// (report.retention), personal data past ScrubAfter, and the PII-free
// records past RecordFor (docs/privacy.md); extra (the dead letters) last.
// notifications and erasures delete the records of the notifier and the
// canceller.
func Steps(cfg Config, reportRetention time.Duration, store RequestStore, notifications, erasures RecordDeleter, extra ...Step) []Step {
	steps := []Step{
		{Kind: KindReportFile, Run: func(ctx context.Context, now time.Time, limit int, dry bool) ([]string, error) {
			return store.PurgeRemovedReports(ctx, now.Add(-purgeGrace), limit, dry)
		}},
		{Kind: KindReport, Run: func(ctx context.Context, now time.Time, limit int, dry bool) ([]string, error) {
			return store.DeleteExpiredReports(ctx, now, now.Add(-reportRetention), limit, dry)
		}},
		{Kind: KindPersonalData, Run: func(ctx context.Context, now time.Time, limit int, dry bool) ([]string, error) {
			return store.ScrubFinished(ctx, now, now.Add(-cfg.ScrubAfter), limit, dry)
		}},
		{Kind: KindRequestRecord, Run: func(ctx context.Context, now time.Time, limit int, dry bool) ([]string, error) {
			return store.DeleteRecords(ctx, now.Add(-cfg.RecordFor), limit, dry)
		}},
		{Kind: KindNotification, Run: func(ctx context.Context, now time.Time, limit int, dry bool) ([]string, error) {
			return notifications(ctx, now.Add(-cfg.RecordFor), limit, dry)
		}},
		{Kind: KindErasureRecord, Run: func(ctx context.Context, now time.Time, limit int, dry bool) ([]string, error) {
			return erasures(ctx, now.Add(-cfg.RecordFor), limit, dry)
		}},
	}
	return append(steps, extra...)
}
