-- +goose Up
-- Retention and the subject's erasure treat the operator's ends (cancelled,
-- denied, 070_operator_console.sql) as finished requests too, aged from closed_at
-- (requests.Store.ScrubFinished, DeleteRecords): the sweeper's indexes
-- follow, so its batches stay index scans.
DROP INDEX requests_finished_unscrubbed;
DROP INDEX requests_finished_age;
CREATE INDEX requests_finished_unscrubbed ON requests (COALESCE(completed_at, closed_at, updated_at))
    WHERE pii_scrubbed_at IS NULL AND state IN ('completed', 'failed', 'cancelled', 'denied');
CREATE INDEX requests_finished_age ON requests (COALESCE(completed_at, closed_at, updated_at))
    WHERE state IN ('completed', 'failed', 'cancelled', 'denied');

-- +goose Down
DROP INDEX requests_finished_age;
DROP INDEX requests_finished_unscrubbed;
CREATE INDEX requests_finished_unscrubbed ON requests (COALESCE(completed_at, updated_at))
    WHERE pii_scrubbed_at IS NULL AND state IN ('completed', 'failed');
CREATE INDEX requests_finished_age ON requests (COALESCE(completed_at, updated_at))
    WHERE state IN ('completed', 'failed');
