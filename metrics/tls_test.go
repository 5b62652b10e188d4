package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestTLSAndACMEMetrics(t *testing.T) {
	m := New(nil)
	expiry := time.Unix(1900000000, 0)
	m.TLSCertificate(func() time.Time { return expiry })
	m.ACMEAttempt(false, 1)
	m.ACMEAttempt(false, 2)
	m.ACMEAttempt(true, 0)
	m.ACMEAttempt(false, 1)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		"sesame_tls_certificate_expiry_timestamp_seconds 1.9e+09",
		`sesame_acme_attempts_total{result="failed"} 3`,
		`sesame_acme_attempts_total{result="ok"} 1`,
		"sesame_acme_failures_in_a_row 1",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
