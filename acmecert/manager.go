// Package acmecert gets the listeners' TLS certificate from an ACME
// certificate authority (RFC 8555; Let's Encrypt by default) and renews it
// before it expires, so an operator needs no certbot and no reload hook.
//
// A Manager keeps one certificate for the configured names in its
// directory (data_dir/acme): the account key and registration, and the
// certificate with its key in one file, written atomically. It obtains the
// certificate when there is none (or it does not cover the names), and
// renews it at two thirds of its life (a 90-day certificate after 60 days,
// the point Let's Encrypt recommends). It proves control of the names with
// HTTP-01 (HTTPHandler, on a listener on port 80) or TLS-ALPN-01
// (TLSALPNConfig, on a TLS listener on port 443), whichever the operator
// set up. After each new certificate it calls OnCertificate, and the
// listeners serve the new one from their next handshake.
//
// A failed attempt changes nothing that is served: the old certificate
// stays in use, the failure is logged at ERROR and counted in the metrics,
// and the attempt is retried with a growing delay (RetryFirst doubling up
// to RetryMax).
//
// The ACME protocol itself is lego's (github.com/go-acme/lego); this
// package holds the policy: when to renew, where the files are, how the
// challenges are answered, what is reported.
package acmecert

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-acme/lego/v5/certcrypto"
	"github.com/go-acme/lego/v5/certificate"
	"github.com/go-acme/lego/v5/lego"
)

// LetsEncrypt is the default directory: Let's Encrypt's production CA.
const LetsEncrypt = "https://acme-v02.api.letsencrypt.org/directory"

// Config configures a Manager.
type Config struct {
	// Domains are the names the certificate is for; the first is its
	// subject. Clients must connect by one of them.
	Domains []string
	// Email is the account's contact, where the CA may write about
	// problems; optional.
	Email string
	// Directory is the CA's ACME directory URL (LetsEncrypt when empty).
	Directory string
	// Roots are the roots trusted for the CA's own HTTPS (nil: the
	// system's), for a private CA or a test CA.
	Roots *x509.CertPool
	// Dir holds the account and the certificate (data_dir/acme).
	Dir string
	// HTTP01 and TLSALPN01 say which challenges the operator can answer:
	// HTTPHandler reachable on port 80, TLSALPNConfig on port 443. At
	// least one must be true.
	HTTP01, TLSALPN01 bool
	// RetryFirst and RetryMax bound the wait after a failed attempt
	// (defaults 1 minute and 1 hour; a CA counts failed validations, and
	// Let's Encrypt allows 5 an hour for a name).
	RetryFirst, RetryMax time.Duration
	// OnCertificate is called after each new certificate is stored, for
	// the listeners to serve it.
	OnCertificate func()
	// Metrics receives the outcome of every attempt; optional.
	Metrics Metrics
	// Now is the clock (time.Now when nil).
	Now    func() time.Time
	Logger *slog.Logger
}

// Metrics is what the manager reports, for alerts: each attempt's outcome
// with the failures in a row (0 after a success).
type Metrics interface {
	ACMEAttempt(ok bool, failuresInARow int)
}

// Manager obtains and renews the certificate. Its methods may be called
// from any goroutine.
type Manager struct {
	cfg Config
	log *slog.Logger

	current atomic.Pointer[tls.Certificate] // what is stored, with Leaf set; nil: none yet
	from    string                          // the directory current came from; Run's goroutine only, after New
	http01  sync.Map                        // token → key authorization
	alpnMu  sync.Mutex
	alpn    map[string]*tls.Certificate // name → TLS-ALPN-01 challenge certificate

	failures int // attempts failed in a row; Run's goroutine only
}

// New checks the configuration, creates the directory and reads the
// certificate already stored there, if any.
func New(cfg Config) (*Manager, error) {
	if len(cfg.Domains) == 0 {
		return nil, errors.New("acme: no domain names")
	}
	if !cfg.HTTP01 && !cfg.TLSALPN01 {
		return nil, errors.New("acme: no challenge can be answered: set [tls] acme_http_listen (HTTP-01, port 80) or acme_tls_listen (TLS-ALPN-01, port 443)")
	}
	if cfg.Directory == "" {
		cfg.Directory = LetsEncrypt
	}
	if cfg.RetryFirst <= 0 {
		cfg.RetryFirst = time.Minute
	}
	if cfg.RetryMax < cfg.RetryFirst {
		cfg.RetryMax = max(time.Hour, cfg.RetryFirst)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("acme: create %s: %w", cfg.Dir, err)
	}
	m := &Manager{cfg: cfg, log: cfg.Logger, alpn: map[string]*tls.Certificate{}}
	cert, err := loadCertificate(m.certPath())
	if err != nil {
		// A damaged file is replaced by the next certificate.
		m.log.Error("the stored ACME certificate cannot be read; getting a new one", "err", err)
	}
	if cert != nil {
		m.current.Store(cert)
		b, _ := os.ReadFile(filepath.Join(cfg.Dir, certFromFile))
		m.from = strings.TrimSpace(string(b))
	}
	return m, nil
}

// Certificate returns the stored certificate, or nil before the first one
// is issued.
func (m *Manager) Certificate() *tls.Certificate { return m.current.Load() }

// Run keeps the certificate current until ctx ends.
func (m *Manager) Run(ctx context.Context) {
	var timer *time.Timer
	for {
		next := m.check(ctx)
		wait := next.Sub(m.cfg.Now())
		if wait < 0 {
			wait = 0
		}
		if timer == nil {
			timer = time.NewTimer(wait)
			defer timer.Stop()
		} else {
			timer.Reset(wait)
		}
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
	}
}

