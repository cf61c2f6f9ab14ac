package report

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/gdpr-oss/gdpr/modules/source"
	"github.com/gdpr-oss/gdpr/modules/trace"
)

// startBuildSpan starts the span of one report build; the source reads are
// its children.
func (b *Builder) startBuildSpan(ctx context.Context, requestID string) (context.Context, oteltrace.Span) {
	return trace.Start(ctx, "report.build", oteltrace.WithAttributes(
		attribute.String("gdpr.request_id", requestID),
		attribute.Int("gdpr.report.sources", len(b.sources)),
	))
}

// endBuildSpan records the report's size, or the build's error class.
func endBuildSpan(span oteltrace.Span, res Result, err error) {
	if err != nil {
		trace.End(span, ErrorClass(err))
		return
	}
	span.SetAttributes(attribute.Int64("gdpr.report.bytes", res.Bytes))
	trace.End(span, "")
}

// startSourceSpan starts the span of one source read. It names the source
// and its kind, never the query or the subject.
func startSourceSpan(ctx context.Context, src source.Source) (context.Context, oteltrace.Span) {
	return trace.Start(ctx, "source.read "+src.Name(), oteltrace.WithSpanKind(oteltrace.SpanKindClient),
		oteltrace.WithAttributes(
			attribute.String("gdpr.source.name", src.Name()),
			attribute.String("gdpr.source.kind", src.Kind()),
		))
}

// endSourceSpan records the rows read, or the read's error class.
func endSourceSpan(span oteltrace.Span, rows int64, err error) {
	if err != nil {
		trace.End(span, ErrorClass(err))
		return
	}
	span.SetAttributes(attribute.Int64("gdpr.source.rows", rows))
	trace.End(span, "")
}
