package app

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/gdpr-oss/gdpr/modules/api"
	"github.com/gdpr-oss/gdpr/modules/erasure"
	"github.com/gdpr-oss/gdpr/modules/intake"
	"github.com/gdpr-oss/gdpr/modules/report"
)

// The seams below are where other modules plug into the serve role. Until a
// module fills its seam the API degrades gracefully (no admin routes).

// serveReports opens stored reports for download with modules/report's
// Builder. Serve only reads reports: no sources are opened, and the builder's
// metrics are not registered (the worker in the same `all` process does).
func serveReports(in *infra) (intake.ReportOpener, error) {
	cfg := in.cfg.Report
	cfg.Sources = nil
	b, err := in.newReportBuilder(cfg, nil)
	if err != nil {
		return nil, fmt.Errorf("opening report storage: %w", err)
	}
	return reportOpener{b}, nil
}

// reportOpener maps report.ErrNotFound to intake.ErrNotFound, so a report
// row without its file answers 404 rather than 500.
type reportOpener struct{ b *report.Builder }

func (r reportOpener) Open(ctx context.Context, reportID string) (io.ReadCloser, int64, error) {
	rc, size, err := r.b.Open(ctx, reportID)
	if errors.Is(err, report.ErrNotFound) {
		return nil, 0, fmt.Errorf("%w: %w", intake.ErrNotFound, err)
	}
	return rc, size, err
}

// serveParticipants lists an erasure's participants for request statuses
// (the canceller's erasure_participants table).
func serveParticipants(in *infra) intake.ParticipantLister {
	return participantLister{erasure.Lister{DB: in.db}}
}

type participantLister struct{ l erasure.Lister }

func (p participantLister) ListParticipants(ctx context.Context, requestID string) ([]intake.Participant, error) {
	states, err := p.l.Participants(ctx, requestID)
	if err != nil {
		return nil, err
	}
	out := make([]intake.Participant, 0, len(states))
	for _, s := range states {
		// Detail and outcome text come from other services; a status shows
		// only progress, never text that might carry personal data.
		out = append(out, intake.Participant{Name: s.Participant, State: s.State, Attempts: s.Attempts, ConfirmedAt: s.ConfirmedAt, UpdatedAt: s.UpdatedAt.UTC()})
	}
	return out, nil
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
