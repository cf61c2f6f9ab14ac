package otlp_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/gdpr-oss/gdpr/modules/otlp"
	"github.com/gdpr-oss/gdpr/modules/testkit"
	"github.com/gdpr-oss/gdpr/modules/trace"
)

func TestStopFlushesSpansToTheCollector(t *testing.T) {
	t.Parallel()
	rcv := testkit.NewOTLPReceiver(t)
	exp, err := otlp.New(t.Context(), rcv.URL, "worker", "v-test")
	require.NoError(t, err)
	require.NoError(t, exp.Start(t.Context()))

	ctx := trace.WithTracer(t.Context(), exp.Tracer())
	ctx = trace.WithTraceparent(ctx, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	ctx, span := trace.Start(ctx, "work")
	_, child := trace.Start(ctx, "part")
	trace.End(child, "timeout")
	trace.End(span, "")
	require.Empty(t, rcv.Spans(), "batched, not sent span by span")

	require.NoError(t, exp.Stop(t.Context()))
	spans := rcv.Spans()
	require.Len(t, spans, 2, "Stop flushed the batch")
	byName := map[string]testkit.ReceivedSpan{}
	for _, s := range spans {
		byName[s.Name] = s
		require.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", s.TraceID)
		require.Equal(t, map[string]string{"service.name": "gdpr", "service.version": "v-test", "gdpr.role": "worker"}, s.Resource)
	}
	require.Equal(t, "00f067aa0ba902b7", byName["work"].ParentSpanID)
	require.Equal(t, byName["work"].SpanID, byName["part"].ParentSpanID)
	require.True(t, byName["part"].Failed)
	require.Equal(t, "timeout", byName["part"].Attributes["error.type"])
	require.Equal(t, tracepb.Span_SPAN_KIND_INTERNAL, byName["work"].Kind)
}

func TestStopGivesUpAtItsDeadline(t *testing.T) {
	t.Parallel()
	// A collector that never answers must not hold the role past its drain.
	release := make(chan struct{})
	hung := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(hung.Close)
	t.Cleanup(func() { close(release) })
	exp, err := otlp.New(t.Context(), hung.URL, "serve", "v-test")
	require.NoError(t, err)
	_, span := trace.Start(trace.WithTracer(t.Context(), exp.Tracer()), "lost")
	span.End()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	begin := time.Now()
	require.ErrorIs(t, exp.Stop(ctx), context.DeadlineExceeded)
	require.Less(t, time.Since(begin), 3*time.Second)
}

func TestEndpointURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"http://collector:4318":            "http://collector:4318/v1/traces",
		"http://collector:4318/":           "http://collector:4318/v1/traces",
		"https://otlp.example:443/custom/": "https://otlp.example:443/custom/",
	} {
		got, err := otlp.EndpointURL(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, bad := range []string{"collector:4318", "grpc://collector:4317", "http://", "::"} {
		_, err := otlp.EndpointURL(bad)
		require.Error(t, err, bad)
	}
}
