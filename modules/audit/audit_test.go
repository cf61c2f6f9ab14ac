package audit_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/modules/audit"
	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/outbox"
	"github.com/gdpr-oss/gdpr/modules/scheduler"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

const (
	subjectEmail = "jane.doe.audit@example.org"
	subjectID    = "subject-4711"
	subjectName  = "Jane Audit Doe"
)

func mustMessage(t *testing.T, typ string, body any, cause *message.Message) message.Message {
	t.Helper()
	m, err := message.New(typ, body, cause)
	require.NoError(t, err)
	return m
}

// chain is a realistic erasure plus access path of one request, as the
// roles publish it: each message caused by the one before it.
type chain struct {
	requestID string
	messages  []message.Message
}

func realisticChain(t *testing.T, kind string) chain {
	t.Helper()
	id := uuid.NewString()
	subject := event.Subject{ID: subjectID, Email: subjectEmail}
	submitted := mustMessage(t, event.TypeRequestSubmitted, event.RequestSubmitted{RequestID: id, Type: kind, Subject: subject, SubmittedAt: time.Now()}, nil)
	submitted.CorrelationID = id
	received := mustMessage(t, event.TypeRequestReceived, event.RequestReceived{RequestID: id, Type: kind}, &submitted)
	c := chain{requestID: id, messages: []message.Message{submitted, received}}
	if kind == event.KindAccess {
		ready := mustMessage(t, event.TypeReportReady, event.ReportReady{RequestID: id, ReportID: "rep-" + id, Bytes: 1234, SHA256: "abc", ReadyAt: time.Now()}, &received)
		sent := mustMessage(t, event.TypeNotificationSent, event.NotificationSent{RequestID: id, Template: "report_ready"}, &ready)
		c.messages = append(c.messages, ready, sent)
		return c
	}
	requested := mustMessage(t, event.TypeErasureRequested, event.ErasureRequested{RequestID: id, Subject: subject}, &received)
	command := mustMessage(t, event.TypeErasureCommand, event.ErasureCommand{Version: 1, RequestID: id, Participant: "billing", Subject: subject, Attempt: 1}, &requested)
	command.RoutingKey = event.TypeErasureCommand + ".billing"
	confirmed := mustMessage(t, event.TypeErasureConfirmed, event.ErasureConfirmed{Version: 1, RequestID: id, Participant: "billing", Outcome: event.OutcomeErased, Detail: "deleted rows of " + subjectName}, &command)
	completed := mustMessage(t, event.TypeErasureCompleted, event.ErasureCompleted{RequestID: id}, &confirmed)
	sent := mustMessage(t, event.TypeNotificationSent, event.NotificationSent{RequestID: id, Template: "erasure_completed"}, &completed)
	emailCmd := mustMessage(t, event.TypeErasureCommand, event.ErasureCommand{Version: 1, RequestID: id, Participant: "email", Subject: subject, Attempt: 1}, &completed)
	emailCmd.RoutingKey = event.TypeErasureCommand + ".email"
	// Postponed through the scheduler so the "deleted" email goes out first.
	emailCmd.OccurredAt = emailCmd.OccurredAt.Add(10 * time.Second)
	emailConfirmed := mustMessage(t, event.TypeErasureConfirmed, event.ErasureConfirmed{Version: 1, RequestID: id, Participant: "email", Outcome: event.OutcomeNotFound}, &emailCmd)
	finished := mustMessage(t, event.TypeErasureFinished, event.ErasureFinished{RequestID: id}, &emailConfirmed)
	c.messages = append(c.messages, requested, command, confirmed, completed, sent, emailCmd, emailConfirmed, finished)
	return c
}

