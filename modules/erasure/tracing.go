package erasure

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/trace"
)

// tracedDo is do inside a client span. The span names the participant,
// never the URL (it may hold the subject's email).
func (c *Canceller) tracedDo(ctx context.Context, p Participant, t Timer, s event.Subject) reply {
	method := p.Method
	if method == "" {
		method = http.MethodDelete
	}
	ctx, span := trace.Start(ctx, "erasure.call "+p.Name, oteltrace.WithSpanKind(oteltrace.SpanKindClient),
		oteltrace.WithAttributes(
			attribute.String("gdpr.participant", p.Name),
			attribute.String("gdpr.participant.kind", "http"),
			attribute.String("gdpr.request_id", t.RequestID),
			attribute.Int("gdpr.attempt", t.Attempt),
			attribute.String("http.request.method", method),
		))
	rep := c.do(ctx, p, t.RequestID, s)
	outcome := map[callResult]string{callErased: "erased", callNotFound: "not_found", callTransient: "transient", callPermanent: "permanent"}[rep.result]
	span.SetAttributes(attribute.String("gdpr.outcome", outcome))
	if rep.status != 0 {
		span.SetAttributes(attribute.Int("http.response.status_code", rep.status))
	}
	class := ""
	switch {
	case rep.class != "":
		class = rep.class
	case rep.result == callTransient || rep.result == callPermanent:
		class = "http_" + outcome
	}
	trace.End(span, class)
	return rep
}

// startCommandSpan starts the producer span of scheduling attempt n's
// command to an AMQP (or email) participant.
func startCommandSpan(ctx context.Context, requestID, name string, n int) (context.Context, oteltrace.Span) {
	return trace.Start(ctx, "erasure.command "+name, oteltrace.WithSpanKind(oteltrace.SpanKindProducer),
		oteltrace.WithAttributes(
			attribute.String("gdpr.participant", name),
			attribute.String("gdpr.request_id", requestID),
			attribute.Int("gdpr.attempt", n),
			attribute.String("messaging.system", "rabbitmq"),
			attribute.String("messaging.destination.name", CommandRoutingKey(name)),
		))
}

// endCommandSpan ends a command span; scheduling fails only on the database.
func endCommandSpan(span oteltrace.Span, err error) {
	class := ""
	if err != nil {
		class = "schedule_failed"
	}
	trace.End(span, class)
}
