package app

import (
	"github.com/gdpr-oss/gdpr/modules/erasure"
)

// cancellerComponents wires the erasure fan-out role.
func cancellerComponents(in *infra) ([]Component, error) {
	metrics := erasure.NewMetrics(in.registry, in.db)
	c, err := erasure.New(in.db, in.outbox, in.cfg.Canceller, metrics, in.logger.With("module", "erasure"))
	if err != nil {
		return nil, err
	}
	return []Component{erasure.NewComponent(in.bus, c, in.cfg.Canceller.Concurrency, in.logger)}, nil
}
