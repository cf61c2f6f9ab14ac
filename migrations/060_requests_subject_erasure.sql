-- +goose Up
-- gdpr erases its own copy of a subject (docs/privacy.md). A request whose
-- personal data was removed keeps its PII-free record: pii_scrubbed_at says
-- when, erased_by names the erasure request that caused it (NULL when the
-- retention sweeper did).
ALTER TABLE requests
    ADD COLUMN pii_scrubbed_at timestamptz,
    ADD COLUMN erased_by       uuid;
-- An erasure finds the subject's earlier requests by id or by address.
CREATE INDEX requests_subject_email ON requests (lower(subject_email)) WHERE subject_email <> '';
-- The retention sweeper's scrub and record deletion walk finished rows by age.
CREATE INDEX requests_finished_unscrubbed ON requests (COALESCE(completed_at, updated_at))
    WHERE pii_scrubbed_at IS NULL AND state IN ('completed', 'failed');
CREATE INDEX requests_finished_age ON requests (COALESCE(completed_at, updated_at))
    WHERE state IN ('completed', 'failed');

-- A deleted report keeps its row (the in-sync check and the download's
-- 410 Gone need it) with why it went. The file is removed after the
-- deletion commits; file_removed records that it was, so a crash in between
-- leaves a row the purge finishes (requests.Store.PurgeRemovedReports).
ALTER TABLE reports
    ADD COLUMN deleted_at     timestamptz,
    ADD COLUMN deleted_reason text    NOT NULL DEFAULT ''
        CHECK (deleted_reason IN ('', 'subject_erasure', 'retention')),
    ADD COLUMN file_removed   boolean NOT NULL DEFAULT false,
    ADD CHECK ((deleted_at IS NULL) = (deleted_reason = '')),
    ADD CHECK (deleted_at IS NOT NULL OR NOT file_removed);
CREATE INDEX reports_live ON reports (created_at) WHERE deleted_at IS NULL;
CREATE INDEX reports_file_pending ON reports (deleted_at) WHERE deleted_at IS NOT NULL AND NOT file_removed;

-- +goose Down
DROP INDEX reports_file_pending;
DROP INDEX reports_live;
ALTER TABLE reports DROP COLUMN file_removed, DROP COLUMN deleted_reason, DROP COLUMN deleted_at;
DROP INDEX requests_finished_age;
DROP INDEX requests_finished_unscrubbed;
DROP INDEX requests_subject_email;
ALTER TABLE requests DROP COLUMN erased_by, DROP COLUMN pii_scrubbed_at;
