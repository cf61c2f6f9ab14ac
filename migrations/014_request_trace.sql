-- +goose Up
-- The worker pool picks requests from this table, not from a message, so the
-- trace and the message that made the request due are kept on the row: the
-- pool's log lines and the events it publishes continue that trace.
ALTER TABLE requests
    ADD COLUMN traceparent         text NOT NULL DEFAULT '',
    ADD COLUMN received_message_id text NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE requests DROP COLUMN received_message_id, DROP COLUMN traceparent;
