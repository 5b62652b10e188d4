package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/sesame-mail/sesame/account"
	"github.com/sesame-mail/sesame/api"
	"github.com/sesame-mail/sesame/identity"
	"github.com/sesame-mail/sesame/metrics"
	"github.com/sesame-mail/sesame/netguard"
	"github.com/sesame-mail/sesame/smtpd"
	"github.com/sesame-mail/sesame/store"
)

// apiSealKeyFile is the file in data_dir holding the key that seals the
// API secrets in the store.
const apiSealKeyFile = "api-secrets.key"

// loadSealer reads (or makes) the key that seals API secrets.
func (e *env) loadSealer() (*account.Sealer, error) {
	return account.LoadSealer(filepath.Join(e.cfg.DataDir, apiSealKeyFile))
}

// listenAPI binds the SES-compatible API ([api] listen) and serves it; nil
// when it is off. Its certificate is the submission service's unless
// [api] names its own; its connections are capped by a netguard.Guard and
// its failed signatures counted by the submission service's login guard.
func listenAPI(e *env, st *store.SQLite, sub *smtpd.Server, cert *smtpd.Certificate, m *metrics.Metrics, log *slog.Logger) (*http.Server, *netguard.Guard, error) {
	cfg := e.cfg
	if cfg.API.Listen == "" {
		return nil, nil, nil
	}
	sealer, err := e.loadSealer()
	if err != nil {
		return nil, nil, err
	}
	var tlsCfg *tls.Config
	if cfg.API.TLS {
		tlsCfg = cert.TLSConfig()
		if cfg.API.TLSCertFile != "" {
			own, err := smtpd.LoadCertificate(cfg.API.TLSCertFile, cfg.API.TLSKeyFile, cfg.DataDir, cfg.Hostname, log)
			if err != nil {
				return nil, nil, fmt.Errorf("api: %w", err)
			}
			tlsCfg = own.TLSConfig()
		}
	}
	l, err := net.Listen("tcp", cfg.API.Listen)
	if err != nil {
		return nil, nil, fmt.Errorf("api: listen on %s: %w (set [api] listen to a free address, or \"\" to turn the API off)", cfg.API.Listen, err)
	}
	apiLog := log.With("part", "api")
	idCfg := e.identityConfig()
	idCfg.Logger = apiLog
	checker, err := identity.NewChecker(idCfg)
	if err != nil {
		return nil, nil, err
	}
	ids := &apiIdentities{SQLite: st, e: e, cfg: idCfg, dmarc: checker, addrs: identity.NewAddressVerifier(idCfg, st, st)}
	handler := api.New(api.Config{MaxMessageBytes: cfg.Submission.MaxMessageBytes,
		MaxInflightBytes: cfg.Submission.MaxInflightBytes, Logger: apiLog, Now: time.Now},
		api.Deps{Submitter: sub, Keys: account.NewKeys(st, sealer), Guard: sub, Usage: st, Templates: st, Suppressions: st,
			Identities: ids, Quotas: e.quotaDefaults()})
	srv := netguard.HTTPServer(handler, netguard.HTTPConfig{ReadTimeout: cfg.API.ReadTimeout.Duration,
		WriteTimeout: cfg.API.WriteTimeout.Duration, IdleTimeout: cfg.API.IdleTimeout.Duration,
		MaxBodyBytes: api.MaxBodyBytes(cfg.Submission.MaxMessageBytes), TooLarge: api.TooLarge, Logger: apiLog})
	srv.ConnContext = api.ConnContext
	// Strangers (no valid signature yet) get half the slots: an app's
	// workers open their connections together and each is a stranger
	// until its first request is signed, so a quarter, as on the
	// submission ports, would turn away a pool of 50 from one address.
	conns := netguard.New(netguard.Config{Name: "api", MaxConns: cfg.API.MaxConnections, MaxPerIP: cfg.API.MaxConnectionsPerIP,
		MaxUnauthenticated: max(1, cfg.API.MaxConnections/2), MaxUnauthenticatedPerIP: max(1, cfg.API.MaxConnectionsPerIP/2),
		Logger: apiLog, Metrics: m})
	var ln net.Listener = conns.Wrap(l, nil)
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	log.Info("api listening", "addr", l.Addr().String(), "tls", tlsCfg != nil)
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("api server failed", "err", err)
		}
	}()
	return srv, conns, nil
}

// apiIdentities is api.Identities: the store's domains and addresses, new
// domains made as `sesame domain add` makes them, new addresses verified
// by mail as `sesame address add` does (refused when their domain's DMARC
// policy would junk them; only the operator may --force).
type apiIdentities struct {
	*store.SQLite
	e     *env
	cfg   identity.Config
	dmarc identity.DMARCLookup
	addrs *identity.AddressVerifier
}

func (a *apiIdentities) CreateDomain(ctx context.Context, name string) (store.Domain, error) {
	d, err := a.e.newDomain(name, time.Now())
	if err != nil {
		return store.Domain{}, err
	}
	return d, a.SQLite.CreateDomain(ctx, d)
}

func (a *apiIdentities) Records(d store.Domain) ([]identity.Record, error) { return a.cfg.Records(d) }

func (a *apiIdentities) AddAddress(ctx context.Context, address string) (store.Address, error) {
	ad, _, err := a.addrs.AddSender(ctx, address, a.dmarc, false)
	return ad, err
}
