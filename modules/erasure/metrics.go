package erasure

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"gorm.io/gorm"
)

// Metrics are the canceller's counters. Labels carry participant names and
// outcomes only, never personal data.
type Metrics struct {
	requested     prometheus.Counter
	completed     prometheus.Counter
	overdue       prometheus.Counter
	confirmations *prometheus.CounterVec
}

// NewMetrics registers the canceller's metrics on reg (nil: unregistered).
// When db is given, a gauge of participants needing an operator is read from
// it at every scrape.
func NewMetrics(reg prometheus.Registerer, db *gorm.DB) *Metrics {
	m := &Metrics{
		requested: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gdpr_erasures_requested_total", Help: "Erasures fanned out to the participants.",
		}),
		completed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gdpr_erasures_completed_total", Help: "Erasures confirmed by every participant but the email system.",
		}),
		overdue: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gdpr_erasures_overdue_total", Help: "Participants that became overdue (silent or failing after every re-send).",
		}),
		confirmations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gdpr_participant_confirmations_total", Help: "Confirmations applied, by participant and outcome (HTTP call results included).",
		}, []string{"participant", "outcome"}),
	}
	if reg != nil {
		reg.MustRegister(m.requested, m.completed, m.overdue, m.confirmations)
		if db != nil {
			reg.MustRegister(&attentionCollector{db: db, desc: prometheus.NewDesc(
				"gdpr_erasure_participants_attention",
				"Participants of open erasures that need an operator, by participant and state (overdue, failed, cannot_erase).",
				[]string{"participant", "state"}, nil)})
		}
	}
	return m
}

// attentionCollector reads the overdue and failed participants at scrape
// time, so the gauge is right whichever replica changed them.
type attentionCollector struct {
	db   *gorm.DB
	desc *prometheus.Desc
}

func (a *attentionCollector) Describe(ch chan<- *prometheus.Desc) { ch <- a.desc }

func (a *attentionCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var rows []struct {
		Participant string
		State       string
		N           float64
	}
	err := a.db.WithContext(ctx).Raw(`SELECT participant, state, count(*) AS n FROM erasure_participants
		WHERE state IN ? GROUP BY participant, state`, needsOperator()).Scan(&rows).Error
	if err != nil {
		// A scrape during a database outage shows no series; the health checks report the outage.
		return
	}
	for _, r := range rows {
		ch <- prometheus.MustNewConstMetric(a.desc, prometheus.GaugeValue, r.N, r.Participant, r.State)
	}
}
