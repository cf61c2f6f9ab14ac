// Package scheduler keeps delayed messages in PostgreSQL and publishes them
// when they are due: the email system's erasure delay, re-sends, retries,
// and what scheduler.schedule commands ask for. Messages published at once
// are not its business: they go through modules/outbox, relayed by the role
// that wrote them, so they do not depend on the scheduler role.
package scheduler

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/relay"
)

// Errors callers test with errors.Is.
var (
	// ErrInvalid marks an entry that cannot be scheduled.
	ErrInvalid = errors.New("scheduler: invalid entry")
	// ErrNotFound means no pending or sent message has the key.
	ErrNotFound = errors.New("scheduler: no such key")
)

// Entry is one message to publish at DeliverAt.
type Entry struct {
	// Key is unique: scheduling the same key again replaces a pending entry.
	Key string
	// DeliverAt is when to publish; zero or past means now (by the database clock).
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
	r, err := relay.NewRow(m)
	if err != nil {
		return fmt.Errorf("encoding headers of %s: %w", e.Key, err)
	}
	// A zero or past DeliverAt becomes the database's now(), so "due" is
	// judged by one clock only and lateness is measured from when the
	// message was really scheduled.
	var deliverAt any
	if !e.DeliverAt.IsZero() {
		deliverAt = e.DeliverAt
	}
	res := tx.WithContext(ctx).Exec(`
		INSERT INTO scheduled_messages (key, message_id, deliver_at, next_attempt_at, exchange,
			routing_key, type, correlation_id, causation_id, traceparent, headers, body, occurred_at)
		VALUES (?, ?, GREATEST(?::timestamptz, now()), GREATEST(?::timestamptz, now()), ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (key) DO UPDATE SET message_id = EXCLUDED.message_id,
			deliver_at = EXCLUDED.deliver_at, next_attempt_at = EXCLUDED.next_attempt_at,
			attempts = 0, last_error = '', exchange = EXCLUDED.exchange,
			routing_key = EXCLUDED.routing_key, type = EXCLUDED.type,
			correlation_id = EXCLUDED.correlation_id, causation_id = EXCLUDED.causation_id,
			traceparent = EXCLUDED.traceparent, headers = EXCLUDED.headers,
			body = EXCLUDED.body, occurred_at = EXCLUDED.occurred_at, updated_at = now()`,
		e.Key, r.MessageID, deliverAt, deliverAt, e.Exchange, r.RoutingKey, r.Type, r.CorrelationID, r.CausationID,
		r.Traceparent, r.Headers, r.Body, r.OccurredAt)
	if res.Error != nil {
		return fmt.Errorf("scheduling %s: %w", e.Key, res.Error)
	}
	return nil
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

// Status is what an operator sees of one key: pending or already sent.
type Status struct {
	Key           string     `json:"key"`
	State         string     `json:"state"` // "pending" or "sent"
	MessageID     string     `json:"message_id"`
	Type          string     `json:"type"`
	Exchange      string     `json:"exchange"`
	RoutingKey    string     `json:"routing_key"`
	CorrelationID string     `json:"correlation_id,omitempty"`
	DeliverAt     time.Time  `json:"deliver_at"`
	Attempts      int        `json:"attempts"`
	LastError     string     `json:"last_error,omitempty"`
	SentAt        *time.Time `json:"sent_at,omitempty"`
}

// List returns up to limit pending entries, earliest first, with key >= after
// when after is set (for paging).
func (s *Store) List(ctx context.Context, limit int, after string) ([]Status, error) {
	var out []Status
	err := s.db.WithContext(ctx).Raw(`
		SELECT key, 'pending' AS state, message_id, type, exchange, routing_key, correlation_id,
			deliver_at, attempts, last_error, NULL::timestamptz AS sent_at
		FROM scheduled_messages WHERE key > ? ORDER BY next_attempt_at, key LIMIT ?`, after, limit).
		Scan(&out).Error
	if err != nil {
		return nil, fmt.Errorf("listing scheduled messages: %w", err)
	}
	return out, nil
}

// Get returns the pending entry with key, or else its latest sent record;
// ErrNotFound when there is neither.
func (s *Store) Get(ctx context.Context, key string) (Status, error) {
	var out []Status
	err := s.db.WithContext(ctx).Raw(`
		SELECT * FROM (
			SELECT key, 'pending' AS state, message_id, type, exchange, routing_key, correlation_id,
				deliver_at, attempts, last_error, NULL::timestamptz AS sent_at
			FROM scheduled_messages WHERE key = ?
			UNION ALL
			(SELECT key, 'sent', message_id, type, exchange, routing_key, correlation_id,
				deliver_at, attempts, '', sent_at
			FROM scheduled_messages_sent WHERE key = ? ORDER BY sent_at DESC LIMIT 1)
		) s ORDER BY state LIMIT 1`, key, key).Scan(&out).Error
	if err != nil {
		return Status{}, fmt.Errorf("reading scheduled message %s: %w", key, err)
	}
	if len(out) == 0 {
		return Status{}, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	return out[0], nil
}

// Dispatches returns the first dispatch of each of messageIDs that went
// through the scheduler, by message id; other messages are absent.
func (s *Store) Dispatches(ctx context.Context, messageIDs []string) (map[string]message.Dispatch, error) {
	return relay.Dispatches(ctx, s.db, table(), messageIDs)
}
