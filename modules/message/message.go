// Package message defines the envelope every gdpr message carries, independent
// of the broker that moves it.
package message

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/gdpr-oss/gdpr/modules/trace"
)

// Message is one event or command with the metadata docs/architecture.md requires.
type Message struct {
	// ID is unique per message and stable across re-publishes, so consumers deduplicate by it.
	ID string
	// Type names the event or command, e.g. "request.submitted".
	Type string
	// RoutingKey defaults to Type; commands to one participant use Type plus a suffix.
	RoutingKey string
	// CorrelationID is the data subject request's id.
	CorrelationID string
	// CausationID is the id of the message that caused this one.
	CausationID string
	OccurredAt  time.Time
	// Traceparent is the W3C trace context header value.
	Traceparent string
	// Headers carries extra string headers.
	Headers map[string]string
	// Body is the JSON payload.
	Body []byte

	// Redelivered and DeliveryCount are set on consumed messages.
	Redelivered   bool
	DeliveryCount int64
	// Retries counts the earlier attempts whose handler failed, and
	// FailingSince is when the first of them failed (zero before any); set on
	// consumed messages.
	Retries      int64
	FailingSince time.Time
}

// Key returns the routing key the message is published with.
func (m Message) Key() string {
	if m.RoutingKey != "" {
		return m.RoutingKey
	}
	return m.Type
}

// New builds a message of type typ with body marshalled to JSON. A non-nil
// cause supplies the correlation id, causation id and trace.
func New(typ string, body any, cause *Message) (Message, error) {
	raw, err := json.Marshal(body)
	if err != nil {
		return Message{}, fmt.Errorf("encoding %s body: %w", typ, err)
	}
	m := Message{
		ID:         uuid.NewString(),
		Type:       typ,
		OccurredAt: time.Now().UTC(),
		Body:       raw,
	}
	if cause != nil {
		m.CorrelationID = cause.CorrelationID
		m.CausationID = cause.ID
		m.Traceparent = trace.Child(cause.Traceparent)
	} else {
		m.Traceparent = trace.Child("")
	}
	return m, nil
}

// Decode unmarshals the body into v. Unknown fields are tolerated so that a
// newer minor version of a contract still decodes.
func (m Message) Decode(v any) error {
	if err := json.Unmarshal(m.Body, v); err != nil {
		return fmt.Errorf("decoding %s body: %w", m.Type, err)
	}
	return nil
}

// Dispatch is when a module that publishes stored messages (the outbox,
// the scheduler) published one: DeliverAt is when it was due, SentAt when
// the broker confirmed it.
type Dispatch struct {
	MessageID string
	DeliverAt time.Time
	SentAt    time.Time
}
