// Package scheduler keeps messages in PostgreSQL and publishes them when they
// are due: delayed erasure, re-sends, retries, and the transactional outbox
// of every module.
package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/modules/message"
)

// ErrInvalid marks an entry that cannot be scheduled.
var ErrInvalid = errors.New("scheduler: invalid entry")

// Entry is one message to publish at DeliverAt.
type Entry struct {
	// Key is unique: scheduling the same key again replaces a pending entry.
	Key string
	// DeliverAt is when to publish; zero or past means now.
	DeliverAt time.Time
	// Exchange is empty for the main exchange.
	Exchange string
	Message  message.Message
}

// Store writes and cancels entries. It holds no state besides the database.
type Store struct {
	db *gorm.DB
}

// NewStore returns a store over db.
func NewStore(db *gorm.DB) *Store { return &Store{db: db} }

// Schedule upserts e. Pass the caller's transaction as tx so the entry
// commits or rolls back with the caller's own state change; nil uses the
// store's database.
func (s *Store) Schedule(ctx context.Context, tx *gorm.DB, e Entry) error {
	if tx == nil {
		tx = s.db
	}
	m := e.Message
	switch {
	case e.Key == "":
		return fmt.Errorf("%w: key is empty", ErrInvalid)
	case m.ID == "":
		return fmt.Errorf("%w: message id is empty", ErrInvalid)
	case m.Key() == "":
		return fmt.Errorf("%w: routing key is empty", ErrInvalid)
	}
	headers, err := json.Marshal(nonNil(m.Headers))
	if err != nil {
		return fmt.Errorf("encoding headers of %s: %w", e.Key, err)
	}
	occurred := m.OccurredAt
	if occurred.IsZero() {
		occurred = time.Now().UTC()
	}
	// A zero DeliverAt becomes the database's now(), so "due" is judged by
	// one clock only.
	var deliverAt any = e.DeliverAt
	if e.DeliverAt.IsZero() {
		deliverAt = gorm.Expr("now()")
	}
	res := tx.WithContext(ctx).Exec(`
		INSERT INTO scheduled_messages (key, message_id, deliver_at, exchange, routing_key, type,
			correlation_id, causation_id, traceparent, headers, body, occurred_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (key) DO UPDATE SET message_id = EXCLUDED.message_id,
			deliver_at = EXCLUDED.deliver_at, exchange = EXCLUDED.exchange,
			routing_key = EXCLUDED.routing_key, type = EXCLUDED.type,
			correlation_id = EXCLUDED.correlation_id, causation_id = EXCLUDED.causation_id,
			traceparent = EXCLUDED.traceparent, headers = EXCLUDED.headers,
			body = EXCLUDED.body, occurred_at = EXCLUDED.occurred_at, updated_at = now()`,
		e.Key, m.ID, deliverAt, e.Exchange, m.Key(), m.Type, m.CorrelationID, m.CausationID,
		m.Traceparent, string(headers), m.Body, occurred)
	if res.Error != nil {
		return fmt.Errorf("scheduling %s: %w", e.Key, res.Error)
	}
	return nil
}

// Enqueue is the outbox: it schedules m for immediate publication inside tx.
func (s *Store) Enqueue(ctx context.Context, tx *gorm.DB, m message.Message) error {
	return s.Schedule(ctx, tx, Entry{Key: "outbox:" + m.ID, Message: m})
}

// Cancel removes the pending entry with key; it reports whether one existed.
func (s *Store) Cancel(ctx context.Context, tx *gorm.DB, key string) (bool, error) {
	if tx == nil {
		tx = s.db
	}
	res := tx.WithContext(ctx).Exec(`DELETE FROM scheduled_messages WHERE key = ?`, key)
	if res.Error != nil {
		return false, fmt.Errorf("cancelling %s: %w", key, res.Error)
	}
	return res.RowsAffected > 0, nil
}

func nonNil(h map[string]string) map[string]string {
	if h == nil {
		return map[string]string{}
	}
	return h
}
