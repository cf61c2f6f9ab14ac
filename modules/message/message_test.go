package message_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/trace"
)

func TestNewCarriesTheCausesIdentity(t *testing.T) {
	t.Parallel()
	cause, err := message.New("request.submitted", map[string]string{"a": "b"}, nil)
	require.NoError(t, err)
	require.NotEmpty(t, cause.ID)
	require.Empty(t, cause.CausationID)
	require.WithinDuration(t, time.Now(), cause.OccurredAt, time.Minute)
	require.Equal(t, time.UTC, cause.OccurredAt.Location())
	_, ok := trace.TraceID(cause.Traceparent)
	require.True(t, ok, "a message without cause starts a trace")
	cause.CorrelationID = "req-1"

	m, err := message.New("request.received", struct{ N int }{1}, &cause)
	require.NoError(t, err)
	require.NotEqual(t, cause.ID, m.ID)
	require.Equal(t, "req-1", m.CorrelationID)
	require.Equal(t, cause.ID, m.CausationID)
	causeTrace, _ := trace.TraceID(cause.Traceparent)
	mTrace, _ := trace.TraceID(m.Traceparent)
	require.Equal(t, causeTrace, mTrace)
	require.Equal(t, "request.received", m.Key())
	m.RoutingKey = "request.received.x"
	require.Equal(t, "request.received.x", m.Key())

	var body struct{ N int }
	require.NoError(t, m.Decode(&body))
	require.Equal(t, 1, body.N)
}

func TestNewAndDecodeErrors(t *testing.T) {
	t.Parallel()
	_, err := message.New("x", make(chan int), nil)
	require.ErrorContains(t, err, "encoding x body")

	m := message.Message{Type: "x", Body: []byte("{")}
	var v map[string]any
	require.ErrorContains(t, m.Decode(&v), "decoding x body")

	m.Body = []byte(`{"known":1,"added_in_a_later_version":2}`)
	var known struct{ Known int }
	require.NoError(t, m.Decode(&known), "unknown fields are tolerated")
	require.Equal(t, 1, known.Known)
}
