-- +goose Up
-- The privacy officer's console (modules/officer, docs/console.md).
--
-- requests: the regulation whose clock due_at follows, an extension of the
-- deadline (once, by an operator, with the reason emailed to the subject),
-- and the end an operator gave a request: cancelled, or denied with a
-- reason code. due_at never moves; extended_until, when set, is the
-- deadline in force. The free-text reasons live on this row (which holds
-- personal data anyway), never in operator_actions.
ALTER TABLE requests
    ADD COLUMN regulation       text        NOT NULL DEFAULT 'gdpr' CHECK (regulation IN ('gdpr', 'ccpa', 'lgpd')),
    ADD COLUMN extended_until   timestamptz,
    ADD COLUMN extension_reason text        NOT NULL DEFAULT '',
    ADD COLUMN extended_by      text        NOT NULL DEFAULT '',
    ADD COLUMN extended_at      timestamptz,
    ADD COLUMN denial_code      text        NOT NULL DEFAULT '',
    ADD COLUMN closed_reason    text        NOT NULL DEFAULT '',
    ADD COLUMN closed_by        text        NOT NULL DEFAULT '',
    ADD COLUMN closed_at        timestamptz;
ALTER TABLE requests DROP CONSTRAINT requests_state_check;
ALTER TABLE requests ADD CONSTRAINT requests_state_check
    CHECK (state IN ('received', 'processing', 'handed_over', 'completed', 'failed', 'cancelled', 'denied'));
DROP INDEX requests_open_state;
CREATE INDEX requests_open_state ON requests (state) WHERE state NOT IN ('completed', 'failed', 'cancelled', 'denied');
CREATE INDEX requests_deadline ON requests ((COALESCE(extended_until, due_at)))
    WHERE state NOT IN ('completed', 'cancelled', 'denied');
CREATE INDEX requests_submitted_at ON requests (submitted_at, id);

-- erasures: an erasure whose request an operator cancelled after its
-- commands went out. Nothing more is sent for it; confirmations that still
-- arrive are recorded (docs/console.md).
ALTER TABLE erasures DROP CONSTRAINT erasures_state_check;
ALTER TABLE erasures ADD CONSTRAINT erasures_state_check
    CHECK (state IN ('open', 'completed', 'finished', 'cancelled'));

-- operator_actions is the append-only record of every operator action:
-- who (the operator's configured name), what, the reason code, on which
-- request (and participant), when. No personal data of the subject and no
-- free text.
CREATE TABLE operator_actions (
    seq         bigserial   PRIMARY KEY,
    request_id  uuid,
    participant text        NOT NULL DEFAULT '',
    operator    text        NOT NULL,
    action      text        NOT NULL,
    reason_code text        NOT NULL DEFAULT '',
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX operator_actions_request ON operator_actions (request_id, seq);
-- +goose StatementBegin
CREATE FUNCTION operator_actions_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'operator_actions is append-only';
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER operator_actions_append_only BEFORE UPDATE OR DELETE ON operator_actions
    FOR EACH ROW EXECUTE FUNCTION operator_actions_append_only();

-- console_sessions are the web console's signed-in sessions. Only the
-- SHA-256 of the session cookie is stored, so a copy of the table signs
-- nobody in.
CREATE TABLE console_sessions (
    id_sha256  text        PRIMARY KEY,
    csrf_token text        NOT NULL,
    operator   text        NOT NULL,
    role       text        NOT NULL CHECK (role IN ('viewer', 'operator')),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX console_sessions_expires_at ON console_sessions (expires_at);

-- +goose Down
DROP TABLE console_sessions;
DROP TRIGGER operator_actions_append_only ON operator_actions;
DROP TABLE operator_actions;
DROP FUNCTION operator_actions_append_only();
UPDATE erasures SET state = 'finished' WHERE state = 'cancelled';
ALTER TABLE erasures DROP CONSTRAINT erasures_state_check;
ALTER TABLE erasures ADD CONSTRAINT erasures_state_check CHECK (state IN ('open', 'completed', 'finished'));
UPDATE requests SET state = 'failed' WHERE state IN ('cancelled', 'denied');
DROP INDEX requests_submitted_at;
DROP INDEX requests_deadline;
DROP INDEX requests_open_state;
CREATE INDEX requests_open_state ON requests (state) WHERE state NOT IN ('completed', 'failed');
ALTER TABLE requests DROP CONSTRAINT requests_state_check;
ALTER TABLE requests ADD CONSTRAINT requests_state_check
    CHECK (state IN ('received', 'processing', 'handed_over', 'completed', 'failed'));
ALTER TABLE requests
    DROP COLUMN closed_at, DROP COLUMN closed_by, DROP COLUMN closed_reason, DROP COLUMN denial_code,
    DROP COLUMN extended_at, DROP COLUMN extended_by, DROP COLUMN extension_reason, DROP COLUMN extended_until,
    DROP COLUMN regulation;
