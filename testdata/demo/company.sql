-- The demo company that `make run` answers data subject requests for
-- (deploy/demo.sh loads this file with `gdpr demo company`). Three services,
-- each in its own schema, hold personal data about the same customers:
--   shop        customers and their orders (a PostgreSQL report source; the
--               AMQP participant `gdpr example-participant --name shop`
--               erases a customer, and their orders with them);
--   helpdesk    support tickets, read and erased over HTTP by
--               `gdpr demo helpdesk` (an HTTP source and an HTTP participant);
--   newsletter  subscribers, keyed by email: the email system, erased last,
--               after the "your data was deleted" email went out.
-- Loading it again restores every row, so each `make run` starts afresh.
DROP SCHEMA IF EXISTS shop, helpdesk, newsletter CASCADE;
CREATE SCHEMA shop;
CREATE SCHEMA helpdesk;
CREATE SCHEMA newsletter;

CREATE TABLE shop.customers (
	id         text PRIMARY KEY,
	email      text NOT NULL UNIQUE,
	full_name  text NOT NULL,
	city       text NOT NULL,
	created_at date NOT NULL
);
CREATE TABLE shop.orders (
	id          integer PRIMARY KEY,
	customer_id text NOT NULL REFERENCES shop.customers (id) ON DELETE CASCADE,
	item        text NOT NULL,
	total_eur   numeric(10, 2) NOT NULL,
	ordered_at  date NOT NULL
);
CREATE TABLE helpdesk.tickets (
	id          integer PRIMARY KEY,
	customer_id text NOT NULL,
	subject     text NOT NULL,
	body        text NOT NULL,
	opened_at   timestamptz NOT NULL
);
CREATE TABLE newsletter.subscribers (
	email         text PRIMARY KEY,
	topics        text NOT NULL,
	subscribed_at date NOT NULL
);

INSERT INTO shop.customers (id, email, full_name, city, created_at) VALUES
	('c-1001', 'ada@example.com', 'Ada Lovelace', 'London', '2023-03-14'),
	('c-1002', 'alan@example.com', 'Alan Turing', 'Manchester', '2023-06-23'),
	('c-1003', 'grace@example.com', 'Grace Hopper', 'Arlington', '2024-01-09'),
	('c-1004', 'edsger@example.com', 'Edsger Dijkstra', 'Nuenen', '2024-05-11'),
	('c-1005', 'barbara@example.com', 'Barbara Liskov', 'Boston', '2024-11-07');

INSERT INTO shop.orders (id, customer_id, item, total_eur, ordered_at) VALUES
	(1, 'c-1001', 'Difference engine gears (set of 12)', 49.90, '2024-02-01'),
	(2, 'c-1001', 'Punched cards, 1000', 12.50, '2024-09-17'),
	(3, 'c-1002', 'Enigma rotor replica', 89.00, '2024-03-05'),
	(4, 'c-1003', 'COBOL pocket guide', 19.99, '2024-04-22'),
	(5, 'c-1003', 'Nanosecond wire, 30 cm', 3.00, '2025-01-30'),
	(6, 'c-1004', 'Semaphore flags', 24.00, '2025-02-14'),
	(7, 'c-1005', 'Substitution principle poster', 15.00, '2025-03-03');

INSERT INTO helpdesk.tickets (id, customer_id, subject, body, opened_at) VALUES
	(1, 'c-1001', 'Missing gear', 'Gear 7 of my set is missing.', '2024-02-05 10:12:00+00'),
	(2, 'c-1001', 'Invoice address', 'Please send invoices to my London address.', '2024-09-20 16:40:00+00'),
	(3, 'c-1002', 'Rotor too stiff', 'The second rotor does not turn.', '2024-03-09 08:03:00+00'),
	(4, 'c-1004', 'Wrong colour', 'The flags are blue, I ordered red and yellow.', '2025-02-20 12:00:00+00');

INSERT INTO newsletter.subscribers (email, topics, subscribed_at) VALUES
	('ada@example.com', 'new products, engines', '2023-03-14'),
	('alan@example.com', 'puzzles', '2023-07-01'),
	('grace@example.com', 'new products', '2024-01-09'),
	('barbara@example.com', 'books', '2024-11-07');
