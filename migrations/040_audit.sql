-- +goose Up
-- audit_events is the append-only log of every message on the bus, one row
-- per message id. It holds ids, outcomes and error classes, never personal
-- data: the audit consumer drops subjects, emails and free text before writing.
CREATE TABLE audit_events (
    seq          bigserial   NOT NULL UNIQUE,
    message_id   text        PRIMARY KEY,
    type         text        NOT NULL,
    routing_key  text        NOT NULL DEFAULT '',
    -- The data subject request's id (the message's correlation id).
    request_id   text        NOT NULL DEFAULT '',
    causation_id text        NOT NULL DEFAULT '',
    -- The role that produced the message, when known.
    role         text        NOT NULL DEFAULT '',
    trace_id     text        NOT NULL DEFAULT '',
    occurred_at  timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    details      jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_request ON audit_events (request_id, occurred_at);
CREATE INDEX audit_events_type_occurred ON audit_events (type, occurred_at);

-- Rows are evidence: the table refuses updates and deletes. Retention, if
-- ever needed, is a deliberate migration or a partition drop, not a DELETE.
-- +goose StatementBegin
CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END
$$;
-- +goose StatementEnd
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();

-- +goose Down
DROP TABLE audit_events;
DROP FUNCTION audit_events_append_only();
