package bus

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Dead-letter reasons, the only values of the reason label of
// gdpr_dead_letters_total: a fixed set, never an error's text.
const (
	// ReasonPoison: the handler returned Poison(err).
	ReasonPoison = "poison"
	// ReasonMalformed: the message could not be read at all (no message_id,
	// body not JSON).
	ReasonMalformed = "malformed"
	// ReasonDeliveryLimit: the handler kept failing until the queue's
	// delivery limit was reached.
	ReasonDeliveryLimit = "delivery_limit"
)

// Metrics are the bus's Prometheus metrics. A nil *Metrics records nothing.
type Metrics struct {
	confirm     prometheus.Histogram
	deadLetters *prometheus.CounterVec
}

// NewMetrics registers the bus metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		confirm: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gdpr_amqp_publish_confirm_seconds",
			Help:    "Time from publishing a message until the broker confirmed it (confirmed publishes only).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gdpr_dead_letters_total",
			Help: "Messages a consumer sent to the dead-letter queue, by queue and reason class.",
		}, []string{"queue", "reason"}),
	}
	reg.MustRegister(m.confirm, m.deadLetters)
	return m
}

func (m *Metrics) observeConfirm(d time.Duration) {
	if m == nil {
		return
	}
	m.confirm.Observe(d.Seconds())
}

func (m *Metrics) deadLettered(queue, reason string) {
	if m == nil {
		return
	}
	m.deadLetters.WithLabelValues(queue, reason).Inc()
}
