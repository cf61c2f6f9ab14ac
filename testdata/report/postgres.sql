-- Source data for the report tests: two customers, only the first is the
-- subject. Types cover what a report must render: text with CSV/JSON
-- specials, numbers, booleans, NULL, timestamps, JSON and binary.
CREATE TABLE customers (
    id         text PRIMARY KEY,
    email      text,
    name       text,
    created_at timestamptz,
    vip        boolean,
    balance    numeric(10, 2),
    visits     bigint,
    score      double precision,
    prefs      jsonb,
    avatar     bytea,
    note       text
);
INSERT INTO customers VALUES
    ('u-1001', 'ana+gdpr@example.com', 'Ana Nováková', '2024-03-01 10:20:30.123456+00', true, 1234.50, 42, 0.25,
     '{"lang": "cs", "topics": ["film", "sport"], "sms": false}', '\x89504e470d0a1a0a', E'line one\nline "two", with comma'),
    ('u-1002', 'bob@example.com', 'Bob Other', '2024-04-01 00:00:00+00', false, 0, 1, 1.5, '{}', NULL, 'not the subject');

CREATE TABLE orders (
    id          integer PRIMARY KEY,
    customer_id text NOT NULL,
    total       numeric(10, 2) NOT NULL,
    placed_at   timestamptz NOT NULL,
    items       jsonb
);
INSERT INTO orders VALUES
    (1, 'u-1001', 19.99, '2024-05-01 08:00:00+00', '[{"sku": "A-1", "qty": 1}]'),
    (2, 'u-1002', 5.00,  '2024-05-02 08:00:00+00', '[]'),
    (3, 'u-1001', 7.50,  '2024-06-01 09:30:00+00', NULL),
    (4, 'u-1001', 100.00,'2024-07-01 12:00:00+00', '[{"sku": "B-2", "qty": 3}, {"sku": "C-3", "qty": 1}]');
