package audit

import (
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/message"
)

// ErrNoEvents means the audit log holds nothing for a request.
var ErrNoEvents = errors.New("audit: no events for request")

// Dispatches tells when messages went through a module's table of
// published messages (outbox.Store, scheduler.Store), for timelines.
type Dispatches interface {
	Dispatches(ctx context.Context, messageIDs []string) (map[string]message.Dispatch, error)
}

// Dispatcher names a module whose Dispatches a timeline shows
// (Event.DispatchedBy).
type Dispatcher struct {
	By  string
	Log Dispatches
}

// Store writes and reads the audit table. It holds no state besides the database.
type Store struct {
	db          *gorm.DB
	dispatchers []Dispatcher
}

// NewStore returns a store over db. Timelines show when and by which
// dispatcher each message was published (the earliest, when several
// were); a store that only records needs none.
func NewStore(db *gorm.DB, dispatchers ...Dispatcher) *Store {
	return &Store{db: db, dispatchers: dispatchers}
}

// Record appends e unless its message id is already recorded; it reports
// whether a row was written. Redeliveries and re-publishes of one message
// (same id) therefore leave one row.
func (s *Store) Record(ctx context.Context, e Event) (bool, error) {
	fresh, err := s.RecordBatch(ctx, []Event{e})
	if err != nil {
		return false, err
	}
	return fresh[0], nil
}

// RecordBatch appends the events whose message ids are not recorded yet, in
// one statement (one commit), and reports for each event whether its row
// was written by this call. An id that appears twice in events is written
// once and reported fresh for its first occurrence only.
func (s *Store) RecordBatch(ctx context.Context, events []Event) ([]bool, error) {
	if len(events) == 0 {
		return nil, nil
	}
	var sql strings.Builder
	sql.WriteString(`INSERT INTO audit_events (message_id, type, routing_key, request_id, causation_id, role,
			trace_id, occurred_at, received_at, details) VALUES `)
	args := make([]any, 0, len(events)*10)
	for i, e := range events {
		details, err := json.Marshal(e.Details)
		if err != nil {
			return nil, fmt.Errorf("encoding audit details of %s: %w", e.MessageID, err)
		}
		if e.ReceivedAt.IsZero() {
			e.ReceivedAt = time.Now().UTC()
		}
		if i > 0 {
			sql.WriteString(", ")
		}
		sql.WriteString("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
		args = append(args, e.MessageID, e.Type, e.RoutingKey, e.RequestID, e.CausationID, e.Role,
			e.TraceID, e.OccurredAt, e.ReceivedAt, string(details))
	}
	sql.WriteString(" ON CONFLICT (message_id) DO NOTHING RETURNING message_id")
	var written []string
	if err := s.db.WithContext(ctx).Raw(sql.String(), args...).Scan(&written).Error; err != nil {
		return nil, fmt.Errorf("recording %d audit events (first %s): %w", len(events), events[0].MessageID, err)
	}
	isNew := make(map[string]bool, len(written))
	for _, id := range written {
		isNew[id] = true
	}
	fresh := make([]bool, len(events))
	for i, e := range events {
		fresh[i] = isNew[e.MessageID]
		delete(isNew, e.MessageID)
	}
	return fresh, nil
}

type row struct {
	Seq         int64
	MessageID   string
	Type        string
	RoutingKey  string
	RequestID   string
	CausationID string
	Role        string
	TraceID     string
	OccurredAt  time.Time
	ReceivedAt  time.Time
	Details     []byte
}

// Timeline returns every event of a request in causal order: an event never
// comes before the event that caused it, and otherwise events follow
// occurred_at. Clocks of different machines may disagree; causation wins.
func (s *Store) Timeline(ctx context.Context, requestID string) ([]Event, error) {
	var rows []row
	err := s.db.WithContext(ctx).Raw(`
		SELECT seq, message_id, type, routing_key, request_id, causation_id, role,
			trace_id, occurred_at, received_at, details
		FROM audit_events WHERE request_id = ? ORDER BY occurred_at, seq`, requestID).Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("reading timeline of %s: %w", requestID, err)
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("%w %s", ErrNoEvents, requestID)
	}
	dispatched, err := s.dispatched(ctx, rows)
	if err != nil {
		return nil, fmt.Errorf("reading timeline of %s: %w", requestID, err)
	}
	events := make([]Event, len(rows))
	for i, r := range rows {
		e := Event{
			MessageID: r.MessageID, Type: r.Type, RoutingKey: r.RoutingKey, RequestID: r.RequestID,
			CausationID: r.CausationID, Role: r.Role, TraceID: r.TraceID,
			OccurredAt: r.OccurredAt.UTC(), ReceivedAt: r.ReceivedAt.UTC(),
		}
		if d, ok := dispatched[r.MessageID]; ok {
			e.DispatchedBy = d.by
			sent, due := d.SentAt.UTC(), d.DeliverAt.UTC()
			e.DispatchedAt, e.DeliverAt = &sent, &due
		}
		if err := json.Unmarshal(r.Details, &e.Details); err != nil {
			return nil, fmt.Errorf("decoding audit details of %s: %w", r.MessageID, err)
		}
		events[i] = e
	}
	return CausalOrder(events), nil
}

