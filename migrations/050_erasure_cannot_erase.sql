-- +goose Up
-- cannot_erase: an http participant whose URL template needs an identifier
-- the request lacks (or one the template refuses). It is never called; the
-- erasure cannot complete, and operators see it like overdue and failed.
ALTER TABLE erasure_participants DROP CONSTRAINT erasure_participants_state_check;
ALTER TABLE erasure_participants ADD CONSTRAINT erasure_participants_state_check
    CHECK (state IN ('pending', 'waiting', 'sent', 'retrying', 'erased', 'not_found', 'failed', 'overdue', 'cannot_erase'));
DROP INDEX erasure_participants_attention;
CREATE INDEX erasure_participants_attention ON erasure_participants (state) WHERE state IN ('overdue', 'failed', 'cannot_erase');

-- +goose Down
UPDATE erasure_participants SET state = 'failed' WHERE state = 'cannot_erase';
DROP INDEX erasure_participants_attention;
CREATE INDEX erasure_participants_attention ON erasure_participants (state) WHERE state IN ('overdue', 'failed');
ALTER TABLE erasure_participants DROP CONSTRAINT erasure_participants_state_check;
ALTER TABLE erasure_participants ADD CONSTRAINT erasure_participants_state_check
    CHECK (state IN ('pending', 'waiting', 'sent', 'retrying', 'erased', 'not_found', 'failed', 'overdue'));
