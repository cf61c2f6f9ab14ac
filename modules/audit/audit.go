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
	// DispatchedBy is "scheduler" when the message went through the
	// scheduler (a module's outbox or a delayed message); DeliverAt and
	// DispatchedAt then tell when it was due and when it was published.
	DispatchedBy string     `json:"dispatched_by,omitempty"`
	DeliverAt    *time.Time `json:"deliver_at,omitempty"`
	DispatchedAt *time.Time `json:"dispatched_at,omitempty"`
}

// producers maps each message type to the role that publishes it. The
// scheduler dispatches outbox entries on behalf of these roles; the role
// recorded is the one whose state change caused the message.
var producers = map[string]string{
	event.TypeRequestSubmitted: "serve",
	event.TypeRequestReceived:  "worker",
	event.TypeRequestFailed:    "worker",
	event.TypeReportReady:      "worker",
	event.TypeNotificationSent: "worker",
	event.TypeErasureRequested: "worker",
	event.TypeErasureCommand:   "canceller",
	event.TypeErasureOverdue:   "canceller",
	event.TypeErasureCompleted: "canceller",
	event.TypeErasureFinished:  "canceller",
	event.TypeErasureConfirmed: "participant",
	// An HTTP participant's answer, received and published by the canceller.
	event.TypeErasureCalled: "canceller",
	// The canceller's own re-send and overdue timers (modules/erasure).
	"erasure.timer":             "canceller",
	event.TypeSchedulerSchedule: "",
	event.TypeSchedulerCancel:   "",
}

// Known reports whether typ is a message type of the contract; other types
// are still audited, but metrics label them "other".
func Known(typ string) bool {
	_, ok := producers[typ]
	return ok
}

// allowed are the body fields copied into details: ids, counts, outcomes,
// error classes and times. Everything else — subject, email, name, detail
// (free text from participants), nested bodies and headers — is dropped, so
// a field added to a contract later stays out of the audit log until it is
// deliberately allowed here.
var allowed = map[string]bool{
	"request_id":   true,
	"type":         true,
	"report_id":    true,
	"bytes":        true,
	"sha256":       true,
	"ready_at":     true,
	"submitted_at": true,
	"template":     true,
	"participant":  true,
	"outcome":      true,
	"attempt":      true,
	"attempts":     true,
	"error_class":  true,
	"http_status":  true,
	"version":      true,
	"action":       true,
	"key":          true,
	"deliver_at":   true,
	"routing_key":  true,
	"exchange":     true,
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
		e.Role = producers[m.Type]
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
		if !allowed[k] {
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