type dispatch struct {
	message.Dispatch
	by string
}

// dispatched returns each row's earliest dispatch among the dispatchers'.
func (s *Store) dispatched(ctx context.Context, rows []row) (map[string]dispatch, error) {
	out := map[string]dispatch{}
	if len(s.dispatchers) == 0 {
		return out, nil
	}
	ids := make([]string, len(rows))
	for i, r := range rows {
		ids[i] = r.MessageID
	}
	for _, d := range s.dispatchers {
		got, err := d.Log.Dispatches(ctx, ids)
		if err != nil {
			return nil, err
		}
		for id, m := range got {
			if prev, ok := out[id]; !ok || m.SentAt.Before(prev.SentAt) {
				out[id] = dispatch{m, d.By}
			}
		}
	}
	return out, nil
}

// CausalOrder sorts events so that each comes after its cause (when the
// cause is among them) and, among events whose causes have been placed, the
// earliest occurred_at comes first. Input order breaks ties.
func CausalOrder(events []Event) []Event {
	index := make(map[string]int, len(events))
	for i, e := range events {
		index[e.MessageID] = i
	}
	children := make(map[int][]int, len(events))
	ready := &eventHeap{events: events}
	for i, e := range events {
		parent, ok := index[e.CausationID]
		if ok && parent != i {
			children[parent] = append(children[parent], i)
			continue
		}
		ready.items = append(ready.items, i)
	}
	heap.Init(ready)
	out := make([]Event, 0, len(events))
	placed := make([]bool, len(events))
	for ready.Len() > 0 {
		i := heap.Pop(ready).(int)
		placed[i] = true
		out = append(out, events[i])
		for _, c := range children[i] {
			heap.Push(ready, c)
		}
	}
	// A causation cycle (only possible with forged ids) would leave events
	// unplaced; append them rather than lose them.
	for i := range events {
		if !placed[i] {
			out = append(out, events[i])
		}
	}
	return out
}

type eventHeap struct {
	events []Event
	items  []int
}

func (h *eventHeap) Len() int { return len(h.items) }
func (h *eventHeap) Less(a, b int) bool {
	ea, eb := h.events[h.items[a]], h.events[h.items[b]]
	if !ea.OccurredAt.Equal(eb.OccurredAt) {
		return ea.OccurredAt.Before(eb.OccurredAt)
	}
	return h.items[a] < h.items[b]
}
func (h *eventHeap) Swap(a, b int) { h.items[a], h.items[b] = h.items[b], h.items[a] }
func (h *eventHeap) Push(x any)    { h.items = append(h.items, x.(int)) }
func (h *eventHeap) Pop() any {
	old := h.items
	n := len(old)
	x := old[n-1]
	h.items = old[:n-1]
	return x
}

// SubmittedSince returns the request ids of the request.submitted events
// that occurred at or after since.
func (s *Store) SubmittedSince(ctx context.Context, since time.Time) ([]string, error) {
	var ids []string
	if err := s.db.WithContext(ctx).Raw(`SELECT DISTINCT request_id FROM audit_events
		WHERE type = ? AND occurred_at >= ? AND request_id <> ''`, event.TypeRequestSubmitted, since).
		Scan(&ids).Error; err != nil {
		return nil, fmt.Errorf("listing requests submitted since %s: %w", since, err)
	}
	return ids, nil
}

// Stage is what the audit log holds of one message type of one request.
type Stage struct {
	RequestID string
	// Type is the message type.
	Type string
	// Kind is the request type a request.submitted event carries.
	Kind string
	// First and Last are the earliest and latest occurred_at of the type.
	First time.Time
	Last  time.Time
}

// Stages returns, for every one of requestIDs, one Stage per message type
// the audit log holds for it.
func (s *Store) Stages(ctx context.Context, requestIDs []string) ([]Stage, error) {
	list, err := json.Marshal(requestIDs)
	if err != nil {
		return nil, fmt.Errorf("encoding request ids: %w", err)
	}
	var out []Stage
	if err := s.db.WithContext(ctx).Raw(`
		SELECT request_id, type, COALESCE(max(details->>'type'), '') AS kind,
			max(occurred_at) AS last, min(occurred_at) AS first
		FROM audit_events WHERE request_id IN (SELECT jsonb_array_elements_text(?::jsonb))
			-- A receipt is not the email a request owes at its end. IS NOT
			-- DISTINCT FROM: an event without a template (recorded before
			-- receipts existed) must stay, not turn the test NULL.
			AND NOT (type = ? AND details->>'template' IS NOT DISTINCT FROM 'request_received')
		GROUP BY request_id, type`, string(list), event.TypeNotificationSent).Scan(&out).Error; err != nil {
		return nil, fmt.Errorf("reading audit stages of %d requests: %w", len(requestIDs), err)
	}
	return out, nil
}