func TestDetailsKeepIDsAndOutcomesDropPersonalData(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{event.KindAccess, event.KindErasure} {
		for _, m := range realisticChain(t, kind).messages {
			e := audit.FromMessage(m, time.Now())
			raw, err := json.Marshal(e)
			require.NoError(t, err)
			for _, pii := range []string{subjectEmail, subjectID, subjectName, "subject"} {
				require.NotContains(t, string(raw), pii, "%s audit event leaks %q", m.Type, pii)
			}
			require.Equal(t, m.CorrelationID, e.RequestID)
			require.Equal(t, m.CausationID, e.CausationID)
			require.NotEmpty(t, e.Role, m.Type)
			require.NotEmpty(t, e.TraceID, m.Type)
		}
	}
	cases := []struct {
		name string
		body string
		want map[string]any
	}{
		{"confirmation keeps outcome, drops free text", `{"request_id":"r","participant":"billing","outcome":"failed","detail":"jane@example.org not found"}`,
			map[string]any{"request_id": "r", "participant": "billing", "outcome": "failed"}},
		{"failure keeps error class and attempts", `{"request_id":"r","attempts":5,"error_class":"source_timeout"}`,
			map[string]any{"request_id": "r", "attempts": float64(5), "error_class": "source_timeout"}},
		{"nested values are dropped even under allowed names", `{"request_id":{"email":"x@y.z"},"type":"access"}`,
			map[string]any{"type": "access"}},
		{"scheduler command keeps key and due time, drops the wrapped body", `{"key":"k1","deliver_at":"2026-01-01T00:00:00Z","routing_key":"erasure.command.email","body":"eyJlbWFpbCI6ImpAeC55In0=","headers":{"a":"b"}}`,
			map[string]any{"key": "k1", "deliver_at": "2026-01-01T00:00:00Z", "routing_key": "erasure.command.email"}},
		{"HTTP participant's call keeps outcome, status and attempt", `{"request_id":"r","participant":"partner","attempt":1,"outcome":"erased","http_status":204}`,
			map[string]any{"request_id": "r", "participant": "partner", "attempt": float64(1), "outcome": "erased", "http_status": float64(204)}},
		{"undecodable body is marked, not copied", `not json jane@example.org`, map[string]any{"undecodable": true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, audit.Details([]byte(tc.body)))
		})
	}
	called := mustMessage(t, event.TypeErasureCalled, event.ErasureCalled{RequestID: "r", Participant: "partner", Attempt: 1, Outcome: event.OutcomeErased, HTTPStatus: 204}, nil)
	require.Equal(t, "canceller", audit.FromMessage(called, time.Now()).Role, "the canceller makes HTTP calls")
	require.True(t, audit.Known(event.TypeErasureCalled))
}

func TestCausalOrderPutsCausesFirstDespiteClockSkew(t *testing.T) {
	t.Parallel()
	base := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	ev := func(id, cause string, offset time.Duration) audit.Event {
		return audit.Event{MessageID: id, CausationID: cause, OccurredAt: base.Add(offset)}
	}
	// The worker's clock runs 2s behind serve's; b and c are siblings.
	in := []audit.Event{
		ev("c", "received", 3*time.Second),
		ev("received", "submitted", -2*time.Second),
		ev("b", "received", 1*time.Second),
		ev("d", "b", 500*time.Millisecond),
		ev("submitted", "", 0),
		ev("orphan", "elsewhere", -time.Hour),
	}
	var got []string
	for _, e := range audit.CausalOrder(in) {
		got = append(got, e.MessageID)
	}
	require.Equal(t, []string{"orphan", "submitted", "received", "b", "d", "c"}, got)
}

// auditBus runs a real audit consumer on its own AMQP prefix and database.
func auditBus(t *testing.T) (*bus.Publisher, *audit.Store, *prometheus.Registry, *gorm.DB) {
	t.Helper()
	return auditBusLogging(t, testkit.Logger(t))
}

