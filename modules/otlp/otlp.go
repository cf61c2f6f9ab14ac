// Package otlp exports a role's spans over OTLP/HTTP (protobuf) when
// telemetry.otlp_endpoint is set.
package otlp

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	oteltrace "go.opentelemetry.io/otel/trace"
)

// ServiceName is the service.name every gdpr role reports.
const ServiceName = "gdpr"

// instrumentation names the tracer the spans come from.
const instrumentation = "github.com/gdpr-oss/gdpr"

// Exporter batches a role's spans and sends them to a collector.
type Exporter struct {
	provider *sdktrace.TracerProvider
}

// New returns an exporter sending to endpoint, the collector's base URL
// (http://collector:4318; https for TLS). A URL without a path gets the
// OTLP traces path /v1/traces. Every span carries service.name=gdpr and
// gdpr.role=role. The standard OTEL_EXPORTER_OTLP_HEADERS,
// _TIMEOUT and _CERTIFICATE variables still apply.
func New(ctx context.Context, endpoint, role, version string) (*Exporter, error) {
	u, err := EndpointURL(endpoint)
	if err != nil {
		return nil, err
	}
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(u))
	if err != nil {
		return nil, fmt.Errorf("creating the OTLP exporter: %w", err)
	}
	res := resource.NewSchemaless(
		attribute.String("service.name", ServiceName),
		attribute.String("service.version", version),
		attribute.String("gdpr.role", role),
	)
	return &Exporter{provider: sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
	)}, nil
}

// EndpointURL checks telemetry.otlp_endpoint and returns the URL spans are
// posted to.
func EndpointURL(endpoint string) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("otlp endpoint %q: want an http:// or https:// URL with a host", endpoint)
	}
	if strings.Trim(u.Path, "/") == "" {
		u.Path = "/v1/traces"
	}
	return u.String(), nil
}

// Tracer returns the tracer the role's spans are made with.
func (e *Exporter) Tracer() oteltrace.Tracer { return e.provider.Tracer(instrumentation) }

// Name identifies the exporter among a role's components.
func (e *Exporter) Name() string { return "otlp exporter" }

// Start does nothing: spans are batched from the first one on.
func (e *Exporter) Start(context.Context) error { return nil }

// Stop flushes the spans not yet sent and stops, within ctx (the role's
// drain timeout); spans still unsent then are dropped.
func (e *Exporter) Stop(ctx context.Context) error {
	if err := e.provider.Shutdown(ctx); err != nil {
		return fmt.Errorf("flushing spans: %w", err)
	}
	return nil
}
