-- +goose Up
-- notifications makes each email go out at most once per report or erasure
-- (key = template + ":" + the report id or request id). A row is written as
-- 'sending' before the SMTP conversation and marked 'sent' after it, in the
-- transaction that records the message in the inbox. message_id is the
-- RFC 5322 Message-ID header, stable across a resend after a crash.
CREATE TABLE notifications (
    key         text        PRIMARY KEY,
    request_id  uuid        NOT NULL,
    template    text        NOT NULL,
    message_id  text        NOT NULL,
    state       text        NOT NULL CHECK (state IN ('sending', 'sent', 'skipped')),
    sends       integer     NOT NULL DEFAULT 0,
    reason      text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz
);
CREATE INDEX notifications_request_id ON notifications (request_id);

-- +goose Down
DROP TABLE notifications;
