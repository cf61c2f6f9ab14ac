package app

import (
	"context"

	"github.com/gdpr-oss/gdpr/modules/erasure"
)

// buildCanceller is the canceller module: the erasure fan-out.
func buildCanceller(_ context.Context, in *infra) ([]Component, error) {
	metrics := erasure.NewMetrics(in.registry, in.db)
	c, err := erasure.New(in.db, in.scheduled, in.outbox, in.cfg.Canceller, metrics, in.logger.With("module", "erasure"))
	if err != nil {
		return nil, err
	}
	return []Component{erasure.NewComponent(in.bus, c, in.cfg.Canceller.Concurrency, in.logger)}, nil
}
