package requests

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/requests/record"
)

// Why a report was deleted (reports.deleted_reason); the download answers
// 410 Gone saying which.
const (
	DeletedSubjectErasure = "subject_erasure"
	DeletedRetention      = "retention"
)

// ReportFiles removes stored report files (the report library's storage).
type ReportFiles interface {
	// Delete removes the report file; removing a missing one is not an error.
	Delete(ctx context.Context, reportID string) error
}

// Store is the requests module's API over its own tables (requests,
// request_attempts, reports) for other modules (store.go: statuses, gauges,
// the in-sync check, the notifier's address in its own transaction) and
// for gdpr's data lifecycle (docs/privacy.md): the erasure of a subject's
// earlier requests, and the retention sweeper's steps. Every step changes at most limit rows
// in one transaction that locks them with SKIP LOCKED, so several workers
// sweeping at once each take different rows; a report file is removed only
// after the transaction recording its deletion committed, and
// PurgeRemovedReports finishes what a crash in between left undone.
type Store struct {
	db    *gorm.DB
	files ReportFiles
}

// NewStore returns the store; files removes report files, and may be nil
// for a store that only reads.
func NewStore(db *gorm.DB, files ReportFiles) *Store { return &Store{db: db, files: files} }

// DeletedReport says whether, when and why the report of a request was
// deleted (record.DeletedReport).
type DeletedReport = record.DeletedReport

// ReportSource is one source's part of a report (record.ReportSource).
type ReportSource = record.ReportSource

// ReportOf returns the report of requestID and whether it was deleted;
// found is false when the request has no report.
func (s *Store) ReportOf(ctx context.Context, requestID string) (r DeletedReport, found bool, err error) {
	var row struct {
		ID            string
		DeletedAt     *time.Time
		DeletedReason string
		Contents      []byte
	}
	res := s.db.WithContext(ctx).Raw(`SELECT id, deleted_at, deleted_reason, contents FROM reports WHERE request_id = ?`, requestID).Scan(&row)
	if res.Error != nil {
		return DeletedReport{}, false, fmt.Errorf("looking up report of %s: %w", requestID, res.Error)
	}
	if res.RowsAffected == 0 {
		return DeletedReport{}, false, nil
	}
	r = DeletedReport{ReportID: row.ID, Reason: row.DeletedReason}
	if err := json.Unmarshal(row.Contents, &r.Contents); err != nil {
		return DeletedReport{}, false, fmt.Errorf("reading the contents of report %s: %w", row.ID, err)
	}
	if row.DeletedAt != nil {
		r.Deleted, r.DeletedAt = true, row.DeletedAt.UTC()
	}
	return r, true, nil
}

// finishedSQL selects the requests that reached an end: the requests
// manager's (completed, failed) and an operator's (cancelled, denied).
// Retention and the subject's erasure treat all four alike; leaving the
// operator's ends out kept a denied request's phone number and
// identifiers, and both kinds' rows, for ever.
const finishedSQL = `state IN ('completed', 'failed', 'cancelled', 'denied')`

// finishedAtSQL is when a finished request ended: completed_at, or for an
// operator's end closed_at, else its last change.
const finishedAtSQL = `COALESCE(completed_at, closed_at, updated_at)`

// scrubReasonsSQL blanks an operator's free-text reasons (cancel, deny,
// extend): they are written about the subject and may name them, so they
// go with the subject's identifiers; the reason codes stay.
const scrubReasonsSQL = `closed_reason = '', extension_reason = ''`

