-- +goose Up
-- The officer's list filters by the API client that submitted a request
-- (requests.client, migration 052), newest first or by deadline, and the
-- console offers the clients seen as choices.
CREATE INDEX requests_client ON requests (client, submitted_at);

-- +goose Down
DROP INDEX requests_client;
