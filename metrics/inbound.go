package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// inboundMetrics are the inbound listener's: what became of the reports
// that came back and what reading them cost, and what it keeps and
// refuses.
type inboundMetrics struct {
	reports   *prometheus.CounterVec
	lookups   prometheus.Counter
	seconds   prometheus.Counter
	kept      *prometheus.CounterVec
	truncated prometheus.Counter
	refused   *prometheus.CounterVec
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
		kept: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sesame_inbound_messages_total",
			Help: "Messages the inbound listener accepted and kept, by what was made of them (processed, unmatched, ignored, unparsed, unverified).",
		}, []string{"status"}),
		truncated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sesame_inbound_truncated_total",
			Help: "Inbound messages kept only in part (longer than inbound.keep_raw_bytes).",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sesame_inbound_refused_total",
			Help: "Inbound transactions refused to bound what is kept, by reason (too_large, client_rate, storage_cap, disk_reserve, disk_full, store_failed).",
		}, []string{"reason"}),
	}
	m.reg.MustRegister(m.inbound.reports, m.inbound.lookups, m.inbound.seconds,
		m.inbound.kept, m.inbound.truncated, m.inbound.refused)
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

// InboundKept counts a message the inbound listener kept, with its status
// (a fixed set) and whether only its start was kept.
func (m *Metrics) InboundKept(status string, truncated bool) {
	m.inbound.kept.WithLabelValues(status).Inc()
	if truncated {
		m.inbound.truncated.Inc()
	}
}

// InboundRefused counts an inbound transaction refused for reason, one of
// a fixed set chosen by the caller.
func (m *Metrics) InboundRefused(reason string) { m.inbound.refused.WithLabelValues(reason).Inc() }

// InboundStorage exports, at each scrape, what the inbound listener keeps
// (messages and bytes) and the caps on it.
func (m *Metrics) InboundStorage(totals func(context.Context) (messages int, bytes int64, err error), maxMessages int, maxBytes int64) {
	m.reg.MustRegister(&inboundCollector{totals: totals, maxMessages: maxMessages, maxBytes: maxBytes})
}

var (
	inboundStoredMessagesDesc = prometheus.NewDesc("sesame_inbound_stored_messages",
		"Inbound messages kept (sesame inbound list).", nil, nil)
	inboundStoredBytesDesc = prometheus.NewDesc("sesame_inbound_stored_bytes",
		"Bytes of inbound messages kept, as inbound.max_stored_bytes counts them.", nil, nil)
	inboundMaxMessagesDesc = prometheus.NewDesc("sesame_inbound_stored_messages_limit",
		"inbound.max_stored_messages: past it, inbound mail is refused with 452 4.3.1.", nil, nil)
	inboundMaxBytesDesc = prometheus.NewDesc("sesame_inbound_stored_bytes_limit",
		"inbound.max_stored_bytes: past it, inbound mail is refused with 452 4.3.1.", nil, nil)
)

type inboundCollector struct {
	totals      func(context.Context) (int, int64, error)
	maxMessages int
	maxBytes    int64
}

func (c *inboundCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- inboundStoredMessagesDesc
	ch <- inboundStoredBytesDesc
	ch <- inboundMaxMessagesDesc
	ch <- inboundMaxBytesDesc
}

func (c *inboundCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(inboundMaxMessagesDesc, prometheus.GaugeValue, float64(c.maxMessages))
	ch <- prometheus.MustNewConstMetric(inboundMaxBytesDesc, prometheus.GaugeValue, float64(c.maxBytes))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, b, err := c.totals(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(inboundStoredMessagesDesc, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(inboundStoredMessagesDesc, prometheus.GaugeValue, float64(n))
	ch <- prometheus.MustNewConstMetric(inboundStoredBytesDesc, prometheus.GaugeValue, float64(b))
}
