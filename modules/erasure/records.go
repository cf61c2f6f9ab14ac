package erasure

import (
	"context"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// DeleteRecords deletes the canceller's record (the erasures row and each
// participant's confirmation) of up to limit erasures finished before
// cutoff (retention.record_for), and returns their request ids. A finished
// erasure holds no personal data (its subject was blanked when it
// finished); an erasure still open keeps its subject, which it needs to
// re-send commands, until it finishes.
func DeleteRecords(ctx context.Context, db *gorm.DB, cutoff time.Time, limit int, dryRun bool) ([]string, error) {
	const due = `SELECT request_id FROM erasures WHERE state = ? AND finished_at < ?
		ORDER BY finished_at LIMIT ?`
	var ids []string
	var err error
	if dryRun {
		err = db.WithContext(ctx).Raw(due, ErasureFinished, cutoff, limit).Scan(&ids).Error
	} else {
		err = db.WithContext(ctx).Raw(`WITH due AS (`+due+` FOR UPDATE SKIP LOCKED)
			DELETE FROM erasures e USING due WHERE e.request_id = due.request_id RETURNING e.request_id::text`, ErasureFinished, cutoff, limit).Scan(&ids).Error
	}
	if err != nil {
		return nil, fmt.Errorf("deleting erasure records: %w", err)
	}
	return ids, nil
}
