-- +goose Up
-- What each report holds, for the data subject's download page: per source,
-- its name (the archive's file names) and how many records it gave, or that
-- it was skipped. Source names and counts are not personal data.
ALTER TABLE reports
    ADD COLUMN contents jsonb NOT NULL DEFAULT '[]';

-- +goose Down
ALTER TABLE reports
    DROP COLUMN contents;