// check obtains a certificate when one is due, and returns when to look
// again.
func (m *Manager) check(ctx context.Context) time.Time {
	now := m.cfg.Now()
	cert := m.current.Load()
	due, why := m.renewalDue(cert)
	if now.Before(due) {
		return due
	}
	m.log.Info("getting a TLS certificate from the ACME CA", "why", why, "domains", strings.Join(m.cfg.Domains, ","),
		"directory", m.cfg.Directory)
	next, err := m.obtain(ctx)
	if ctx.Err() != nil {
		return now
	}
	if err != nil {
		m.failures++
		retry := m.retryDelay()
		args := []any{"err", err, "failures_in_a_row", m.failures, "retry_in", retry}
		if cert != nil {
			args = append(args, "serving_until", cert.Leaf.NotAfter)
			m.log.Error("getting a TLS certificate failed; the current one is still served", args...)
		} else {
			m.log.Error("getting a TLS certificate failed; the listeners serve a self-signed one meanwhile", args...)
		}
		if m.cfg.Metrics != nil {
			m.cfg.Metrics.ACMEAttempt(false, m.failures)
		}
		return now.Add(retry)
	}
	m.failures = 0
	m.current.Store(next)
	if m.cfg.Metrics != nil {
		m.cfg.Metrics.ACMEAttempt(true, 0)
	}
	renew, _ := m.renewalDue(next)
	m.log.Info("new TLS certificate from the ACME CA", "domains", strings.Join(next.Leaf.DNSNames, ","),
		"not_after", next.Leaf.NotAfter, "renew_at", renew, "serial", next.Leaf.SerialNumber.Text(16))
	if m.cfg.OnCertificate != nil {
		m.cfg.OnCertificate()
	}
	return renew
}

// renewalDue returns when cert should be replaced, and why: at once when
// there is none or it lacks a configured name, else at two thirds of its
// life.
func (m *Manager) renewalDue(cert *tls.Certificate) (time.Time, string) {
	if cert == nil {
		return time.Time{}, "no certificate yet"
	}
	if m.from != m.cfg.Directory {
		// Say from the staging CA to production: clients would not trust it.
		return time.Time{}, "the certificate comes from another ACME directory than " + m.cfg.Directory
	}
	for _, d := range m.cfg.Domains {
		if !slices.Contains(cert.Leaf.DNSNames, strings.ToLower(d)) {
			return time.Time{}, "the certificate does not name " + d
		}
	}
	return RenewAt(cert.Leaf), "renewal: two thirds of its life have passed"
}

// RenewAt is when a certificate is renewed: after two thirds of its life.
func RenewAt(leaf *x509.Certificate) time.Time {
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	return leaf.NotBefore.Add(life / 3 * 2)
}

// retryDelay is the wait after the latest failure: RetryFirst, doubled for
// each failure in a row, at most RetryMax.
func (m *Manager) retryDelay() time.Duration {
	d := m.cfg.RetryFirst
	for i := 1; i < m.failures && d < m.cfg.RetryMax; i++ {
		d *= 2
	}
	return min(d, m.cfg.RetryMax)
}

// obtain gets a new certificate and stores it.
func (m *Manager) obtain(ctx context.Context) (*tls.Certificate, error) {
	client, err := m.client(ctx)
	if err != nil {
		return nil, err
	}
	res, err := client.Certificate.Obtain(ctx, certificate.ObtainRequest{Domains: m.cfg.Domains, Bundle: true, KeyType: certcrypto.EC256})
	if err != nil {
		return nil, fmt.Errorf("acme: obtain a certificate for %s: %w", strings.Join(m.cfg.Domains, ", "), err)
	}
	pemBytes := append(append([]byte{}, res.PrivateKey...), res.Certificate...)
	cert, err := parseCertificate(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("acme: the CA's certificate: %w", err)
	}
	if err := writeFileAtomic(m.certPath(), pemBytes, 0o600); err != nil {
		return nil, err
	}
	if err := writeFileAtomic(filepath.Join(m.cfg.Dir, certFromFile), []byte(m.cfg.Directory+"\n"), 0o600); err != nil {
		return nil, err
	}
	m.from = m.cfg.Directory
	return cert, nil
}

// client returns an ACME client with a registered account and the
// challenge solvers set.
func (m *Manager) client(ctx context.Context) (*lego.Client, error) {
	acct, err := m.account()
	if err != nil {
		return nil, err
	}
	cfg := lego.NewConfig(acct)
	cfg.CADirURL = m.cfg.Directory
	cfg.HTTPClient = m.httpClient()
	cfg.UserAgent = "sesame"
	client, err := lego.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("acme: directory %s: %w", m.cfg.Directory, err)
	}
	if m.cfg.HTTP01 {
		if err := client.Challenge.SetHTTP01Provider(http01Provider{m}); err != nil {
			return nil, err
		}
	}
	if m.cfg.TLSALPN01 {
		if err := client.Challenge.SetTLSALPN01Provider(tlsALPNProvider{m}); err != nil {
			return nil, err
		}
	}
	if acct.reg == nil {
		if err := m.register(ctx, client, acct); err != nil {
			return nil, err
		}
	}
	return client, nil
}

// httpClient talks to the CA: bounded timeouts, the configured roots.
func (m *Manager) httpClient() *http.Client {
	return &http.Client{
		Timeout: 2 * time.Minute,
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   30 * time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
			TLSClientConfig:       &tls.Config{RootCAs: m.cfg.Roots, MinVersion: tls.VersionTLS12},
		},
	}
}
