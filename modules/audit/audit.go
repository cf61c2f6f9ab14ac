// Package audit keeps the append-only record of every message on the bus and
// answers "what happened to request X, in which order, done by whom".
// Rows carry ids, outcomes and error classes only: subjects, emails, names
// and free text are dropped before anything is written.
package audit

import (
	"encoding/json"
	"time"

	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/trace"
)

// HeaderProducer names the role that produced a message. Producers may set
// it; when absent the role is derived from the message type.
const HeaderProducer = "x-gdpr-producer"

// Queue is the audit log's queue (without the prefix).
const Queue = "audit"

// Bindings are the routing keys that reach Queue: every message.
func Bindings() []string { return []string{"#"} }

// Event is one audited message.
type Event struct {
	MessageID   string         `json:"message_id"`
	Type        string         `json:"type"`
	RoutingKey  string         `json:"routing_key"`
	RequestID   string         `json:"request_id"`
	CausationID string         `json:"causation_id,omitempty"`
	Role        string         `json:"role,omitempty"`
	TraceID     string         `json:"trace_id,omitempty"`
	OccurredAt  time.Time      `json:"occurred_at"`
	ReceivedAt  time.Time      `json:"received_at"`
	Details     map[string]any `json:"details"`
	// DispatchedBy is "outbox" when the message went through the outbox
	// (published by the role that wrote it) and "scheduler" when it was a
	// delayed message; DeliverAt and DispatchedAt then tell when it was due
	// (written, for the outbox) and when it was published.
	DispatchedBy string     `json:"dispatched_by,omitempty"`
	DeliverAt    *time.Time `json:"deliver_at,omitempty"`
	DispatchedAt *time.Time `json:"dispatched_at,omitempty"`
}

// producer names the role that publishes a message type. The
// scheduler dispatches outbox entries on behalf of these roles; the role
// recorded is the one whose state change caused the message.
func producer(typ string) (string, bool) {
	switch typ {
	case event.TypeRequestSubmitted, event.TypeRequestDenied, event.TypeRequestExtended, event.TypeOperatorAction:
		return "serve", true
	case event.TypeRequestReceived, event.TypeRequestFailed, event.TypeReportReady, event.TypeNotificationSent, event.TypeErasureRequested:
		return "worker", true
	case event.TypeErasureCommand, event.TypeErasureOverdue, event.TypeErasureCompleted, event.TypeErasureFinished, event.TypeErasureCalled:
		return "canceller", true
	case event.TypeErasureConfirmed:
		return "participant", true
	}
	return "", false
}

// Known reports whether typ is a message type of the contract; other types
// are still audited, but metrics label them "other".
func Known(typ string) bool {
	_, ok := producer(typ)
	return ok
}

// allowed are the body fields copied into details: ids, counts, outcomes,
// error classes and times, an operator's configured name (staff acting
// on a request, which the audit log exists to prove; never a subject) and
// the configured name of the API client that submitted it. Everything else — subject, email, name, detail
// (free text from participants), nested bodies and headers — is dropped, so
// a field added to a contract later stays out of the audit log until it is
// deliberately allowed here.
func allowed(field string) bool {
	switch field {
	case "request_id", "type", "report_id", "bytes", "sha256", "ready_at", "submitted_at", "template", "participant", "outcome", "attempt", "attempts", "error_class", "http_status", "version", "action", "key", "deliver_at", "routing_key", "exchange",
		"verification_method", "verified_at", "regulation", "code", "extended_until", "operator", "reason_code", "client":
		return true
	}
	return false
}

// FromMessage builds the audit event of m, dropping personal data.
func FromMessage(m message.Message, receivedAt time.Time) Event {
	e := Event{
		MessageID:   m.ID,
		Type:        m.Type,
		RoutingKey:  m.Key(),
		RequestID:   m.CorrelationID,
		CausationID: m.CausationID,
		Role:        m.Headers[HeaderProducer],
		OccurredAt:  m.OccurredAt.UTC(),
		ReceivedAt:  receivedAt.UTC(),
		Details:     Details(m.Body),
	}
	if e.Role == "" {
		e.Role, _ = producer(m.Type)
	}
	if id, ok := trace.TraceID(m.Traceparent); ok {
		e.TraceID = id
	}
	if e.RequestID == "" {
		if id, ok := e.Details["request_id"].(string); ok {
			e.RequestID = id
		}
	}
	if e.OccurredAt.IsZero() {
		e.OccurredAt = e.ReceivedAt
	}
	return e
}

// Details returns the allowed scalar fields of a JSON object body. A body
// that is not a JSON object yields {"undecodable": true}: the event is still
// recorded, its content is not.
func Details(body []byte) map[string]any {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return map[string]any{"undecodable": true}
	}
	out := map[string]any{}
	for k, raw := range fields {
		if !allowed(k) {
			continue
		}
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			continue
		}
		switch v.(type) {
		case string, float64, bool:
			out[k] = v
		}
	}
	return out
}
