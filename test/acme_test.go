package test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sesame-mail/sesame/testkit"
)

// acmeDomain is the name the instance gets its certificate for; the
// instance's DNS server sends it to 127.0.0.1, where pebble validates it.
const acmeDomain = "mail.sesame.test"

// TestACMEIssueAndRenew: serve gets its certificate from pebble (a real
// ACME CA on loopback, validating HTTP-01 against serve's acme_http_listen),
// serves it on both submission ports, and renews it at two thirds of its
// life (pebble issues 15-second certificates here) while a client keeps
// handshaking, alternately on the implicit-TLS port and with STARTTLS: the
// served certificate changes and no handshake fails. After a restart the
// stored certificate is served from the first handshake.
func TestACMEIssueAndRenew(t *testing.T) {
	i := newInstance(t)
	httpPort := freeAddr(t, "127.0.0.1")
	_, p, _ := net.SplitHostPort(httpPort)
	port, _ := strconv.Atoi(p)
	i.zone.Add(t, acmeDomain+". 60 IN A 127.0.0.1")
	ca := testkit.StartPebble(t, testkit.PebbleOptions{DNSServer: i.zone.Addr, HTTPPort: port, TLSPort: port,
		Validity: 15 * time.Second, AuthzReuse: 100})
	i.configure(map[string]any{
		"tls.acme_domains":     []string{acmeDomain},
		"tls.acme_email":       "ops@sesame.test",
		"tls.acme_directory":   ca.Directory,
		"tls.acme_ca_file":     ca.CAFile,
		"tls.acme_http_listen": httpPort,
	})
	i.start()
	roots := ca.Roots(t)

	// The first certificate: the self-signed one is served until it comes.
	deadline := time.Now().Add(90 * time.Second)
	var first *x509.Certificate
	for first == nil {
		leaf, err := handshake(i.tlsAddr, false, roots)
		switch {
		case err == nil:
			first = leaf
		case time.Now().After(deadline):
			t.Fatalf("no handshake verified against pebble's root within 90 s: %v", err)
		default:
			time.Sleep(100 * time.Millisecond)
		}
	}
	t.Logf("first certificate %x, valid %s to %s", first.SerialNumber, first.NotBefore, first.NotAfter)

	// Handshakes until the certificate has changed and a few more after.
	serials := map[string]int{}
	var failures []string
	handshakes, after := 0, 0
	deadline = time.Now().Add(90 * time.Second)
	for after < 10 {
		if time.Now().After(deadline) {
			t.Fatalf("the certificate did not change within 90 s (%d handshakes, serials %v)", handshakes, serials)
		}
		starttls := handshakes%2 == 1
		leaf, err := handshake(map[bool]string{false: i.tlsAddr, true: i.smtpAddr}[starttls], starttls, roots)
		handshakes++
		if err != nil {
			failures = append(failures, fmt.Sprintf("%s (STARTTLS %v)", err, starttls))
		} else {
			serials[leaf.SerialNumber.Text(16)]++
			if leaf.SerialNumber.Cmp(first.SerialNumber) != 0 {
				after++
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%d handshakes, by certificate serial: %v", handshakes, serials)
	if len(failures) > 0 {
		t.Errorf("%d of %d handshakes failed, the first: %s", len(failures), handshakes, failures[0])
	}

	metrics := scrape(t, i)
	if v, ok := metricValue(t, metrics, "sesame_acme_failures_in_a_row"); !ok || v != 0 {
		t.Errorf("/metrics: sesame_acme_failures_in_a_row %v (present %v), want 0", v, ok)
	}
	if !strings.Contains(metrics, `sesame_acme_attempts_total{result="ok"}`) {
		t.Error(`/metrics lacks sesame_acme_attempts_total{result="ok"}`)
	}
	if v, _ := metricValue(t, metrics, "sesame_tls_certificate_expiry_timestamp_seconds"); v <= float64(first.NotAfter.Unix()) {
		t.Errorf("/metrics: certificate expiry %v, want after the first certificate's %d", v, first.NotAfter.Unix())
	}

	// A restart serves the stored certificate at once, not the self-signed one.
	i.stop()
	i.start()
	if _, err := handshake(i.tlsAddr, false, roots); err != nil {
		t.Errorf("the first handshake after a restart: %v (want the stored ACME certificate)", err)
	}
}

// handshake does one TLS handshake with Sesame, on the implicit-TLS port
// or with STARTTLS, checking the certificate for acmeDomain against roots,
// and returns the certificate served.
func handshake(addr string, starttls bool, roots *x509.CertPool) (*x509.Certificate, error) {
	cfg := &tls.Config{ServerName: acmeDomain, RootCAs: roots}
	var state tls.ConnectionState
	if starttls {
		c, err := smtp.DialStartTLS(addr, cfg)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		// The handshake runs at the first command after STARTTLS.
		if err := c.Noop(); err != nil {
			return nil, err
		}
		s, ok := c.TLSConnectionState()
		if !ok {
			return nil, fmt.Errorf("no TLS after STARTTLS")
		}
		state = s
	} else {
		d := &net.Dialer{Timeout: 10 * time.Second}
		c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		state = c.ConnectionState()
	}
	return state.PeerCertificates[0], nil
}
