package main

import (
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/sesame-mail/sesame/acmecert"
	"github.com/sesame-mail/sesame/config"
	"github.com/sesame-mail/sesame/metrics"
	"github.com/sesame-mail/sesame/netguard"
)

// The challenge listeners are public (ports 80 and 443) but serve only a
// CA's few validation requests: small caps and short timeouts.
const (
	acmeMaxConns      = 64
	acmeMaxConnsPerIP = 8
	acmeTimeout       = 10 * time.Second
)

// newACME builds the ACME manager when [tls] acme_domains is set (nil
// otherwise). onCert is called after each new certificate.
func newACME(cfg *config.Config, m *metrics.Metrics, log *slog.Logger, onCert func()) (*acmecert.Manager, error) {
	t := cfg.TLS
	if len(t.ACMEDomains) == 0 {
		return nil, nil
	}
	var roots *x509.CertPool
	if t.ACMECAFile != "" {
		b, err := os.ReadFile(t.ACMECAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.acme_ca_file: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("tls.acme_ca_file: %s holds no PEM certificate", t.ACMECAFile)
		}
	}
	acmecert.SetLibraryLogger(log)
	return acmecert.New(acmecert.Config{
		Domains:       t.ACMEDomains,
		Email:         t.ACMEEmail,
		Directory:     t.ACMEDirectory,
		Roots:         roots,
		Dir:           filepath.Join(cfg.DataDir, "acme"),
		HTTP01:        t.ACMEHTTPListen != "",
		TLSALPN01:     t.ACMETLSListen != "",
		OnCertificate: onCert,
		Metrics:       m,
		Logger:        log,
	})
}

// listenACME opens the challenge listeners ([tls] acme_http_listen and
// acme_tls_listen) and serves them; close stops them.
func listenACME(cfg *config.Config, acm *acmecert.Manager, m *metrics.Metrics, log *slog.Logger) (stats []*netguard.Guard, close func(), err error) {
	var closers []func()
	close = func() {
		for _, c := range closers {
			c()
		}
	}
	if a := cfg.TLS.ACMEHTTPListen; a != "" {
		l, err := net.Listen("tcp", a)
		if err != nil {
			return nil, close, fmt.Errorf("tls.acme_http_listen: listen on %s: %w", a, err)
		}
		g := netguard.New(netguard.Config{Name: "acme-http", MaxConns: acmeMaxConns, MaxPerIP: acmeMaxConnsPerIP, Logger: log, Metrics: m})
		srv := netguard.HTTPServer(acm.HTTPHandler(), netguard.HTTPConfig{ReadTimeout: acmeTimeout, WriteTimeout: acmeTimeout,
			IdleTimeout: acmeTimeout, MaxBodyBytes: 1024, Logger: log})
		log.Info("ACME HTTP-01 listening", "addr", l.Addr().String())
		go func() {
			if err := srv.Serve(g.Wrap(l, nil)); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("ACME HTTP-01 listener failed", "err", err)
			}
		}()
		stats = append(stats, g)
		closers = append(closers, func() { srv.Close() })
	}
	if a := cfg.TLS.ACMETLSListen; a != "" {
		l, err := net.Listen("tcp", a)
		if err != nil {
			return nil, close, fmt.Errorf("tls.acme_tls_listen: listen on %s: %w", a, err)
		}
		g := netguard.New(netguard.Config{Name: "acme-tls", MaxConns: acmeMaxConns, MaxPerIP: acmeMaxConnsPerIP, Logger: log, Metrics: m})
		gl := g.Wrap(l, nil)
		log.Info("ACME TLS-ALPN-01 listening", "addr", l.Addr().String())
		go acm.ServeTLSALPN(gl)
		stats = append(stats, g)
		closers = append(closers, func() { gl.Close() })
	}
	return stats, close, nil
}
