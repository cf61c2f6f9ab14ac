package relay

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/modules/message"
)

// Row is a message as every relay table holds it (outbox_messages and
// scheduled_messages share these columns): what the owner's insert writes
// and the relay's claim reads back. Defaults are filled in once, here, so
// both tables store an unset field the same way.
type Row struct {
	MessageID     string
	RoutingKey    string
	Type          string
	CorrelationID string
	CausationID   string
	Traceparent   string
	// Headers is the JSON object of the message's headers ({} when none).
	Headers string
	// Body is never nil: the column is NOT NULL.
	Body []byte
	// OccurredAt is the message's, or now when it has none.
	OccurredAt time.Time
}

// NewRow encodes m for a relay table. An empty type becomes the routing
// key, as the consumer's dispatch would read it.
func NewRow(m message.Message) (Row, error) {
	headers := m.Headers
	if headers == nil {
		headers = map[string]string{}
	}
	h, err := json.Marshal(headers)
	if err != nil {
		return Row{}, err
	}
	r := Row{
		MessageID: m.ID, RoutingKey: m.Key(), Type: m.Type, CorrelationID: m.CorrelationID,
		CausationID: m.CausationID, Traceparent: m.Traceparent, Headers: string(h), Body: m.Body, OccurredAt: m.OccurredAt,
	}
	if r.OccurredAt.IsZero() {
		r.OccurredAt = time.Now().UTC()
	}
	if r.Type == "" {
		r.Type = r.RoutingKey
	}
	if r.Body == nil {
		r.Body = []byte{}
	}
	return r, nil
}

// Dispatches returns the first dispatch of each of messageIDs recorded in
// t's history (t.Sent), by message id; other messages are absent. The
// table's owner calls it with its own Table.
func Dispatches(ctx context.Context, db *gorm.DB, t Table, messageIDs []string) (map[string]message.Dispatch, error) {
	list, err := json.Marshal(messageIDs)
	if err != nil {
		return nil, fmt.Errorf("encoding message ids: %w", err)
	}
	var rows []message.Dispatch
	// t.Sent is a name the table's owner declares, never input.
	if err := db.WithContext(ctx).Raw(`
		SELECT DISTINCT ON (message_id) message_id, deliver_at, sent_at FROM `+t.Sent+`
		WHERE message_id IN (SELECT jsonb_array_elements_text(?::jsonb))
		ORDER BY message_id, sent_at`, string(list)).Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("reading the dispatches of %d messages: %w", len(messageIDs), err)
	}
	out := make(map[string]message.Dispatch, len(rows))
	for _, r := range rows {
		out[r.MessageID] = r
	}
	return out, nil
}
