package api

import (
	"context"
	"net/http"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/gdpr-oss/gdpr/modules/trace"
)

// startSpan starts the request's server span, continuing the caller's W3C
// traceparent. Untraced (no telemetry.otlp_endpoint), the request gets a
// child traceparent of the caller's, or a new trace, as its context.
func startSpan(req *http.Request) (context.Context, oteltrace.Span) {
	incoming := req.Header.Get("traceparent")
	ctx, span := trace.Start(trace.WithTraceparent(req.Context(), incoming), "HTTP "+methodLabel(req.Method),
		oteltrace.WithSpanKind(oteltrace.SpanKindServer),
		oteltrace.WithAttributes(attribute.String("http.request.method", methodLabel(req.Method))))
	if !span.IsRecording() {
		ctx = trace.WithTraceparent(req.Context(), trace.Child(incoming))
	}
	return ctx, span
}

// endSpan names the span by route pattern (never the path, which can hold a
// download token) and records the status and the request id the handler
// put in ctx; a 5xx marks it failed.
func endSpan(ctx context.Context, span oteltrace.Span, method, route string, status int) {
	if !span.IsRecording() {
		return
	}
	span.SetName(methodLabel(method) + " " + route)
	span.SetAttributes(attribute.String("http.route", route), attribute.Int("http.response.status_code", status))
	if id := trace.RequestID(ctx); id != "" {
		span.SetAttributes(attribute.String("gdpr.request_id", id))
	}
	class := ""
	if status >= 500 {
		class = strconv.Itoa(status)
	}
	trace.End(span, class)
}
