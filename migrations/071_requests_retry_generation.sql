-- +goose Up
-- An operator's retry (modules/officer) puts a failed request back to work
-- with its attempts counted from zero again. Before this, the new run's
-- attempts reused the numbers 1, 2, ... and overwrote the failed run's
-- rows, so the history that proves what happened was lost. Each retry now
-- starts a new generation: requests.retries counts them, and an attempt is
-- keyed by (request, generation, attempt).
ALTER TABLE requests ADD COLUMN retries integer NOT NULL DEFAULT 0;
ALTER TABLE request_attempts ADD COLUMN generation integer NOT NULL DEFAULT 0;
ALTER TABLE request_attempts DROP CONSTRAINT request_attempts_pkey;
ALTER TABLE request_attempts ADD PRIMARY KEY (request_id, generation, attempt);

-- +goose Down
-- Only the newest generation of each request fits the old key.
DELETE FROM request_attempts a USING requests r WHERE r.id = a.request_id AND a.generation <> r.retries;
ALTER TABLE request_attempts DROP CONSTRAINT request_attempts_pkey;
ALTER TABLE request_attempts ADD PRIMARY KEY (request_id, attempt);
ALTER TABLE request_attempts DROP COLUMN generation;
ALTER TABLE requests DROP COLUMN retries;
