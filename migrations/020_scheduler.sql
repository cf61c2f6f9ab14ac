-- +goose Up
-- scheduled_messages holds messages to publish at deliver_at (by the
-- database clock). Modules also use it as their transactional outbox: a
-- follow-up event scheduled for "now" commits with the state change.
-- deliver_at is the requested due time and never moves; next_attempt_at is
-- when a dispatcher may claim the row (deliver_at, pushed back after a
-- publish the broker refused), so "never early" holds whatever happens.
CREATE TABLE scheduled_messages (
    key             text        PRIMARY KEY,
    message_id      text        NOT NULL,
    deliver_at      timestamptz NOT NULL,
    next_attempt_at timestamptz NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0,
    last_error      text        NOT NULL DEFAULT '',
    exchange        text        NOT NULL DEFAULT '',
    routing_key     text        NOT NULL,
    type            text        NOT NULL,
    correlation_id  text        NOT NULL DEFAULT '',
    causation_id    text        NOT NULL DEFAULT '',
    traceparent     text        NOT NULL DEFAULT '',
    headers         jsonb       NOT NULL DEFAULT '{}',
    body            bytea       NOT NULL,
    occurred_at     timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (next_attempt_at >= deliver_at)
);
CREATE INDEX scheduled_messages_next_attempt_at ON scheduled_messages (next_attempt_at);

-- scheduled_messages_sent is the history of published messages (without
-- their bodies), pruned after scheduler.retention.
CREATE TABLE scheduled_messages_sent (
    key            text        NOT NULL,
    message_id     text        NOT NULL,
    deliver_at     timestamptz NOT NULL,
    sent_at        timestamptz NOT NULL,
    attempts       integer     NOT NULL,
    exchange       text        NOT NULL,
    routing_key    text        NOT NULL,
    type           text        NOT NULL,
    correlation_id text        NOT NULL
);
CREATE INDEX scheduled_messages_sent_sent_at ON scheduled_messages_sent (sent_at);
CREATE INDEX scheduled_messages_sent_key ON scheduled_messages_sent (key);
-- The audit timeline joins events to their dispatch by message id.
CREATE INDEX scheduled_messages_sent_message_id ON scheduled_messages_sent (message_id);

-- Dispatchers sleep until the earliest due time; a statement that schedules
-- something wakes them with the earliest next_attempt_at it wrote (epoch
-- microseconds), so a message due sooner than their sleep is not late.
-- Statement-level, so a COPY of a million rows sends one notification.
-- NOTIFY serializes committing transactions (a global lock held through
-- the commit), which would cut the outbox's commit rate to a third, so it
-- is skipped when another pending row is due no later: some dispatcher
-- is then awake for, or working on, that row and looks at the table again
-- right after it.
-- +goose StatementBegin
CREATE FUNCTION scheduled_messages_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    earliest timestamptz;
BEGIN
    SELECT min(next_attempt_at) INTO earliest FROM new_rows;
    IF earliest IS NULL OR EXISTS (
        SELECT 1 FROM scheduled_messages m
        WHERE m.next_attempt_at <= earliest
          AND NOT EXISTS (SELECT 1 FROM new_rows n WHERE n.key = m.key)) THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('gdpr_scheduler', (floor(extract(epoch FROM earliest) * 1000000))::bigint::text);
    RETURN NULL;
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER scheduled_messages_notify_insert AFTER INSERT ON scheduled_messages
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION scheduled_messages_notify();
CREATE TRIGGER scheduled_messages_notify_update AFTER UPDATE ON scheduled_messages
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION scheduled_messages_notify();

-- +goose Down
DROP TABLE scheduled_messages_sent;
DROP TABLE scheduled_messages;
DROP FUNCTION scheduled_messages_notify();
