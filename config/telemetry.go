package config

import (
	"errors"

	"github.com/gdpr-oss/gdpr/modules/audit"
	"github.com/gdpr-oss/gdpr/modules/gauge"
	"github.com/gdpr-oss/gdpr/modules/health"
	"github.com/gdpr-oss/gdpr/modules/otlp"
	"github.com/gdpr-oss/gdpr/modules/reconcile"
)

// Telemetry is the telemetry section: what operators watch. It has no
// owner of its own; each module's settings are spliced into it (inline), so
// the setting names stay telemetry.<name>.
type Telemetry struct {
	OTLP      otlp.Config      `yaml:",inline"`
	Audit     audit.Config     `yaml:",inline"`
	Gauge     gauge.Config     `yaml:",inline"`
	Reconcile reconcile.Config `yaml:",inline"`
	Health    health.Config    `yaml:",inline"`
}

func defaultTelemetry() Telemetry {
	return Telemetry{
		OTLP:      otlp.DefaultConfig(),
		Audit:     audit.DefaultConfig(),
		Gauge:     gauge.DefaultConfig(),
		Reconcile: reconcile.DefaultConfig(),
		Health:    health.DefaultConfig(),
	}
}

func (t Telemetry) validate() error {
	return errors.Join(t.OTLP.Validate(), t.Audit.Validate(), t.Gauge.Validate(), t.Reconcile.Validate(), t.Health.Validate())
}
