-- +goose Up
-- The audit timeline shows which events the scheduler dispatched (outbox
-- entries and delayed messages) by looking their message ids up in the
-- scheduler's sent history.
CREATE INDEX scheduled_messages_sent_message_id ON scheduled_messages_sent (message_id);

-- +goose Down
DROP INDEX scheduled_messages_sent_message_id;