func auditBusLogging(t *testing.T, logger *slog.Logger) (*bus.Publisher, *audit.Store, *prometheus.Registry, *gorm.DB) {
	t.Helper()
	gdb, _ := testkit.Postgres(t)
	cfg := testkit.AMQP(t)
	topo := bus.Topology{Queues: []bus.Queue{{Name: "audit", Bindings: []string{"#"}}}}
	conn := testkit.Bus(t, cfg, topo)
	store := audit.NewStore(gdb, audit.Dispatcher{By: "outbox", Log: outbox.NewStore(gdb)},
		audit.Dispatcher{By: "scheduler", Log: scheduler.NewStore(gdb)})
	reg := prometheus.NewRegistry()
	rec := audit.NewRecorder(store, reg, testkit.Logger(t))
	consumer := bus.NewConsumer(conn, bus.ConsumerOptions{Queue: "audit", Concurrency: 4}, rec.Handle, logger)
	require.NoError(t, consumer.Start(t.Context()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = consumer.Stop(ctx)
	})
	pub := bus.NewPublisher(conn)
	t.Cleanup(func() { _ = pub.Close() })
	return pub, store, reg, gdb
}

func timelineLen(t *testing.T, store *audit.Store, id string) int {
	events, err := store.Timeline(context.Background(), id)
	if err != nil {
		return 0
	}
	return len(events)
}

func TestConsumerRecordsEachMessageOnceWithoutPersonalData(t *testing.T) {
	t.Parallel()
	pub, store, reg, _ := auditBus(t)
	ctx := t.Context()
	c := realisticChain(t, event.KindErasure)
	for _, m := range c.messages {
		require.NoError(t, pub.Publish(ctx, m))
	}
	// Re-publishes of the same message (outbox retry, scheduler crash) and a
	// second copy of the first message.
	for _, m := range c.messages[:3] {
		require.NoError(t, pub.Publish(ctx, m))
	}
	testkit.Eventually(t, 20*time.Second, func() bool {
		return counterSum(t, reg, "gdpr_audit_events_total") == float64(len(c.messages))
	}, "audit consumer recorded %d messages", len(c.messages))
	// The duplicates were delivered after the originals on the same queue;
	// wait until the queue is drained before counting rows.
	testkit.Eventually(t, 20*time.Second, func() bool {
		return timelineLen(t, store, c.requestID) == len(c.messages)
	}, "timeline has every message")

	events, err := store.Timeline(ctx, c.requestID)
	require.NoError(t, err)
	require.Len(t, events, len(c.messages), "one row per message id")
	raw, err := json.Marshal(events)
	require.NoError(t, err)
	for _, pii := range []string{subjectEmail, subjectID, subjectName} {
		require.NotContains(t, string(raw), pii)
	}
	// Direct re-recording of an existing id writes nothing.
	fresh, err := store.Record(ctx, audit.FromMessage(c.messages[0], time.Now()))
	require.NoError(t, err)
	require.False(t, fresh)
}

