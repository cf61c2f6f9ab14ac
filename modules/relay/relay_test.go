package relay_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/outbox"
	"github.com/gdpr-oss/gdpr/modules/relay"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// panickingPublisher stands in for a bug in the publishing code; it never
// talks to a broker.
type panickingPublisher struct{ calls atomic.Int64 }

func (p *panickingPublisher) PublishTo(context.Context, string, message.Message) error {
	p.calls.Add(1)
	panic("publisher bug")
}

func outboxTable() relay.Table {
	return relay.Table{Name: "outbox_messages", Sent: "outbox_messages_sent", Channel: "gdpr_outbox", SkippedNotifyLock: "1734635634, 22"}
}

// TestRelayFailureReachesFailedAndStopWaits: a relay whose publishing
// panics does not crash the process; the failure reaches Failed (the role
// then drains and exits 1), the message stays pending, and Stop returns
// only once every goroutine of the relay has.
func TestRelayFailureReachesFailedAndStopWaits(t *testing.T) {
	t.Parallel()
	gdb, dsn := testkit.Postgres(t)
	pub := &panickingPublisher{}
	r := relay.New("test relay", outboxTable(), dsn, pub, nil, relay.Options{MainExchange: "x", MaxIdle: 100 * time.Millisecond, Workers: 2}, nil, testkit.Logger(t))
	require.NoError(t, r.Start(t.Context()))
	m, err := message.New("outbox.test", map[string]int{"n": 1}, nil)
	require.NoError(t, err)
	require.NoError(t, outbox.NewStore(gdb).Enqueue(t.Context(), nil, m))

	select {
	case err := <-r.Failed():
		require.ErrorContains(t, err, "panicked")
	case <-time.After(30 * time.Second):
		t.Fatal("the relay's failure never reached Failed")
	}
	require.Positive(t, pub.calls.Load())
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	require.NoError(t, r.Stop(ctx))
	require.Zero(t, r.Running(), "Stop returned while a goroutine of the relay still ran")
	var pending int64
	require.NoError(t, gdb.Raw(`SELECT count(*) FROM outbox_messages WHERE message_id = ?`, m.ID).Scan(&pending).Error)
	require.EqualValues(t, 1, pending, "the message whose publish panicked is still pending")
}
