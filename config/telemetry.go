package config

import (
	"net/url"
	"time"
)

// Telemetry configures what operators watch: the audit log consumer, the
// PostgreSQL-backed gauges, the periodic in-sync check and optional trace export.
type Telemetry struct {
	// OTLPEndpoint, when set, is the base URL of an OTLP/HTTP collector
	// (http://collector:4318, or https:// for TLS) that every role exports its
	// spans to, batched, at /v1/traces unless the URL has a path. Empty (the
	// default) traces nothing. OTEL_EXPORTER_OTLP_HEADERS and
	// OTEL_EXPORTER_OTLP_CERTIFICATE still apply.
	OTLPEndpoint string `yaml:"otlp_endpoint"`
	// AuditConcurrency is how many audit messages are handled at once; the
	// events of those handled together share one INSERT and one commit.
	AuditConcurrency int `yaml:"audit_concurrency"`
	// GaugeInterval is how often the request gauges are refreshed from PostgreSQL.
	GaugeInterval time.Duration `yaml:"gauge_interval"`
	// NearDeadline is how close to due_at an open request counts as near its deadline.
	NearDeadline time.Duration `yaml:"near_deadline"`
	// ReconcileInterval is how often the worker role runs the in-sync check
	// and exports gdpr_out_of_sync; 0 disables it.
	ReconcileInterval time.Duration `yaml:"reconcile_interval"`
	// ReconcileWindow is how far back the periodic in-sync check looks.
	ReconcileWindow time.Duration `yaml:"reconcile_window"`
	// StuckAfter is how long a request may sit between two stages before it
	// counts as out of sync (requests legitimately in progress stay below it).
	StuckAfter time.Duration `yaml:"stuck_after"`
}

func defaultTelemetry() Telemetry {
	return Telemetry{
		AuditConcurrency:  32,
		GaugeInterval:     15 * time.Second,
		NearDeadline:      5 * 24 * time.Hour,
		ReconcileInterval: time.Minute,
		ReconcileWindow:   24 * time.Hour,
		StuckAfter:        15 * time.Minute,
	}
}

func (t Telemetry) validate() error {
	switch {
	case t.OTLPEndpoint != "" && !isHTTPURL(t.OTLPEndpoint):
		return invalid("telemetry.otlp_endpoint", "must be an http:// or https:// URL with a host, got %q", t.OTLPEndpoint)
	case t.AuditConcurrency < 1:
		return invalid("telemetry.audit_concurrency", "must be >= 1, got %d", t.AuditConcurrency)
	case t.GaugeInterval <= 0:
		return invalid("telemetry.gauge_interval", "must be > 0, got %s", t.GaugeInterval)
	case t.NearDeadline <= 0:
		return invalid("telemetry.near_deadline", "must be > 0, got %s", t.NearDeadline)
	case t.ReconcileInterval < 0:
		return invalid("telemetry.reconcile_interval", "must be >= 0 (0 disables it), got %s", t.ReconcileInterval)
	case t.ReconcileWindow <= 0:
		return invalid("telemetry.reconcile_window", "must be > 0, got %s", t.ReconcileWindow)
	case t.StuckAfter <= 0:
		return invalid("telemetry.stuck_after", "must be > 0, got %s", t.StuckAfter)
	}
	return nil
}

func isHTTPURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}