// counterSum is the sum of a counter family's values in reg.
func counterSum(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

func TestTimelineListsEventsInCausalOrderAcrossRoles(t *testing.T) {
	t.Parallel()
	pub, store, _, gdb := auditBus(t)
	ctx := t.Context()
	c := realisticChain(t, event.KindErasure)
	// Each role stamps occurred_at with its own clock: skew the canceller's
	// 3s behind so wall-clock order alone would be wrong.
	for i := range c.messages {
		if audit.FromMessage(c.messages[i], time.Now()).Role == "canceller" {
			c.messages[i].OccurredAt = c.messages[i].OccurredAt.Add(-3 * time.Second)
		}
	}
	// Publish in reverse: arrival order must not matter either.
	for i := len(c.messages) - 1; i >= 0; i-- {
		require.NoError(t, pub.Publish(ctx, c.messages[i]))
	}
	other := realisticChain(t, event.KindAccess)
	for _, m := range other.messages {
		require.NoError(t, pub.Publish(ctx, m))
	}
	testkit.Eventually(t, 20*time.Second, func() bool {
		return timelineLen(t, store, c.requestID) == len(c.messages) && timelineLen(t, store, other.requestID) == len(other.messages)
	}, "both timelines complete")

	// The email system's command went through the scheduler after its delay.
	var emailCmd message.Message
	for _, m := range c.messages {
		if m.Key() == event.TypeErasureCommand+".email" {
			emailCmd = m
		}
	}
	require.NoError(t, gdb.Exec(`INSERT INTO scheduled_messages_sent (key, message_id, deliver_at, sent_at, attempts, exchange, routing_key, type, correlation_id)
		VALUES (?, ?, now(), now(), 1, '', ?, ?, ?)`, "erasure:"+c.requestID+":email", emailCmd.ID, emailCmd.Key(), emailCmd.Type, c.requestID).Error)
	// The first message went through the outbox of the role that wrote it.
	first := c.messages[0]
	require.NoError(t, gdb.Exec(`INSERT INTO outbox_messages_sent (key, message_id, deliver_at, sent_at, attempts, exchange, routing_key, type, correlation_id)
		VALUES (?, ?, now(), now(), 1, '', ?, ?, ?)`, first.ID, first.ID, first.Key(), first.Type, c.requestID).Error)

	mux := http.NewServeMux()
	mux.Handle("GET /v1/admin/requests/{id}/timeline", audit.TimelineHandler(store, testkit.Logger(t)))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	resp, err := http.Get(srv.URL + "/v1/admin/requests/" + c.requestID + "/timeline")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var body audit.TimelineResponse
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	require.Len(t, body.Events, len(c.messages))
	var gotTypes, wantTypes, roles []string
	seen := map[string]bool{}
	for i, e := range body.Events {
		require.Equal(t, c.requestID, e.RequestID)
		if e.CausationID != "" {
			require.True(t, seen[e.CausationID], "event %d (%s) listed before its cause", i, e.RoutingKey)
		}
		seen[e.MessageID] = true
		switch e.MessageID {
		case emailCmd.ID:
			require.Equal(t, "scheduler", e.DispatchedBy)
			require.NotNil(t, e.DispatchedAt)
		case first.ID:
			require.Equal(t, "outbox", e.DispatchedBy)
			require.NotNil(t, e.DispatchedAt)
		default:
			require.Empty(t, e.DispatchedBy)
		}
		gotTypes = append(gotTypes, e.RoutingKey)
		roles = append(roles, e.Role)
	}
	for _, m := range c.messages {
		wantTypes = append(wantTypes, m.Key())
	}
	require.Equal(t, wantTypes, gotTypes)
	require.Subset(t, roles, []string{"serve", "worker", "canceller", "participant"})

	for _, tc := range []struct {
		id     string
		status int
	}{{uuid.NewString(), http.StatusNotFound}, {"not-a-uuid", http.StatusBadRequest}} {
		resp, err := http.Get(fmt.Sprintf("%s/v1/admin/requests/%s/timeline", srv.URL, tc.id))
		require.NoError(t, err)
		var e map[string]string
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&e))
		resp.Body.Close()
		require.Equal(t, tc.status, resp.StatusCode)
		require.Equal(t, "id", e["field"])
		require.False(t, strings.Contains(e["error"], subjectEmail))
	}
}

func TestAuditTableIsAppendOnly(t *testing.T) {
	t.Parallel()
	gdb, _ := testkit.Postgres(t)
	store := audit.NewStore(gdb)
	m := mustMessage(t, event.TypeRequestReceived, event.RequestReceived{RequestID: "r1", Type: "access"}, nil)
	fresh, err := store.Record(t.Context(), audit.FromMessage(m, time.Now()))
	require.NoError(t, err)
	require.True(t, fresh)
	require.ErrorContains(t, gdb.Exec(`UPDATE audit_events SET type = 'x'`).Error, "append-only")
	require.ErrorContains(t, gdb.Exec(`DELETE FROM audit_events`).Error, "append-only")
}

