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
	// ReasonRetryExpired: the handler kept failing for longer than
	// amqp.retry_for.
	ReasonRetryExpired = "retry_expired"
	// ReasonDeliveryLimit: the message's deliveries kept ending without a
	// verdict (its consumer crashed or lost its channel) until the queue's
	// delivery limit was reached.
	ReasonDeliveryLimit = "delivery_limit"
)

// Metrics are the bus's Prometheus metrics. A nil *Metrics records nothing.
type Metrics struct {
	confirm     prometheus.Histogram
	deadLetters *prometheus.CounterVec
	retries     *prometheus.CounterVec
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
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gdpr_consumer_retries_total",
			Help: "Messages put back for another attempt after their handler failed, by queue.",
		}, []string{"queue"}),
	}
	reg.MustRegister(m.confirm, m.deadLetters, m.retries)
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

func (m *Metrics) retried(queue string) {
	if m == nil {
		return
	}
	m.retries.WithLabelValues(queue).Inc()
}
