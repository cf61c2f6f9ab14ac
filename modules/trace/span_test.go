package trace_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/gdpr-oss/gdpr/modules/trace"
)

const callerTP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func recorder(t *testing.T) (*tracetest.SpanRecorder, oteltrace.Tracer) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return rec, tp.Tracer("test")
}

func TestStartWithoutTracerChangesNothing(t *testing.T) {
	t.Parallel()
	ctx := trace.WithTraceparent(t.Context(), callerTP)
	got, span := trace.Start(ctx, "x")
	require.False(t, span.IsRecording())
	require.Equal(t, ctx, got, "no tracer: the very same context")
	trace.End(span, "error")
}

func TestStartContinuesTheTraceparentInContext(t *testing.T) {
	t.Parallel()
	rec, tracer := recorder(t)
	ctx := trace.WithTracer(trace.WithTraceparent(t.Context(), callerTP), tracer)

	ctx, outer := trace.Start(ctx, "outer")
	tp := trace.Traceparent(ctx)
	id, ok := trace.TraceID(tp)
	require.True(t, ok, tp)
	require.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", id, "the caller's trace")
	require.Equal(t, trace.Format(outer.SpanContext()), tp, "logs and messages continue the span")
	require.NotEqual(t, callerTP, tp)

	ictx, inner := trace.Start(ctx, "inner")
	trace.End(inner, "timeout")
	trace.End(outer, "")
	require.NotEqual(t, tp, trace.Traceparent(ictx))

	ended := rec.Ended()
	require.Len(t, ended, 2)
	in, out := ended[0], ended[1]
	require.Equal(t, "inner", in.Name())
	require.Equal(t, "00f067aa0ba902b7", out.Parent().SpanID().String(), "outer's parent is the caller's span")
	require.True(t, out.Parent().IsRemote())
	require.Equal(t, out.SpanContext().SpanID(), in.Parent().SpanID(), "inner is outer's child")
	require.False(t, in.Parent().IsRemote())
	require.Equal(t, out.SpanContext().TraceID(), in.SpanContext().TraceID())
	require.Equal(t, codes.Error, in.Status().Code)
	require.Contains(t, in.Attributes(), attribute.String("error.type", "timeout"))
	require.Equal(t, codes.Unset, out.Status().Code)
}

func TestStartFollowsAChangedTraceparent(t *testing.T) {
	t.Parallel()
	rec, tracer := recorder(t)
	ctx := trace.WithTracer(t.Context(), tracer)
	ctx, first := trace.Start(ctx, "no trace yet")
	trace.End(first, "")
	_, ok := trace.TraceID(trace.Traceparent(ctx))
	require.True(t, ok, "a span without a trace to continue starts one")

	// A worker that picks up the next request sets its traceparent: the
	// span continues that, not the span still in ctx.
	_, next := trace.Start(trace.WithTraceparent(ctx, callerTP), "next")
	trace.End(next, "")
	ended := rec.Ended()
	require.Len(t, ended, 2)
	require.False(t, ended[0].Parent().IsValid(), "a root span")
	require.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", ended[1].SpanContext().TraceID().String())
}

func TestParseAndFormat(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		tp      string
		ok      bool
		sampled bool
	}{
		{callerTP, true, true},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", true, false},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03", true, true},
		{"garbage", false, false},
		{"00-00000000000000000000000000000000-00f067aa0ba902b7-01", false, false},
	} {
		sc, ok := trace.Parse(tc.tp)
		require.Equal(t, tc.ok, ok, tc.tp)
		if !ok {
			continue
		}
		require.True(t, sc.IsRemote())
		require.Equal(t, tc.sampled, sc.IsSampled(), tc.tp)
		if tc.tp[53:] != "03" {
			require.Equal(t, tc.tp, trace.Format(sc))
		}
	}
}
