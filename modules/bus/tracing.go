package bus

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/trace"
)

// startSpan starts the consumer span of one handler run, continuing the
// message's traceparent (already in ctx). Its attributes are ids and types,
// never the body.
func (c *Consumer) startSpan(ctx context.Context, m message.Message) (context.Context, oteltrace.Span) {
	return trace.Start(ctx, "process "+c.opts.Queue,
		oteltrace.WithSpanKind(oteltrace.SpanKindConsumer),
		oteltrace.WithAttributes(
			attribute.String("messaging.system", "rabbitmq"),
			attribute.String("messaging.operation.type", "process"),
			attribute.String("messaging.destination.name", c.opts.Queue),
			attribute.String("messaging.message.id", m.ID),
			attribute.String("gdpr.message.type", m.Type),
			attribute.String("gdpr.request_id", m.CorrelationID),
			attribute.Int64("gdpr.message.attempt", m.Retries+m.DeliveryCount+1),
		))
}

// endSpan ends a handler's span with its error class: poison, canceled or
// error (to be retried).
func endSpan(ctx context.Context, span oteltrace.Span, err error) {
	class := ""
	switch {
	case err == nil:
	case message.IsPermanent(err):
		class = "poison"
	case ctx.Err() != nil:
		class = "canceled"
	default:
		class = "error"
	}
	trace.End(span, class)
}

// span is the middleware that runs each handler inside a consumer span.
func (c *Consumer) span(next message.Handler) message.Handler {
	return func(ctx context.Context, m message.Message) (err error) {
		ctx, span := c.startSpan(ctx, m)
		defer func() { endSpan(ctx, span, err) }()
		return next(ctx, m)
	}
}
