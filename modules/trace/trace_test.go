package trace_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/trace"
)

func TestChildContinuesAValidTrace(t *testing.T) {
	t.Parallel()
	parent := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	child := trace.Child(parent)
	id, ok := trace.TraceID(child)
	require.True(t, ok, child)
	require.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", id)
	require.NotEqual(t, parent, child, "a new span id")
}

func TestChildStartsANewTraceForBadParents(t *testing.T) {
	t.Parallel()
	for _, parent := range []string{
		"",
		"garbage",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",          // no flags
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01",       // zero trace id
		"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",       // zero parent id
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",       // upper case
		"00-4bf92f3577b34da6a3ce929d0e0e473z-00f067aa0ba902b7-01",       // not hex
		"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",       // forbidden version
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", // too many parts
	} {
		_, ok := trace.TraceID(parent)
		require.False(t, ok, parent)
		child := trace.Child(parent)
		id, ok := trace.TraceID(child)
		require.True(t, ok, "child of %q is valid: %s", parent, child)
		require.NotContains(t, parent, id)
	}
}

func TestHandlerAddsIDsFromContext(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	logger := slog.New(trace.NewHandler(slog.NewJSONHandler(&buf, nil))).With("role", "worker")
	ctx := trace.WithRequestID(context.Background(), "req-1")
	ctx = trace.WithMessageID(ctx, "msg-1")
	ctx = trace.WithTraceparent(ctx, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	logger.InfoContext(ctx, "handled")
	require.Contains(t, buf.String(), `"request_id":"req-1"`)
	require.Contains(t, buf.String(), `"message_id":"msg-1"`)
	require.Contains(t, buf.String(), `"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"`)
	require.Contains(t, buf.String(), `"role":"worker"`)

	buf.Reset()
	logger.Info("no context ids")
	require.NotContains(t, buf.String(), "request_id")
}

func TestHandlerDoesNotRepeatAnExplicitID(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	logger := slog.New(trace.NewHandler(slog.NewJSONHandler(&buf, nil)))
	ctx := trace.WithRequestID(t.Context(), "from-ctx")
	ctx = trace.WithMessageID(ctx, "msg-1")
	logger.InfoContext(ctx, "report stored", "request_id", "explicit")
	line := buf.String()
	require.Equal(t, 1, strings.Count(line, `"request_id"`), line)
	require.Contains(t, line, `"request_id":"explicit"`)
	require.Contains(t, line, `"message_id":"msg-1"`)
}
