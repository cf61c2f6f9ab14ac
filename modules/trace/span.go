package trace

import (
	"context"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	oteltrace "go.opentelemetry.io/otel/trace"
)

// WithTracer stores the tracer that Start uses. A role stores it in the
// context its components start with, so every consumer, worker and
// participant call traces without each constructor taking a tracer.
func WithTracer(ctx context.Context, t oteltrace.Tracer) context.Context {
	if t == nil {
		return ctx
	}
	return context.WithValue(ctx, keyTracer, t)
}

// Tracer returns the tracer stored in ctx, or nil.
func Tracer(ctx context.Context) oteltrace.Tracer {
	t, _ := ctx.Value(keyTracer).(oteltrace.Tracer)
	return t
}

// Start starts a span continuing the traceparent in ctx (the HTTP caller's
// or the message's), so that spans of one request share its trace id across
// processes. The returned context carries the span and, as its traceparent,
// the span's own, so logs and the messages created under it continue it.
// Without a tracer in ctx it returns ctx unchanged and a span that records
// nothing. Attributes must never hold personal data: ids, types, outcomes
// and error classes only.
func Start(ctx context.Context, name string, opts ...oteltrace.SpanStartOption) (context.Context, oteltrace.Span) {
	t := Tracer(ctx)
	if t == nil {
		return ctx, oteltrace.SpanFromContext(context.Background())
	}
	ctx = withParent(ctx)
	ctx, span := t.Start(ctx, name, opts...)
	if sc := span.SpanContext(); span.IsRecording() && sc.IsValid() {
		ctx = WithTraceparent(ctx, Format(sc))
	}
	return ctx, span
}

// withParent makes the traceparent in ctx the parent of the next span,
// unless ctx already holds that very span (a span started in this process).
func withParent(ctx context.Context) context.Context {
	sc, ok := Parse(Traceparent(ctx))
	if !ok {
		// No trace to continue (or a malformed one): the span starts a new
		// trace rather than hang under an unrelated span in ctx.
		return oteltrace.ContextWithSpanContext(ctx, oteltrace.SpanContext{})
	}
	cur := oteltrace.SpanContextFromContext(ctx)
	if cur.TraceID() == sc.TraceID() && cur.SpanID() == sc.SpanID() {
		return ctx
	}
	return oteltrace.ContextWithRemoteSpanContext(ctx, sc)
}

// Parse turns a traceparent into a span context.
func Parse(traceparent string) (oteltrace.SpanContext, bool) {
	id, ok := TraceID(traceparent)
	if !ok {
		return oteltrace.SpanContext{}, false
	}
	tid, err := oteltrace.TraceIDFromHex(id)
	if err != nil {
		return oteltrace.SpanContext{}, false
	}
	sid, err := oteltrace.SpanIDFromHex(traceparent[36:52])
	if err != nil {
		return oteltrace.SpanContext{}, false
	}
	flags, err := strconv.ParseUint(traceparent[53:55], 16, 8)
	if err != nil {
		return oteltrace.SpanContext{}, false
	}
	return oteltrace.NewSpanContext(oteltrace.SpanContextConfig{
		TraceID: tid, SpanID: sid, TraceFlags: oteltrace.TraceFlags(flags) & oteltrace.FlagsSampled, Remote: true,
	}), true
}

// Format renders a span context as a traceparent.
func Format(sc oteltrace.SpanContext) string {
	flags := "00"
	if sc.IsSampled() {
		flags = "01"
	}
	return "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-" + flags
}

// End ends span, marking it failed with class (an error class such as
// "timeout" or "poison", never an error message, which may quote personal
// data) when class is not empty.
func End(span oteltrace.Span, class string) {
	if class != "" {
		span.SetAttributes(attribute.String("error.type", class))
		span.SetStatus(codes.Error, class)
	}
	span.End()
}
