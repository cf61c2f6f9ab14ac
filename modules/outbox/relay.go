package outbox

import (
	"context"
	"errors"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gdpr-oss/gdpr/modules/relay"
)

// Publisher publishes one message to a named exchange and returns nil only
// once the broker confirmed it.
type Publisher = relay.Publisher

// Relay publishes what the outbox holds, soon after each write commits: a
// relay over outbox_messages (modules/relay says how, and why nothing is
// lost). It runs in every role whose modules write to the outbox, so a
// message does not wait for another role to be up.
type Relay struct {
	*relay.Relay
	closer func() error
}

// NewRelay returns the outbox relay over the database at dsn, publishing to
// mainExchange with pub; closePub (may be nil) is called once it stopped,
// for a publisher of its own. Nothing runs until Start.
//
// refused tells a publish error the broker will give again for this message
// (bus.IsRefused) from an unknown outcome.
func NewRelay(dsn string, pub Publisher, closePub func() error, mainExchange string, refused func(error) bool, cfg Config, metrics *Metrics, logger *slog.Logger) *Relay {
	opts := relay.Options{
		Refused:         refused,
		MainExchange:    mainExchange,
		BatchSize:       cfg.BatchSize,
		Workers:         cfg.Workers,
		MaxIdle:         cfg.MaxIdle,
		Retention:       cfg.Retention,
		PruneInterval:   cfg.PruneInterval,
		MetricsInterval: cfg.MetricsInterval,
		RetryBackoff:    cfg.RetryBackoff,
	}
	var m *relay.Metrics
	if metrics != nil {
		m = &relay.Metrics{Published: metrics.published, Refused: metrics.refused, Lateness: metrics.lag, Pending: metrics.pending, OldestOverdue: metrics.oldest}
	}
	return &Relay{Relay: relay.New("outbox relay", table(), dsn, pub, nil, opts, m, logger), closer: closePub}
}

// Stop stops the relay (batches in flight finish until ctx ends), then
// closes its publisher.
func (r *Relay) Stop(ctx context.Context) error {
	err := r.Relay.Stop(ctx)
	if r.closer != nil {
		err = errors.Join(err, r.closer())
	}
	return err
}

// Metrics are the outbox relay's Prometheus series.
type Metrics struct {
	published prometheus.Counter
	refused   prometheus.Counter
	lag       prometheus.Histogram
	pending   prometheus.Gauge
	oldest    prometheus.Gauge
}

// NewMetrics registers the outbox relay's series on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gdpr_outbox_published_total",
			Help: "Outbox messages published with a broker confirm and marked sent by this process.",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gdpr_outbox_refused_total",
			Help: "Outbox publishes the broker refused (unroutable, nacked); retried after a backoff.",
		}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gdpr_outbox_lag_seconds",
			Help:    "Broker confirm time minus the time the message was written to the outbox.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gdpr_outbox_pending",
			Help: "Messages written to the outbox and not yet published.",
		}),
		oldest: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gdpr_outbox_oldest_seconds",
			Help: "Age of the oldest message waiting in the outbox; 0 when none is.",
		}),
	}
	reg.MustRegister(m.published, m.refused, m.lag, m.pending, m.oldest)
	return m
}
