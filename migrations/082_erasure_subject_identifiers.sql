-- +goose Up
-- The subject's phone number and named identifiers for the canceller's
-- commands and HTTP calls (re-sends read them here); scrubbed with
-- subject_id and subject_email once the erasure finished.
ALTER TABLE erasures
    ADD COLUMN subject_phone       text  NOT NULL DEFAULT '',
    ADD COLUMN subject_identifiers jsonb NOT NULL DEFAULT '{}';

-- +goose Down
ALTER TABLE erasures
    DROP COLUMN subject_identifiers,
    DROP COLUMN subject_phone;
