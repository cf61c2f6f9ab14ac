-- +goose Up
-- The subject's phone number (E.164) and named identifiers
-- (serve.identifiers), beside subject_id and subject_email. Personal data:
-- scrubbed with them (an erasure of the subject, retention.scrub_after).
ALTER TABLE requests
    ADD COLUMN subject_phone       text  NOT NULL DEFAULT '',
    ADD COLUMN subject_identifiers jsonb NOT NULL DEFAULT '{}';

-- +goose Down
ALTER TABLE requests
    DROP COLUMN subject_identifiers,
    DROP COLUMN subject_phone;
