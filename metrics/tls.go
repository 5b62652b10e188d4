package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TLSCertificate exports, at each scrape, when the certificate the TLS
// listeners serve expires (notAfter), whatever its source: the files, ACME
// or self-signed. An alert on it catches every renewal that stopped.
func (m *Metrics) TLSCertificate(notAfter func() time.Time) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sesame_tls_certificate_expiry_timestamp_seconds",
		Help: "When the certificate the TLS listeners serve expires, as a Unix time; alert when it is less than 14 days away.",
	}, func() float64 { return float64(notAfter().Unix()) }))
}

// acmeMetrics counts the attempts to get a certificate from the ACME CA.
type acmeMetrics struct {
	attempts *prometheus.CounterVec
	inARow   prometheus.Gauge
}

func (m *Metrics) registerACME() {
	m.acme = acmeMetrics{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sesame_acme_attempts_total",
			Help: "Attempts to get a certificate from the ACME CA ([tls] acme_domains), by result (ok, failed).",
		}, []string{"result"}),
		inARow: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sesame_acme_failures_in_a_row",
			Help: "Attempts to get a certificate from the ACME CA that failed since the last success; above 0, the current certificate is still served but not renewed.",
		}),
	}
	m.reg.MustRegister(m.acme.attempts, m.acme.inARow)
}

// ACMEAttempt counts one attempt to get a certificate from the ACME CA and
// sets the failures in a row (0 after a success), the gauge to alert on:
// while it is above 0 the old certificate is still served, and it expires
// unless a later attempt succeeds.
func (m *Metrics) ACMEAttempt(ok bool, failuresInARow int) {
	result := "ok"
	if !ok {
		result = "failed"
	}
	m.acme.attempts.WithLabelValues(result).Inc()
	m.acme.inARow.Set(float64(failuresInARow))
}
