package relay_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/relay"
)

// TestNewRowFillsWhatBothTablesStoreForAnUnsetField: the outbox and the
// scheduler write through NewRow, so an unset type, body, headers or time is
// stored the same way in both.
func TestNewRowFillsWhatBothTablesStoreForAnUnsetField(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := []struct {
		name string
		m    message.Message
		want relay.Row
	}{
		{"set fields are kept", message.Message{ID: "m1", RoutingKey: "report.ready", Type: "report.ready.v1", CorrelationID: "r1",
			CausationID: "c1", Traceparent: "00-t", Headers: map[string]string{"a": "b"}, Body: []byte(`{}`), OccurredAt: at},
			relay.Row{MessageID: "m1", RoutingKey: "report.ready", Type: "report.ready.v1", CorrelationID: "r1", CausationID: "c1",
				Traceparent: "00-t", Headers: `{"a":"b"}`, Body: []byte(`{}`), OccurredAt: at}},
		{"unset type, body and headers", message.Message{ID: "m2", RoutingKey: "request.submitted", OccurredAt: at},
			relay.Row{MessageID: "m2", RoutingKey: "request.submitted", Type: "request.submitted", Headers: `{}`, Body: []byte{}, OccurredAt: at}},
	}
	for _, tc := range cases {
		got, err := relay.NewRow(tc.m)
		require.NoError(t, err, tc.name)
		require.Equal(t, tc.want, got, tc.name)
	}
	before := time.Now().UTC()
	got, err := relay.NewRow(message.Message{ID: "m3", RoutingKey: "x"})
	require.NoError(t, err)
	require.False(t, got.OccurredAt.Before(before), "an unset time is now")
}
