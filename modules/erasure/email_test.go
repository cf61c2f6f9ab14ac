package erasure_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/erasure"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// TestEmailCommandIsDueEmailDelayAfterCompleted: the email system's command
// is due email_delay after the moment erasure.completed says it happened,
// and erasures.completed_at is that moment too, so no reader of the audit
// log or the status sees the command come sooner than the delay.
func TestEmailCommandIsDueEmailDelayAfterCompleted(t *testing.T) {
	t.Parallel()
	const delay = time.Hour // long, so the command stays pending for the check
	h := newHarness(t, []erasure.Participant{
		{Name: "billing", Kind: erasure.KindAMQP},
		{Name: "mailer", Kind: erasure.KindEmail},
	}, func(c *erasure.Config) { c.EmailDelay = delay })
	rawParticipant(t, h, "billing", func(cmd event.ErasureCommand, m message.Message) []message.Message {
		return []message.Message{confirmation(t, cmd, m, event.OutcomeErased)}
	})
	h.startDispatcher()
	h.startCanceller()

	s := newSubjects(1)[0]
	h.request(s)
	testkit.Eventually(t, 30*time.Second, func() bool { return len(h.events.all(event.TypeErasureCompleted)) > 0 }, "erasure.completed published")
	completed := h.events.all(event.TypeErasureCompleted)[0]

	var row struct {
		DeliverAt   time.Time
		CompletedAt time.Time
	}
	require.NoError(t, h.db.Raw(`SELECT m.deliver_at, e.completed_at FROM scheduled_messages m, erasures e
		WHERE m.key = ? AND e.request_id = ?`, "erasure:"+s.RequestID+":mailer:command:1", s.RequestID).Scan(&row).Error)
	require.False(t, row.DeliverAt.IsZero(), "the email system's command is scheduled")
	// The database keeps microseconds; the message's header keeps nanoseconds.
	occurred := completed.OccurredAt.Truncate(time.Microsecond)
	require.False(t, row.DeliverAt.Before(occurred.Add(delay)),
		"command due at %s, sooner than email_delay after erasure.completed occurred at %s", row.DeliverAt, completed.OccurredAt)
	require.WithinDuration(t, completed.OccurredAt, row.CompletedAt, time.Microsecond, "completed_at is when erasure.completed occurred")
	st, attempt := h.participantState(s.RequestID, "mailer")
	require.Equal(t, erasure.StateSent, st)
	require.Equal(t, 1, attempt)
}
