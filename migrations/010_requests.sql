-- +goose Up
-- requests is the requests manager's state of every data subject request.
-- subject_* are personal data: scrubbed once an erasure is finished.
CREATE TABLE requests (
    id               uuid        PRIMARY KEY,
    type             text        NOT NULL CHECK (type IN ('access', 'erasure')),
    state            text        NOT NULL CHECK (state IN ('received', 'processing', 'handed_over', 'completed', 'failed')),
    subject_id       text        NOT NULL DEFAULT '',
    subject_email    text        NOT NULL DEFAULT '',
    submitted_at     timestamptz NOT NULL,
    received_at      timestamptz NOT NULL DEFAULT now(),
    -- GDPR Art. 12(3): answer within one month of receipt.
    due_at           timestamptz NOT NULL,
    completed_at     timestamptz,
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error_class text        NOT NULL DEFAULT '',
    -- Fence (lock.Fence): a worker's writes commit only while it holds the lease.
    lease_token      bigint      NOT NULL DEFAULT 0,
    lease_until      timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX requests_due ON requests (next_attempt_at) WHERE state = 'received';
CREATE INDEX requests_subject_id ON requests (subject_id) WHERE subject_id <> '';
CREATE INDEX requests_open_state ON requests (state) WHERE state NOT IN ('completed', 'failed');

-- request_attempts is each processing attempt's history (backoff is visible here).
CREATE TABLE request_attempts (
    request_id   uuid        NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
    attempt      integer     NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    outcome      text        NOT NULL DEFAULT 'running',
    error_class  text        NOT NULL DEFAULT '',
    next_attempt_at timestamptz,
    PRIMARY KEY (request_id, attempt)
);

-- reports records each finished access report (one per request).
CREATE TABLE reports (
    id          text        PRIMARY KEY,
    request_id  uuid        NOT NULL UNIQUE REFERENCES requests (id) ON DELETE CASCADE,
    bytes       bigint      NOT NULL,
    sha256      text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE reports;
DROP TABLE request_attempts;
DROP TABLE requests;