// scrubSubject removes the subject of erasure erasureID from every other
// finished request of theirs (same subject id, or same address ignoring
// case), inside tx, and marks their reports deleted. It returns the report
// ids whose files the caller removes once tx committed. Requests not
// finished yet (an access submitted after the erasure, still running) keep
// their data until they finish and the retention sweeper's scrub_after.
func scrubSubject(tx *gorm.DB, erasureID string, s event.Subject) ([]string, error) {
	if s.Empty() {
		return nil, nil
	}
	var ids []string
	if err := tx.Raw(`UPDATE requests SET subject_id = '', subject_email = '', subject_phone = '', subject_identifiers = '{}',
			`+scrubReasonsSQL+`, pii_scrubbed_at = now(), erased_by = ?, updated_at = now()
		WHERE id <> ? AND `+finishedSQL+`
		  AND `+sameSubject+` RETURNING id`, append([]any{erasureID, erasureID}, sameSubjectArgs(s)...)...).Scan(&ids).Error; err != nil {
		return nil, fmt.Errorf("scrubbing earlier requests of erasure %s: %w", erasureID, err)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	var reports []string
	if err := tx.Raw(`UPDATE reports SET deleted_at = now(), deleted_reason = ?
		WHERE request_id IN ? AND deleted_at IS NULL RETURNING id`, DeletedSubjectErasure, ids).Scan(&reports).Error; err != nil {
		return nil, fmt.Errorf("deleting reports of erasure %s's subject: %w", erasureID, err)
	}
	return reports, nil
}

// sameSubject matches the requests rows of the subject sameSubjectArgs
// gives: the same id, address (ignoring case) or phone number, or one named
// identifier with the same value.
const sameSubject = `((? <> '' AND subject_id = ?) OR (? <> '' AND lower(subject_email) = lower(?))
	OR (? <> '' AND subject_phone = ?)
	OR EXISTS (SELECT 1 FROM jsonb_each_text(subject_identifiers) have, jsonb_each_text(?::jsonb) want
		WHERE have.key = want.key AND have.value = want.value))`

func sameSubjectArgs(s event.Subject) []any {
	return []any{s.ID, s.ID, s.Email, s.Email, s.Phone, s.Phone, identifiersJSON(s.Identifiers)}
}

// identifiersJSON is the subject_identifiers value of ids.
func identifiersJSON(ids map[string]string) string {
	if len(ids) == 0 {
		return "{}"
	}
	b, _ := json.Marshal(ids) // a map of strings always encodes
	return string(b)
}

// parseIdentifiers reads a subject_identifiers value ("" or "{}": none).
func parseIdentifiers(raw string) map[string]string {
	var ids map[string]string
	if raw == "" || json.Unmarshal([]byte(raw), &ids) != nil || len(ids) == 0 {
		return nil
	}
	return ids
}

// removeFiles deletes the files of reports whose deletion committed and
// records each removal. A failure leaves the rest for PurgeRemovedReports.
func (s *Store) removeFiles(ctx context.Context, reportIDs []string) error {
	for _, id := range reportIDs {
		if err := s.files.Delete(ctx, id); err != nil {
			return fmt.Errorf("removing report file %s: %w", id, err)
		}
		if err := s.db.WithContext(ctx).Exec(`UPDATE reports SET file_removed = true WHERE id = ?`, id).Error; err != nil {
			return fmt.Errorf("recording removal of report file %s: %w", id, err)
		}
	}
	return nil
}

// PurgeRemovedReports removes up to limit report files whose deletion was
// recorded but not done (the process died between the commit and the
// unlink) and returns their ids. It is idempotent: removing a file that is
// gone already is not an error.
// Only deletions recorded before deletedBefore are taken: a younger one is
// likely being finished by the process that recorded it.
func (s *Store) PurgeRemovedReports(ctx context.Context, deletedBefore time.Time, limit int, dryRun bool) ([]string, error) {
	var ids []string
	if err := s.db.WithContext(ctx).Raw(`SELECT id FROM reports WHERE deleted_at IS NOT NULL AND NOT file_removed
		AND deleted_at < ? ORDER BY deleted_at LIMIT ?`, deletedBefore, limit).Scan(&ids).Error; err != nil {
		return nil, fmt.Errorf("listing report files to remove: %w", err)
	}
	if dryRun {
		return ids, nil
	}
	return ids, s.removeFiles(ctx, ids)
}

// DeleteExpiredReports deletes up to limit reports created before cutoff
// (report.retention: their links expired) and returns their ids.
func (s *Store) DeleteExpiredReports(ctx context.Context, now, cutoff time.Time, limit int, dryRun bool) ([]string, error) {
	var ids []string
	if dryRun {
		err := s.db.WithContext(ctx).Raw(`SELECT id FROM reports WHERE deleted_at IS NULL AND created_at < ?
			ORDER BY created_at LIMIT ?`, cutoff, limit).Scan(&ids).Error
		if err != nil {
			return nil, fmt.Errorf("listing expired reports: %w", err)
		}
		return ids, nil
	}
	err := s.db.WithContext(ctx).Raw(`WITH due AS (
			SELECT id FROM reports WHERE deleted_at IS NULL AND created_at < ?
			ORDER BY created_at LIMIT ? FOR UPDATE SKIP LOCKED)
		UPDATE reports r SET deleted_at = ?, deleted_reason = ? FROM due WHERE r.id = due.id
		RETURNING r.id`, cutoff, limit, now, DeletedRetention).Scan(&ids).Error
	if err != nil {
		return nil, fmt.Errorf("deleting expired reports: %w", err)
	}
	return ids, s.removeFiles(ctx, ids)
}

// ScrubFinished removes the personal data (subject id and address, and the
// report) of up to limit requests finished before cutoff
// (retention.scrub_after) and returns their ids. Their PII-free record
// stays until DeleteRecords.
func (s *Store) ScrubFinished(ctx context.Context, now, cutoff time.Time, limit int, dryRun bool) ([]string, error) {
	const due = `SELECT id FROM requests
		WHERE pii_scrubbed_at IS NULL AND ` + finishedSQL + ` AND ` + finishedAtSQL + ` < ?
		ORDER BY ` + finishedAtSQL + ` LIMIT ?`
	var ids []string
	if dryRun {
		if err := s.db.WithContext(ctx).Raw(due, cutoff, limit).Scan(&ids).Error; err != nil {
			return nil, fmt.Errorf("listing requests to scrub: %w", err)
		}
		return ids, nil
	}
	var reports []string
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Raw(`WITH due AS (`+due+` FOR UPDATE SKIP LOCKED)
			UPDATE requests r SET subject_id = '', subject_email = '', subject_phone = '', subject_identifiers = '{}', `+scrubReasonsSQL+`,
				pii_scrubbed_at = ?, updated_at = ?
			FROM due WHERE r.id = due.id RETURNING r.id`, cutoff, limit, now, now).Scan(&ids).Error; err != nil {
			return fmt.Errorf("scrubbing finished requests: %w", err)
		}
		if len(ids) == 0 {
			return nil
		}
		return tx.Raw(`UPDATE reports SET deleted_at = ?, deleted_reason = ?
			WHERE request_id IN ? AND deleted_at IS NULL RETURNING id`, now, DeletedRetention, ids).Scan(&reports).Error
	})
	if err != nil {
		return nil, err
	}
	return ids, s.removeFiles(ctx, reports)
}

