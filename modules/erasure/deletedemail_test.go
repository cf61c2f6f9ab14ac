package erasure_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/erasure"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/notify"
	"github.com/gdpr-oss/gdpr/modules/requests"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// order is which of the two consumers of one erasure's outcome goes first:
// the notifier (erasure.completed, reads the address) or the requests
// manager (erasure.finished, scrubs the row).
type order int

const (
	// notifyAfterFinish: the notifier starts only once the erasure finished.
	notifyAfterFinish order = iota
	// sendAcrossFinish: the notifier read the address, and its SMTP
	// conversation ends only once the erasure finished.
	sendAcrossFinish
	// finishAfterEmail: the erasure finishes only once the email is recorded.
	finishAfterEmail
	orders
)

// gates holds one handler of a request until the other one is done, so
// the test decides the interleaving instead of the scheduler. Every
// consumer takes more deliveries at once than the test has requests: a
// held delivery never keeps the one it waits for from being handled.
type gates struct {
	order    func(requestID string) order
	mu       sync.Mutex
	finished map[string]*gate
	notified map[string]*gate
}

type gate struct {
	once sync.Once
	ch   chan struct{}
}

func (g *gates) get(m map[string]*gate, id string) *gate {
	g.mu.Lock()
	defer g.mu.Unlock()
	if m[id] == nil {
		m[id] = &gate{ch: make(chan struct{})}
	}
	return m[id]
}

func (g *gates) open(m map[string]*gate, id string) {
	gt := g.get(m, id)
	gt.once.Do(func() { close(gt.ch) })
}

var errGateTimeout = errors.New("gate not opened in time")

func (g *gates) wait(ctx context.Context, m map[string]*gate, id string) error {
	select {
	case <-g.get(m, id).ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(2 * time.Minute):
		return fmt.Errorf("%w: %s", errGateTimeout, id)
	}
}

// slowSender is the SMTP server as seen by a notifier that is slow to
// finish: a send of a sendAcrossFinish request returns only after its
// erasure finished. At most 8 conversations run at once.
type slowSender struct {
	next  notify.Sender
	gates *gates
	sem   chan struct{}
}

func (s *slowSender) Send(ctx context.Context, e notify.Email) error {
	id := e.Headers["X-GDPR-Request-ID"]
	if s.gates.order(id) == sendAcrossFinish {
		if err := s.gates.wait(ctx, s.gates.finished, id); err != nil {
			return err
		}
	}
	s.sem <- struct{}{}
	defer func() { <-s.sem }()
	return s.next.Send(ctx, e)
}

// TestDeletedEmailWhateverTheOrder: 200 erasures without an email-system
// participant (erasure.completed and erasure.finished are published
// together) and 200 with one, each with the notifier forced behind, across
// or ahead of the requests manager's scrub: every subject gets exactly one
// "deleted" email, and every row ends scrubbed.
func TestDeletedEmailWhateverTheOrder(t *testing.T) {
	t.Parallel()
	cases := map[string][]erasure.Participant{
		"no email participant":   {{Name: "billing", Kind: "amqp"}},
		"with email participant": {{Name: "billing", Kind: "amqp"}, {Name: "mailer", Kind: "email"}},
	}
	for name, participants := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			runDeletedEmail(t, participants, 200)
		})
	}
}

