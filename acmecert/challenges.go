package acmecert

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/go-acme/lego/v5/challenge/tlsalpn01"
	legolog "github.com/go-acme/lego/v5/log"
)

// challengePath is where a CA fetches an HTTP-01 key authorization
// (RFC 8555 §8.3).
const challengePath = "/.well-known/acme-challenge/"

// HTTPHandler answers the CA's HTTP-01 requests for the challenges in
// progress and 404 to anything else; it belongs on a listener the CA
// reaches on port 80.
func (m *Manager) HTTPHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.URL.Path, challengePath)
		if ok && r.Method == http.MethodGet {
			if keyAuth, found := m.http01.Load(token); found {
				w.Header().Set("Content-Type", "text/plain")
				w.Write([]byte(keyAuth.(string)))
				return
			}
		}
		http.NotFound(w, r)
	})
}

// http01Provider hands HTTP-01 key authorizations to HTTPHandler.
type http01Provider struct{ m *Manager }

func (p http01Provider) Present(_ context.Context, _, token, keyAuth string) error {
	p.m.http01.Store(token, keyAuth)
	return nil
}

func (p http01Provider) CleanUp(_ context.Context, _, token, _ string) error {
	p.m.http01.Delete(token)
	return nil
}

// tlsALPNProvider hands TLS-ALPN-01 challenge certificates to
// TLSALPNConfig.
type tlsALPNProvider struct{ m *Manager }

func (p tlsALPNProvider) Present(_ context.Context, domain, _, keyAuth string) error {
	cert, err := tlsalpn01.ChallengeCert(domain, keyAuth)
	if err != nil {
		return err
	}
	p.m.alpnMu.Lock()
	p.m.alpn[strings.ToLower(domain)] = cert
	p.m.alpnMu.Unlock()
	return nil
}

func (p tlsALPNProvider) CleanUp(_ context.Context, domain, _, _ string) error {
	p.m.alpnMu.Lock()
	delete(p.m.alpn, strings.ToLower(domain))
	p.m.alpnMu.Unlock()
	return nil
}

// TLSALPNConfig is a tls.Config GetConfigForClient: for a client that
// offers only the acme-tls/1 protocol (a CA validating TLS-ALPN-01, RFC
// 8737) it returns the challenge certificate of the name asked for; for
// every other client nil, so the listener's own configuration applies.
func (m *Manager) TLSALPNConfig(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	if !slices.Contains(hello.SupportedProtos, tlsalpn01.ACMETLS1Protocol) {
		return nil, nil
	}
	m.alpnMu.Lock()
	cert := m.alpn[strings.ToLower(hello.ServerName)]
	m.alpnMu.Unlock()
	if cert == nil {
		return nil, errors.New("acme: no TLS-ALPN-01 challenge in progress for this name")
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{*cert},
		NextProtos:   []string{tlsalpn01.ACMETLS1Protocol},
	}, nil
}

// alpnHandshakeTimeout bounds one validation connection.
const alpnHandshakeTimeout = 10 * time.Second

// ServeTLSALPN answers TLS-ALPN-01 validations on l (a listener the CA
// reaches on port 443) until l is closed: each connection gets a TLS
// handshake with the challenge certificate and is closed. Clients that do
// not offer acme-tls/1 fail the handshake; nothing else is served there.
func (m *Manager) ServeTLSALPN(l net.Listener) error {
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		GetConfigForClient: m.TLSALPNConfig,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return nil, errors.New("acme: this listener answers only TLS-ALPN-01 validations")
		},
	}
	for {
		c, err := l.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return err
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(alpnHandshakeTimeout))
			tc := tls.Server(c, cfg)
			if err := tc.Handshake(); err != nil {
				m.log.Debug("TLS-ALPN-01 listener: handshake failed", "client", c.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

// SetLibraryLogger sends lego's own log lines to log, its routine Info
// lines (every step of every order) at Debug: the Manager logs what an
// operator needs. lego has one logger for the whole process.
func SetLibraryLogger(log *slog.Logger) {
	legolog.SetDefault(slog.New(demoteInfo{log.Handler()}))
}

// demoteInfo passes records to h with Info lowered to Debug.
type demoteInfo struct{ h slog.Handler }

func (d demoteInfo) level(l slog.Level) slog.Level {
	if l == slog.LevelInfo {
		return slog.LevelDebug
	}
	return l
}

func (d demoteInfo) Enabled(ctx context.Context, l slog.Level) bool {
	return d.h.Enabled(ctx, d.level(l))
}

func (d demoteInfo) Handle(ctx context.Context, r slog.Record) error {
	r.Level = d.level(r.Level)
	return d.h.Handle(ctx, r)
}

func (d demoteInfo) WithAttrs(as []slog.Attr) slog.Handler { return demoteInfo{d.h.WithAttrs(as)} }
func (d demoteInfo) WithGroup(name string) slog.Handler    { return demoteInfo{d.h.WithGroup(name)} }
