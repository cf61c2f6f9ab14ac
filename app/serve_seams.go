package app

import (
	"github.com/gdpr-oss/gdpr/modules/api"
	"github.com/gdpr-oss/gdpr/modules/intake"
)

// The seams below are where other modules plug into the serve role. Each
// returns nothing until its module exists; the API degrades gracefully
// (no participants in statuses, 503 on downloads, no admin routes).

// serveReports opens stored reports for download (modules/report's Builder).
func serveReports(in *infra) (intake.ReportOpener, error) {
	return nil, nil
}

// serveParticipants lists an erasure's participants for request statuses
// (the canceller's erasure_participants table).
func serveParticipants(in *infra) intake.ParticipantLister {
	return nil
}

// serveAdminRoutes are net/http handlers mounted under /v1/admin/ behind the
// admin token check (serve.admin_tokens), e.g. the request timeline.
func serveAdminRoutes(in *infra) []api.AdminRoute {
	var routes []api.AdminRoute
	for path, h := range opsAdminHandlers(in) {
		routes = append(routes, api.AdminRoute{Path: path, Handler: h})
	}
	return routes
}