func runDeletedEmail(t *testing.T, participants []erasure.Participant, n int) {
	h := newHarness(t, participants, nil)
	subjects := newSubjects(n)
	orderOf := map[string]order{}
	for i, s := range subjects {
		orderOf[s.RequestID] = order(i) % orders
		require.NoError(t, h.db.Exec(`INSERT INTO requests (id, type, state, subject_id, subject_email, had_email, submitted_at, due_at)
			VALUES (?, 'erasure', 'handed_over', ?, ?, true, now(), now() + interval '1 month')`,
			s.RequestID, s.Subject.ID, s.Subject.Email).Error)
	}
	g := &gates{order: func(id string) order { return orderOf[id] }, finished: map[string]*gate{}, notified: map[string]*gate{}}

	// The requests manager's erasure.finished consumer.
	requestsQueue := bus.Queue{Name: "worker.requests", Bindings: []string{event.TypeErasureFinished}}
	require.NoError(t, h.conn.DeclareQueue(t.Context(), requestsQueue))
	t.Cleanup(func() { testkit.DeleteTopology(t, h.cfg.AMQP, bus.Topology{Queues: []bus.Queue{requestsQueue}}) })
	mgr := requests.New(h.db, h.outbox, nil, nil, requests.Config{}, h.logger, prometheus.NewRegistry())
	startConsumer(t, h, requestsQueue.Name, 2*n, func(ctx context.Context, m message.Message) error {
		if orderOf[m.CorrelationID] == finishAfterEmail {
			if err := g.wait(ctx, g.notified, m.CorrelationID); err != nil {
				return err
			}
		}
		if err := mgr.Handle(ctx, m); err != nil {
			return err
		}
		g.open(g.finished, m.CorrelationID)
		return nil
	})

	// The notifier, slow where the order says so.
	mp := testkit.StartMailpit(t)
	ncfg := h.cfg.Notify
	ncfg.SMTPHost, ncfg.SMTPPort = mp.SMTPHost, mp.SMTPPort
	sender := &slowSender{next: notify.NewSMTP(ncfg), gates: g, sem: make(chan struct{}, 8)}
	nt, err := notify.New(h.db, requests.NewStore(h.db, nil), h.outbox, sender, func(string, time.Time) (string, time.Time, error) {
		return "", time.Time{}, nil
	}, notify.Options{ResendAfter: time.Hour}, h.logger, prometheus.NewRegistry())
	require.NoError(t, err)
	startConsumer(t, h, "worker.notify", 2*n, func(ctx context.Context, m message.Message) error {
		if orderOf[m.CorrelationID] == notifyAfterFinish {
			if err := g.wait(ctx, g.finished, m.CorrelationID); err != nil {
				return err
			}
		}
		if err := nt.Handle(ctx, m); err != nil {
			return err
		}
		g.open(g.notified, m.CorrelationID)
		return nil
	})

	h.startDispatcher()
	h.startCanceller()
	sdb := serviceDB(t)
	for _, p := range participants {
		startParticipant(t, h, p.Name, func(context.Context, event.Subject) (string, error) {
			return event.OutcomeErased, nil
		}, sdb)
	}
	for _, s := range subjects {
		h.request(s)
	}

	ids := make([]string, n)
	for i, s := range subjects {
		ids[i] = s.RequestID
	}
	count := func(query string) int {
		var c int
		require.NoError(t, h.db.Raw(query, ids).Scan(&c).Error)
		return c
	}
	testkit.Eventually(t, 3*time.Minute, func() bool {
		return count(`SELECT count(*) FROM requests WHERE id IN ? AND state = 'completed'`) == n &&
			count(`SELECT count(*) FROM notifications WHERE request_id IN ? AND state <> 'sending'`) == n
	}, "%d erasures completed and their emails recorded", n)

	var skipped []string
	require.NoError(t, h.db.Raw(`SELECT request_id::text || ' ' || reason FROM notifications
		WHERE request_id IN ? AND state <> 'sent'`, ids).Scan(&skipped).Error)
	require.Empty(t, skipped, "deleted emails not sent")
	testkit.Eventually(t, 30*time.Second, func() bool {
		c, err := mp.Count(t.Context())
		return err == nil && c >= n
	}, "%d emails at the SMTP server", n)
	msgs, err := mp.Messages(t.Context())
	require.NoError(t, err)
	require.Len(t, msgs, n)
	perAddr := map[string]int{}
	for _, m := range msgs {
		require.Equal(t, "Your personal data was deleted", m.Subject)
		for _, to := range m.To {
			perAddr[to.Address]++
		}
	}
	for _, s := range subjects {
		require.Equal(t, 1, perAddr[s.Subject.Email], "deleted emails to %s (order %d)", s.RequestID, orderOf[s.RequestID])
	}
	// Whoever came second scrubbed: no address is left behind.
	require.Zero(t, count(`SELECT count(*) FROM requests WHERE id IN ? AND (subject_email <> '' OR subject_id <> '')`))
	require.Equal(t, n, count(`SELECT count(*) FROM requests WHERE id IN ? AND had_email`))
}

func startConsumer(t *testing.T, h *harness, queue string, concurrency int, handle bus.Handler) {
	c := bus.NewConsumer(h.conn, bus.ConsumerOptions{Queue: queue, Concurrency: concurrency}, handle, h.logger)
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = c.Stop(ctx)
	})
}
