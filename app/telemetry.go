package app

import (
	"context"
	"net/http"

	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/modules/audit"
	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/gauge"
	"github.com/gdpr-oss/gdpr/modules/outbox"
	"github.com/gdpr-oss/gdpr/modules/reconcile"
	"github.com/gdpr-oss/gdpr/modules/requests"
	"github.com/gdpr-oss/gdpr/modules/scheduler"
)

// buildAudit is the audit module: the consumer that records every message
// on the bus.
func buildAudit(_ context.Context, in *infra) ([]Component, error) {
	recorder := audit.NewRecorder(audit.NewStore(in.db), in.registry, in.logger)
	consumer := bus.NewConsumer(in.bus, bus.ConsumerOptions{Queue: audit.Queue, Concurrency: in.cfg.Telemetry.Audit.Concurrency}, recorder.Handle, in.logger)
	return []Component{consumer}, nil
}

// buildGauge is the gauge module: the PostgreSQL-backed gauges, including
// the periodic in-sync check behind gdpr_out_of_sync.
func buildGauge(_ context.Context, in *infra) ([]Component, error) {
	t := in.cfg.Telemetry
	gauges := gauge.New(requests.NewStore(in.db, nil), reconcile.New(in.db, reconcile.Stores(in.db)), gauge.Options{
		Interval:          t.Gauge.Interval,
		NearDeadline:      in.cfg.Console.NearDeadline.Map(),
		ReconcileInterval: t.Reconcile.Interval,
		Reconcile:         t.Reconcile.Options(),
	}, in.registry, in.logger)
	return []Component{gauges}, nil
}

// opsAdminHandlers are the operators' admin API handlers, keyed by their
// path under /v1/admin/ and meant to be mounted behind the admin token
// (serve.admin_tokens). Each handler sees the full request path:
//
//	GET /v1/admin/requests/{id}/timeline   a request's audit timeline in causal order
//	GET /v1/admin/reconcile?since=24h&stuck_after=15m   the in-sync check (200 in sync, 409 not)
func opsAdminHandlers(in *infra) map[string]http.Handler {
	t := in.cfg.Telemetry
	byRequest := http.NewServeMux()
	byRequest.Handle("GET /v1/admin/requests/{id}/timeline", audit.TimelineHandler(auditStore(in.db), in.logger))
	return map[string]http.Handler{
		"requests":  byRequest,
		"reconcile": reconcile.Handler(reconcile.New(in.db, reconcile.Stores(in.db)), t.Reconcile.Options(), in.logger),
	}
}

// auditStore is the audit log with the dispatchers whose records its
// timelines show.
func auditStore(db *gorm.DB) *audit.Store {
	return audit.NewStore(db, audit.Dispatcher{By: "outbox", Log: outbox.NewStore(db)},
		audit.Dispatcher{By: "scheduler", Log: scheduler.NewStore(db)})
}
