// Package outbox is the transactional outbox of every module: a message is
// written to outbox_messages in the transaction of the effect that causes
// it (Store.Enqueue), so it exists exactly when the effect committed, and
// the Relay of the role that wrote it publishes it with a broker confirm
// soon after the commit. Messages due later are not the outbox's: they go
// to modules/scheduler.
package outbox

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/relay"
)

// ErrInvalid marks a message that cannot be written to the outbox.
var ErrInvalid = errors.New("outbox: invalid message")

// table is the outbox's table with its wake-up trigger (migrations/022_outbox.sql).
func table() relay.Table {
	return relay.Table{
		Name:              "outbox_messages",
		Sent:              "outbox_messages_sent",
		Channel:           "gdpr_outbox",
		SkippedNotifyLock: "1734635634, 22",
	}
}

// Store writes to the outbox. It holds no state besides the database.
type Store struct {
	db *gorm.DB
}

// NewStore returns a store over db.
func NewStore(db *gorm.DB) *Store { return &Store{db: db} }

// Enqueue writes m to the outbox inside tx, the transaction of the effect
// that causes it: it is published once tx commits and never if it rolls
// back. nil tx uses the store's database (a message caused by no effect).
// Enqueueing the same message id again while it is pending replaces it.
func (s *Store) Enqueue(ctx context.Context, tx *gorm.DB, m message.Message) error {
	if tx == nil {
		tx = s.db
	}
	q, args, err := s.EnqueueSQL(m, "true")
	if err != nil {
		return err
	}
	if err := tx.WithContext(ctx).Exec(q, args...).Error; err != nil {
		return fmt.Errorf("writing %s to the outbox: %w", m.ID, err)
	}
	return nil
}

// EnqueueSQL is Enqueue as a statement to run inside a caller's
// data-modifying WITH clause, so that an effect and its message commit in
// one round trip (and one statement, atomic without a transaction): the
// message is written only when the SQL condition guard holds, typically
// `EXISTS (SELECT 1 FROM <the effect's member>)`. guard may not contain
// placeholders.
func (s *Store) EnqueueSQL(m message.Message, guard string) (string, []any, error) {
	switch {
	case m.ID == "":
		return "", nil, fmt.Errorf("%w: message id is empty", ErrInvalid)
	case m.Key() == "":
		return "", nil, fmt.Errorf("%w: routing key is empty", ErrInvalid)
	}
	r, err := relay.NewRow(m)
	if err != nil {
		return "", nil, fmt.Errorf("encoding headers of %s: %w", m.ID, err)
	}
	// deliver_at is the database's now(): the relay's lateness is measured
	// from the write, on the one clock that decides what is due.
	return `INSERT INTO outbox_messages (key, message_id, deliver_at, next_attempt_at, routing_key, type,
			correlation_id, causation_id, traceparent, headers, body, occurred_at)
		SELECT ?::text, ?::text, now(), now(), ?::text, ?::text, ?::text, ?::text, ?::text, ?::jsonb, ?::bytea, ?::timestamptz
		WHERE ` + guard + `
		ON CONFLICT (key) DO UPDATE SET deliver_at = now(), next_attempt_at = now(),
			attempts = 0, last_error = '', routing_key = EXCLUDED.routing_key, type = EXCLUDED.type,
			correlation_id = EXCLUDED.correlation_id, causation_id = EXCLUDED.causation_id,
			traceparent = EXCLUDED.traceparent, headers = EXCLUDED.headers,
			body = EXCLUDED.body, occurred_at = EXCLUDED.occurred_at, updated_at = now()`,
		[]any{r.MessageID, r.MessageID, r.RoutingKey, r.Type, r.CorrelationID, r.CausationID, r.Traceparent, r.Headers, r.Body, r.OccurredAt}, nil
}

// EnqueueAll is Enqueue for several messages in one statement: the table's
// wake-up trigger runs once for all of them instead of once per row. Their
// ids must differ (one statement cannot replace a row twice).
func (s *Store) EnqueueAll(ctx context.Context, tx *gorm.DB, ms []message.Message) error {
	if len(ms) == 0 {
		return nil
	}
	if tx == nil {
		tx = s.db
	}
	var sb strings.Builder
	args := make([]any, 0, 10*len(ms))
	seen := make(map[string]bool, len(ms))
	for i, m := range ms {
		switch {
		case m.ID == "":
			return fmt.Errorf("%w: message id is empty", ErrInvalid)
		case m.Key() == "":
			return fmt.Errorf("%w: routing key is empty", ErrInvalid)
		case seen[m.ID]:
			return fmt.Errorf("%w: message id %s given twice", ErrInvalid, m.ID)
		}
		seen[m.ID] = true
		r, err := relay.NewRow(m)
		if err != nil {
			return fmt.Errorf("encoding headers of %s: %w", m.ID, err)
		}
		if i > 0 {
			sb.WriteString(", ")
		}
		// deliver_at is the database's now(), as in EnqueueSQL.
		sb.WriteString("(?, ?, now(), now(), ?, ?, ?, ?, ?, ?, ?, ?)")
		args = append(args, r.MessageID, r.MessageID, r.RoutingKey, r.Type, r.CorrelationID, r.CausationID, r.Traceparent, r.Headers, r.Body, r.OccurredAt)
	}
	res := tx.WithContext(ctx).Exec(`
		INSERT INTO outbox_messages (key, message_id, deliver_at, next_attempt_at, routing_key, type,
			correlation_id, causation_id, traceparent, headers, body, occurred_at)
		VALUES `+sb.String()+`
		ON CONFLICT (key) DO UPDATE SET deliver_at = now(), next_attempt_at = now(),
			attempts = 0, last_error = '', routing_key = EXCLUDED.routing_key, type = EXCLUDED.type,
			correlation_id = EXCLUDED.correlation_id, causation_id = EXCLUDED.causation_id,
			traceparent = EXCLUDED.traceparent, headers = EXCLUDED.headers,
			body = EXCLUDED.body, occurred_at = EXCLUDED.occurred_at, updated_at = now()`, args...)
	if res.Error != nil {
		return fmt.Errorf("writing %d messages to the outbox: %w", len(ms), res.Error)
	}
	return nil
}

// Dispatches returns the first dispatch of each of messageIDs that went
// through the outbox, by message id; other messages are absent.
func (s *Store) Dispatches(ctx context.Context, messageIDs []string) (map[string]message.Dispatch, error) {
	return relay.Dispatches(ctx, s.db, table(), messageIDs)
}
