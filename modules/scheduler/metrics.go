package scheduler

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the scheduler's Prometheus series. One set per process: the
// dispatcher and the command handler share it.
type Metrics struct {
	scheduled     prometheus.Counter
	cancelled     prometheus.Counter
	dispatched    prometheus.Counter
	refused       prometheus.Counter
	lateness      prometheus.Histogram
	pending       prometheus.Gauge
	due           prometheus.Gauge
	oldestOverdue prometheus.Gauge
}

// NewMetrics registers the scheduler's series on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		scheduled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gdpr_scheduler_scheduled_total",
			Help: "Messages scheduled through scheduler.schedule commands handled by this process.",
		}),
		cancelled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gdpr_scheduler_cancelled_total",
			Help: "Pending messages removed through scheduler.cancel commands handled by this process.",
		}),
		dispatched: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gdpr_scheduler_dispatched_total",
			Help: "Messages published with a broker confirm and marked sent by this process.",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gdpr_scheduler_refused_total",
			Help: "Publishes the broker refused (unroutable, nacked, missing exchange); retried after a backoff.",
		}),
		lateness: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gdpr_scheduler_lateness_seconds",
			Help:    "Broker confirm time minus due time of each dispatched message.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gdpr_scheduler_pending",
			Help: "Messages waiting in PostgreSQL to be published (due or not).",
		}),
		due: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gdpr_scheduler_due",
			Help: "Pending messages whose due time has passed.",
		}),
		oldestOverdue: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gdpr_scheduler_oldest_overdue_seconds",
			Help: "Age past its due time of the oldest pending message that is due; 0 when none is.",
		}),
	}
	reg.MustRegister(m.scheduled, m.cancelled, m.dispatched, m.refused, m.lateness, m.pending, m.due, m.oldestOverdue)
	return m
}
