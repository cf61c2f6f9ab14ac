-- +goose Up
-- outbox_messages is the transactional outbox (modules/outbox): a message
-- written in the transaction of the effect that causes it, published by
-- the outbox relay of the role that wrote it. Until now these rows were
-- scheduled_messages due at once, which made every message depend on the
-- scheduler role; scheduled_messages keeps only messages due later.
-- The columns are scheduled_messages' (modules/relay publishes both
-- tables); deliver_at is when the message was written.
CREATE TABLE outbox_messages (
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
CREATE INDEX outbox_messages_next_attempt_at ON outbox_messages (next_attempt_at);

-- outbox_messages_sent is the history of published outbox messages
-- (without their bodies), pruned after outbox.retention.
CREATE TABLE outbox_messages_sent (
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
CREATE INDEX outbox_messages_sent_sent_at ON outbox_messages_sent (sent_at);
-- The audit timeline joins events to their publication by message id.
CREATE INDEX outbox_messages_sent_message_id ON outbox_messages_sent (message_id);

-- The wake-up of 020 and 021 on the outbox's own channel and lock (key
-- 1734635634, 22): a statement that writes rows notifies gdpr_outbox with
-- the earliest next_attempt_at it wrote, unless another pending row is due
-- no later (a relay is then awake for it and looks again after it); a
-- transaction that skips holds the shared advisory lock until it ends, so a
-- relay that finds the lock taken looks again shortly instead of missing a
-- row committed after its look (021 says why; the relay that reads both
-- tables is the same code, modules/relay).
-- +goose StatementBegin
CREATE FUNCTION outbox_messages_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    earliest timestamptz;
BEGIN
    SELECT min(next_attempt_at) INTO earliest FROM new_rows;
    IF earliest IS NULL THEN
        RETURN NULL;
    END IF;
    IF current_setting('transaction_isolation') = 'read committed' THEN
        PERFORM pg_advisory_xact_lock_shared(1734635634, 22);
        IF EXISTS (
            SELECT 1 FROM outbox_messages m
            WHERE m.next_attempt_at <= earliest
              AND NOT EXISTS (SELECT 1 FROM new_rows n WHERE n.key = m.key)) THEN
            RETURN NULL;
        END IF;
    END IF;
    PERFORM pg_notify('gdpr_outbox', (floor(extract(epoch FROM earliest) * 1000000))::bigint::text);
    RETURN NULL;
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER outbox_messages_notify_insert AFTER INSERT ON outbox_messages
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION outbox_messages_notify();
CREATE TRIGGER outbox_messages_notify_update AFTER UPDATE ON outbox_messages
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION outbox_messages_notify();

-- Outbox rows written before this migration move over, keeping their
-- message ids (so a message already published and not yet marked sent is
-- published again with the same id, which consumers deduplicate).
INSERT INTO outbox_messages (key, message_id, deliver_at, next_attempt_at, attempts, last_error,
    exchange, routing_key, type, correlation_id, causation_id, traceparent, headers, body,
    occurred_at, created_at, updated_at)
SELECT message_id, message_id, deliver_at, next_attempt_at, attempts, last_error, exchange,
    routing_key, type, correlation_id, causation_id, traceparent, headers, body, occurred_at,
    created_at, updated_at
FROM scheduled_messages WHERE key LIKE 'outbox:%'
ON CONFLICT (key) DO NOTHING;
DELETE FROM scheduled_messages WHERE key LIKE 'outbox:%';

-- +goose Down
INSERT INTO scheduled_messages (key, message_id, deliver_at, next_attempt_at, attempts, last_error,
    exchange, routing_key, type, correlation_id, causation_id, traceparent, headers, body,
    occurred_at, created_at, updated_at)
SELECT 'outbox:' || message_id, message_id, deliver_at, next_attempt_at, attempts, last_error,
    exchange, routing_key, type, correlation_id, causation_id, traceparent, headers, body,
    occurred_at, created_at, updated_at
FROM outbox_messages
ON CONFLICT (key) DO NOTHING;
DROP TABLE outbox_messages_sent;
DROP TABLE outbox_messages;
DROP FUNCTION outbox_messages_notify();
