package app

import (
	"context"

	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/outbox"
)

// buildOutbox is the outbox module: the relay that publishes what this
// role's modules wrote to the outbox. Every module that writes to the
// outbox depends on it, so the messages of a role are published by that
// role and wait for no other.
func buildOutbox(_ context.Context, in *infra) ([]Component, error) {
	// Its own publisher, so a burst of outbox messages does not queue behind
	// (or in front of) the intake's confirmed publishes in `all`.
	pub := bus.NewPublisher(in.bus)
	relay := outbox.NewRelay(in.cfg.Postgres.DSN, pub, pub.Close, in.bus.Exchange(), bus.IsRefused,
		in.cfg.Outbox, outbox.NewMetrics(in.registry), in.logger.With("module", "outbox"))
	return []Component{relay}, nil
}