// DeleteRecords deletes the PII-free record (the row, its attempts and its
// report row) of up to limit requests finished before cutoff
// (retention.record_for) and returns their ids. Only scrubbed requests
// whose report file is gone qualify, so nothing personal can lose the row
// that says where it is.
func (s *Store) DeleteRecords(ctx context.Context, cutoff time.Time, limit int, dryRun bool) ([]string, error) {
	const due = `SELECT id FROM requests r
		WHERE ` + finishedSQL + ` AND ` + finishedAtSQL + ` < ?
		  AND pii_scrubbed_at IS NOT NULL
		  AND NOT EXISTS (SELECT 1 FROM reports p WHERE p.request_id = r.id AND NOT p.file_removed)
		ORDER BY ` + finishedAtSQL + ` LIMIT ?`
	var ids []string
	if dryRun {
		if err := s.db.WithContext(ctx).Raw(due, cutoff, limit).Scan(&ids).Error; err != nil {
			return nil, fmt.Errorf("listing request records to delete: %w", err)
		}
		return ids, nil
	}
	if err := s.db.WithContext(ctx).Raw(`WITH due AS (`+due+` FOR UPDATE SKIP LOCKED)
		DELETE FROM requests r USING due WHERE r.id = due.id RETURNING r.id`, cutoff, limit).Scan(&ids).Error; err != nil {
		return nil, fmt.Errorf("deleting request records: %w", err)
	}
	return ids, nil
}

// ErasedAmong returns those of ids (request ids, possibly not UUIDs) whose
// subject was erased: the erasure requests themselves and the requests an
// erasure scrubbed. Their dead letters are purged at once.
func (s *Store) ErasedAmong(ctx context.Context, ids []string) ([]string, error) {
	// One bind variable however many ids a dead-letter queue holds (a bound
	// parameter per id stops at 65535).
	list, err := uuidList(ids)
	if err != nil {
		return nil, err
	}
	var out []string
	if err := s.db.WithContext(ctx).Raw(`SELECT id::text FROM requests
		WHERE id IN (SELECT jsonb_array_elements_text(?::jsonb)::uuid) AND erased_by IS NOT NULL`, list).Scan(&out).Error; err != nil {
		return nil, fmt.Errorf("looking up erased requests: %w", err)
	}
	return out, nil
}
