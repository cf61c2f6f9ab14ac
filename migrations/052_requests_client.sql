-- +goose Up
-- The API client that submitted each request (serve.api_clients[].name, a
-- flat serve.api_tokens entry's digest prefix, or "privacy-page"): a client
-- reads only its own requests. Requests stored before this column existed
-- keep '' and stay readable by every client, as they were. Not personal
-- data: it outlives the scrub of a finished erasure.
ALTER TABLE requests ADD COLUMN client text NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE requests DROP COLUMN client;
