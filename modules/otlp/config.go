package otlp

import (
	"fmt"
	"net/url"
)

// Config is otlp's part of the telemetry section.
type Config struct {
	// OTLPEndpoint, when set, is the base URL of an OTLP/HTTP collector
	// (http://collector:4318, or https:// for TLS) that every role exports its
	// spans to, batched, at /v1/traces unless the URL has a path. Empty (the
	// default) traces nothing. OTEL_EXPORTER_OTLP_HEADERS and
	// OTEL_EXPORTER_OTLP_CERTIFICATE still apply.
	Endpoint string `yaml:"otlp_endpoint"`
}

// DefaultConfig traces nothing.
func DefaultConfig() Config { return Config{} }

// Validate names the bad setting in full (telemetry.otlp_endpoint).
func (c Config) Validate() error {
	if c.Endpoint == "" {
		return nil
	}
	if u, err := url.Parse(c.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("telemetry.otlp_endpoint must be an http:// or https:// URL with a host, got %q", c.Endpoint)
	}
	return nil
}
