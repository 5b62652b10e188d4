package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// inboundMetrics are the inbound listener's: what became of the reports
// that came back, and what reading them cost.
type inboundMetrics struct {
	reports *prometheus.CounterVec
	lookups prometheus.Counter
	seconds prometheus.Counter
}

func (m *Metrics) registerInbound() {
	m.inbound = inboundMetrics{
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sesame_inbound_reports_total",
			Help: "Messages received by the inbound listener, by kind (dsn, arf, none: not a report) and verdict (verified: proved who sent it and may record bounces or complaints; unverified: recorded nothing; over_budget: kept unexamined, its client was over its processing budget; none: nothing to record).",
		}, []string{"kind", "verdict"}),
		lookups: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sesame_inbound_lookups_total",
			Help: "Store lookups of the original message made for inbound reports (at most one per report).",
		}),
		seconds: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sesame_inbound_processing_seconds_total",
			Help: "Time spent examining inbound reports (parsing, DKIM verification, lookups), the time the per-client budget counts.",
		}),
	}
	m.reg.MustRegister(m.inbound.reports, m.inbound.lookups, m.inbound.seconds)
}

// InboundReport counts one report the inbound listener examined (or, with
// verdict over_budget, kept unexamined).
func (m *Metrics) InboundReport(kind, verdict string, lookups int, took time.Duration) {
	if kind == "" {
		kind = "none"
	}
	m.inbound.reports.WithLabelValues(kind, verdict).Inc()
	m.inbound.lookups.Add(float64(lookups))
	m.inbound.seconds.Add(took.Seconds())
}
