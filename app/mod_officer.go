package app

import (
	"context"

	"github.com/gdpr-oss/gdpr/modules/erasure"
	"github.com/gdpr-oss/gdpr/modules/officer"
	"github.com/gdpr-oss/gdpr/modules/reconcile"
	"github.com/gdpr-oss/gdpr/modules/requests"
)

// newOfficer builds the privacy officer's service for the serve role: the
// requests owner's store, the canceller's operator actions (no consumer:
// it only writes the database and the outbox), the audit timeline, the
// in-sync check and the dead-letter queue.
func newOfficer(in *infra) (*officer.Service, error) {
	k, err := erasure.New(in.db, in.scheduled, in.outbox, in.cfg.Canceller, nil, in.logger.With("module", "erasure"))
	if err != nil {
		return nil, err
	}
	t := in.cfg.Telemetry
	opts := officer.Options{
		DB: in.db,
		// The officer removes no report files: no ReportFiles.
		Requests:  requests.NewStore(in.db, nil),
		Erasures:  officerErasures{k, erasure.Lister{DB: in.db}},
		Timeline:  auditStore(in.db),
		Checker:   reconcile.New(in.db, reconcile.Stores(in.db)),
		Reconcile: t.Reconcile.Options(),
		Outbox:    in.outbox,
		Config:    in.cfg.Console,
		Logger:    in.logger,
	}
	if in.bus != nil {
		opts.DeadLetters = in.bus
	}
	return officer.New(opts)
}

// officerErasures is the canceller's part of the officer's work.
type officerErasures struct {
	*erasure.Canceller
	erasure.Lister
}

func (e officerErasures) Attention(ctx context.Context, limit int) ([]erasure.AttentionRow, error) {
	return erasure.Attention(ctx, e.DB, limit)
}
