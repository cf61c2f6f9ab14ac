-- +goose Up
-- had_email records at receipt whether the request came with an email
-- address. It is no personal data and survives the scrub of a finished
-- erasure, so the in-sync check can tell a request that owed the data
-- subject an email from one that had nobody to write to.
ALTER TABLE requests ADD COLUMN had_email boolean NOT NULL DEFAULT false;
-- Rows stored before this column: an address still on the row, or an email
-- sent for it, means it had one. A scrubbed erasure whose email was skipped
-- cannot be told apart from one that never had an address.
UPDATE requests r SET had_email = true
WHERE r.subject_email <> ''
   OR EXISTS (SELECT 1 FROM notifications n WHERE n.request_id = r.id AND n.state = 'sent');

-- +goose Down
ALTER TABLE requests DROP COLUMN had_email;
