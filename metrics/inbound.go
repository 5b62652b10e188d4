package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// inboundMetrics count what the inbound listener keeps and refuses.
type inboundMetrics struct {
	kept      *prometheus.CounterVec
	truncated prometheus.Counter
	refused   *prometheus.CounterVec
}

func newInboundMetrics(reg *prometheus.Registry) inboundMetrics {
	m := inboundMetrics{
		kept: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sesame_inbound_messages_total",
			Help: "Messages the inbound listener accepted and kept, by what was made of them (processed, unmatched, ignored, unparsed).",
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
	reg.MustRegister(m.kept, m.truncated, m.refused)
	return m
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
