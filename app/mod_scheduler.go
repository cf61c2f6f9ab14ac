package app

import (
	"context"
	"errors"

	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/scheduler"
)

// buildScheduler is the scheduler module: the dispatcher that publishes
// delayed messages once due and the consumer of scheduler.schedule/cancel
// commands.
func buildScheduler(_ context.Context, in *infra) ([]Component, error) {
	cfg := in.cfg.Scheduler
	metrics := scheduler.NewMetrics(in.registry)
	logger := in.logger.With("module", "scheduler")
	// Its own publisher, so a burst of due messages does not queue behind
	// (or in front of) the other roles' publishes in `all`.
	pub := bus.NewPublisher(in.bus)
	dispatcher := scheduler.NewDispatcher(in.cfg.Postgres.DSN, pub, in.bus, scheduler.DispatcherOptions{
		MainExchange:    in.bus.Exchange(),
		BatchSize:       cfg.BatchSize,
		Workers:         cfg.Workers,
		MaxIdle:         cfg.MaxIdle,
		Retention:       cfg.Retention,
		PruneInterval:   cfg.PruneInterval,
		MetricsInterval: cfg.MetricsInterval,
		RetryBackoff:    cfg.RetryBackoff,
	}, metrics, logger)
	commands := scheduler.NewCommands(in.db, in.scheduled, in.bus, metrics, logger)
	consumer := bus.NewConsumer(in.bus, bus.ConsumerOptions{
		Queue:       scheduler.Queue,
		Concurrency: cfg.CommandConcurrency,
	}, commands.Handle, logger)
	return []Component{dispatcherComponent{Dispatcher: dispatcher, pub: pub}, consumer}, nil
}

// dispatcherComponent closes the dispatcher's own publisher once it stopped.
type dispatcherComponent struct {
	*scheduler.Dispatcher
	pub *bus.Publisher
}

func (d dispatcherComponent) Stop(ctx context.Context) error {
	err := d.Dispatcher.Stop(ctx)
	return errors.Join(err, d.pub.Close())
}
