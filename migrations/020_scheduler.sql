-- +goose Up
-- scheduled_messages holds messages to publish at deliver_at (by the
-- database clock). Modules also use it as their transactional outbox: a
-- follow-up event scheduled for "now" commits with the state change.
CREATE TABLE scheduled_messages (
    key            text        PRIMARY KEY,
    message_id     text        NOT NULL,
    deliver_at     timestamptz NOT NULL,
    exchange       text        NOT NULL DEFAULT '',
    routing_key    text        NOT NULL,
    type           text        NOT NULL,
    correlation_id text        NOT NULL DEFAULT '',
    causation_id   text        NOT NULL DEFAULT '',
    traceparent    text        NOT NULL DEFAULT '',
    headers        jsonb       NOT NULL DEFAULT '{}',
    body           bytea       NOT NULL,
    occurred_at    timestamptz NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX scheduled_messages_deliver_at ON scheduled_messages (deliver_at);

-- +goose Down
DROP TABLE scheduled_messages;
