-- +goose Up
-- How the data subject was verified before the request was accepted
-- (the self-service page's emailed code or link, or what an API caller
-- states), the language the subject's emails are written in, and whether a
-- receipt email is owed (requests from the self-service page). None of it is
-- personal data: it outlives the scrub of a finished erasure.
ALTER TABLE requests
    ADD COLUMN verification_method text        NOT NULL DEFAULT '',
    ADD COLUMN verified_at         timestamptz,
    ADD COLUMN locale              text        NOT NULL DEFAULT '',
    ADD COLUMN receipt             boolean     NOT NULL DEFAULT false;

-- +goose Down
ALTER TABLE requests
    DROP COLUMN receipt,
    DROP COLUMN locale,
    DROP COLUMN verified_at,
    DROP COLUMN verification_method;
