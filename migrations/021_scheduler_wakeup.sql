-- +goose Up
-- 020's trigger skips the NOTIFY when another pending row is due no later,
-- trusting the dispatcher busy with that row to look at the table again
-- after it. That look can come before the skipping transaction commits and
-- then misses its row: nobody wakes for it until scheduler.max_idle.
-- A transaction that skips now holds a shared advisory lock (key 1734635634,
-- 20: "gdpr", migration group 20) until it ends. Dispatchers try that lock
-- exclusively before each look; when it is taken, a skipping writer may be
-- uncommitted, so they look again shortly. The lock is taken before the
-- check, so a writer that still sees the earlier row as pending holds it by
-- the time that row's dispatcher tries it. Shared locks do not conflict with
-- each other and cost no WAL, so commits still group (NOTIFY would
-- serialize them). The check needs a snapshot newer than the lock, which
-- only READ COMMITTED takes per statement: other isolation levels notify.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION scheduled_messages_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    earliest timestamptz;
BEGIN
    SELECT min(next_attempt_at) INTO earliest FROM new_rows;
    IF earliest IS NULL THEN
        RETURN NULL;
    END IF;
    IF current_setting('transaction_isolation') = 'read committed' THEN
        PERFORM pg_advisory_xact_lock_shared(1734635634, 20);
        IF EXISTS (
            SELECT 1 FROM scheduled_messages m
            WHERE m.next_attempt_at <= earliest
              AND NOT EXISTS (SELECT 1 FROM new_rows n WHERE n.key = m.key)) THEN
            RETURN NULL;
        END IF;
    END IF;
    PERFORM pg_notify('gdpr_scheduler', (floor(extract(epoch FROM earliest) * 1000000))::bigint::text);
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION scheduled_messages_notify() RETURNS trigger LANGUAGE plpgsql AS $$
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
