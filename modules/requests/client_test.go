package requests_test

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/lock"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/outbox"
	"github.com/gdpr-oss/gdpr/modules/requests"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// The client named in request.submitted is stored on the request and read
// back by Store.Get (intake scopes statuses by it, #11 item 6).
func TestStoredRequestRecordsItsClient(t *testing.T) {
	t.Parallel()
	gdb, _ := testkit.Postgres(t)
	rdb, prefix := testkit.Redis(t)
	mgr := requests.New(gdb, outbox.NewStore(gdb), lock.NewLocker(rdb, prefix, testkit.Logger(t)), newBuilder(nil),
		testConfig(), testkit.Logger(t), prometheus.NewRegistry())
	store := requests.NewStore(gdb, nil)
	for _, client := range []string{"crm", ""} {
		id := uuid.NewString()
		m, err := message.New(event.TypeRequestSubmitted, event.RequestSubmitted{
			RequestID: id, Type: event.KindAccess, Subject: event.Subject{ID: "u-" + id}, SubmittedAt: time.Now(), Client: client,
		}, nil)
		require.NoError(t, err)
		m.CorrelationID = id
		require.NoError(t, mgr.Handle(t.Context(), m))
		row, found, err := store.Get(t.Context(), id)
		require.NoError(t, err)
		require.True(t, found)
		require.Equal(t, client, row.Client)
	}
}
