-- +goose Up
-- erasures is the canceller's state of each erasure request. subject_* are
-- personal data kept only while commands may still be (re)sent; they are
-- scrubbed when the erasure is finished.
CREATE TABLE erasures (
    request_id    uuid        PRIMARY KEY,
    state         text        NOT NULL CHECK (state IN ('open', 'completed', 'finished')),
    subject_id    text        NOT NULL DEFAULT '',
    subject_email text        NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- completed_at: every participant but the email system confirmed.
    completed_at  timestamptz,
    -- finished_at: the email system confirmed too.
    finished_at   timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX erasures_open ON erasures (created_at) WHERE state <> 'finished';

-- erasure_participants is one row per (request, registered participant).
-- attempt counts the commands sent (or HTTP calls made); a timer or a
-- confirmation naming an older attempt is stale and changes nothing.
CREATE TABLE erasure_participants (
    request_id   uuid        NOT NULL REFERENCES erasures (request_id) ON DELETE CASCADE,
    participant  text        NOT NULL,
    kind         text        NOT NULL CHECK (kind IN ('amqp', 'http', 'email')),
    state        text        NOT NULL CHECK (state IN ('pending', 'waiting', 'sent', 'retrying', 'erased', 'not_found', 'failed', 'overdue')),
    attempt      integer     NOT NULL DEFAULT 0,
    last_outcome text        NOT NULL DEFAULT '',
    detail       text        NOT NULL DEFAULT '',
    sent_at      timestamptz,
    confirmed_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (request_id, participant)
);
CREATE INDEX erasure_participants_attention ON erasure_participants (state) WHERE state IN ('overdue', 'failed');

-- +goose Down
DROP TABLE erasure_participants;
DROP TABLE erasures;