func TestMessageWithoutIDIsDeadLettered(t *testing.T) {
	t.Parallel()
	gdb, _ := testkit.Postgres(t)
	rec := audit.NewRecorder(audit.NewStore(gdb), prometheus.NewRegistry(), testkit.Logger(t))
	err := rec.Handle(t.Context(), message.Message{Type: event.TypeRequestReceived, Body: []byte(`{}`)})
	require.ErrorIs(t, err, message.ErrPermanent)
}

func TestConsumerLosesNothingWhileTheDatabaseRefuses(t *testing.T) {
	t.Parallel()
	var logs testkit.Buffer
	pub, store, reg, gdb := auditBusLogging(t, slog.New(slog.NewTextHandler(&logs, nil)))
	ctx := t.Context()
	// Break our own database: the audit table is gone while events arrive.
	require.NoError(t, gdb.Exec(`ALTER TABLE audit_events RENAME TO audit_events_away`).Error)
	c := realisticChain(t, event.KindAccess)
	for _, m := range c.messages {
		require.NoError(t, pub.Publish(ctx, m))
	}
	// The consumer keeps failing and requeueing: wait for redeliveries.
	testkit.Eventually(t, 20*time.Second, func() bool {
		return strings.Count(logs.String(), "attempt=2") >= 1
	}, "messages redelivered after failed writes")
	require.Zero(t, counterSum(t, reg, "gdpr_audit_events_total"))
	require.NoError(t, gdb.Exec(`ALTER TABLE audit_events_away RENAME TO audit_events`).Error)
	testkit.Eventually(t, 30*time.Second, func() bool {
		return timelineLen(t, store, c.requestID) == len(c.messages)
	}, "every event recorded once the table is back")
	require.Equal(t, float64(len(c.messages)), counterSum(t, reg, "gdpr_audit_events_total"))
}

// TestConcurrentHandlersShareCommitsAndRecordEachIDOnce runs many handlers
// at once, as the consumer does, with every message handled twice at the
// same time: each id gets one row and is counted once, a handler returns
// (so its delivery is acknowledged) only once its row is committed.
func TestConcurrentHandlersShareCommitsAndRecordEachIDOnce(t *testing.T) {
	t.Parallel()
	gdb, _ := testkit.Postgres(t)
	store := audit.NewStore(gdb)
	reg := prometheus.NewRegistry()
	rec := audit.NewRecorder(store, reg, testkit.Logger(t))
	const messages, handlers = 300, 64
	requestID := uuid.NewString()
	var all []message.Message
	for i := range messages {
		m := mustMessage(t, event.TypeRequestReceived, event.RequestReceived{RequestID: requestID, Type: event.KindAccess}, nil)
		m.CorrelationID = requestID
		m.ID = fmt.Sprintf("%s-%03d", requestID, i)
		all = append(all, m, m)
	}
	work := make(chan message.Message)
	errs := make(chan error, len(all))
	var wg sync.WaitGroup
	for range handlers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range work {
				if err := rec.Handle(t.Context(), m); err != nil {
					errs <- err
					continue
				}
				var n int
				if err := gdb.Raw(`SELECT count(*) FROM audit_events WHERE message_id = ?`, m.ID).Scan(&n).Error; err != nil {
					errs <- err
					continue
				}
				if n != 1 {
					errs <- fmt.Errorf("handler returned before %s was committed", m.ID)
				}
			}
		}()
	}
	for _, m := range all {
		work <- m
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	var rows int
	require.NoError(t, gdb.Raw(`SELECT count(*) FROM audit_events WHERE request_id = ?`, requestID).Scan(&rows).Error)
	require.Equal(t, messages, rows)
	require.Equal(t, float64(messages), counterSum(t, reg, "gdpr_audit_events_total"), "each id counted once")
}
