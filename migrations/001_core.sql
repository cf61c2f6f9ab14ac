-- +goose Up
-- inbox records every message id whose effect was committed, per consumer,
-- in the same transaction as the effect, so a redelivery changes nothing.
CREATE TABLE inbox (
    consumer    text        NOT NULL,
    message_id  text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);
CREATE INDEX inbox_received_at ON inbox (received_at);

-- +goose Down
DROP TABLE inbox;
