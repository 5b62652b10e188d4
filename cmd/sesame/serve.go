package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os/signal"
	"syscall"
	"time"

	"github.com/sesame-mail/sesame/account"
	"github.com/sesame-mail/sesame/config"
	"github.com/sesame-mail/sesame/dkim"
	"github.com/sesame-mail/sesame/identity"
	"github.com/sesame-mail/sesame/relay"
	"github.com/sesame-mail/sesame/smtpd"
	"github.com/sesame-mail/sesame/web"
)

// shutdownGrace bounds how long a stop waits for SMTP sessions in progress.
const shutdownGrace = 20 * time.Second

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(cfg.LogLevel)) // validated by config
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// runServe runs the service until SIGINT or SIGTERM.
func runServe(e *env, _ []string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return serve(ctx, e, nil)
}

// serve assembles the whole service: store → (auth, signer, policy, quotas)
// → submission listeners → queue → relay, plus the HTTP listener and the
// domain verifier; then it runs until ctx ends. started, if not nil, is
// called once everything listens.
func serve(ctx context.Context, e *env, started func()) error {
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	cfg := e.cfg
	log := newLogger(cfg, e.stderr)
	if cfg.Path == "" {
		log.Warn("no configuration file; using built-in defaults", "data_dir", cfg.DataDir, "see", "docs/configuration.md")
	}

	st, err := e.openStore()
	if err != nil {
		return err
	}
	defer st.Close()
	// This node is the queue's only user: leases left by a previous run
	// that died would otherwise hold its mail back until they expire.
	if err := st.ReleaseLeases(ctx); err != nil {
		return err
	}

	tlsConfig, err := smtpd.TLSConfig(cfg.Submission.TLSCertFile, cfg.Submission.TLSKeyFile, cfg.DataDir, cfg.Hostname, log)
	if err != nil {
		return err
	}
	sub := smtpd.New(smtpd.Config{
		Hostname:              cfg.Hostname,
		StartTLSListen:        cfg.Submission.StartTLSListen,
		TLSListen:             cfg.Submission.TLSListen,
		TLS:                   tlsConfig,
		MaxMessageBytes:       cfg.Submission.MaxMessageBytes,
		MaxRecipients:         cfg.Submission.MaxRecipients,
		MaxConnections:        cfg.Submission.MaxConnections,
		MaxConnectionsPerIP:   cfg.Submission.MaxConnectionsPerIP,
		ReadTimeout:           cfg.Submission.ReadTimeout.Duration,
		WriteTimeout:          cfg.Submission.WriteTimeout.Duration,
		FallbackSigningDomain: cfg.DKIM.FallbackDomain,
		Logger:                log.With("part", "smtpd"),
	}, smtpd.Deps{
		Auth:   account.NewAuthenticator(st, time.Now, cfg.Submission.AuthCacheTTL.Duration),
		Signer: dkim.NewDomainSigner(st),
		Queue:  st,
		Policy: identity.NewAuthorizer(st),
		Quotas: account.NewQuotas(st, e.quotaDefaults(), time.Now),
	})
	if err := sub.Listen(); err != nil {
		return err
	}

	var dnsServers []string
	for _, s := range cfg.Relay.DNSServers {
		a, _ := config.DNSServerAddr(s) // validated by config
		dnsServers = append(dnsServers, a)
	}
	rel := relay.New(relay.Config{
		Hostname:                 cfg.Hostname,
		Smarthost:                cfg.Relay.Smarthost,
		MXPort:                   cfg.Relay.MXPort,
		SourceIPs:                cfg.Relay.SourceIPs,
		DNSServers:               dnsServers,
		Workers:                  cfg.Relay.Workers,
		DomainConcurrency:        cfg.Relay.DomainConcurrency,
		RetryFirst:               cfg.Relay.RetryFirst.Duration,
		RetryMax:                 cfg.Relay.RetryMax.Duration,
		MaxLifetime:              cfg.Relay.MaxLifetime.Duration,
		DelayWarning:             cfg.Relay.DelayWarning.Duration,
		ConnectTimeout:           cfg.Relay.ConnectTimeout.Duration,
		CommandTimeout:           cfg.Relay.CommandTimeout.Duration,
		AllowPrivateDestinations: cfg.Relay.AllowPrivateDestinations,
		Logger:                   log.With("part", "relay"),
	}, st)

	idCfg := e.identityConfig()
	idCfg.Logger = log.With("part", "identity")
	checker, err := identity.NewChecker(idCfg)
	if err != nil {
		return err
	}
	verifier := identity.NewVerifier(idCfg, st, checker)
	addresses := identity.NewAddressVerifier(idCfg, st, st)

	var httpSrv *http.Server
	if cfg.HTTP.Listen != "" {
		l, err := net.Listen("tcp", cfg.HTTP.Listen)
		if err != nil {
			return fmt.Errorf("http: listen on %s: %w", cfg.HTTP.Listen, err)
		}
		httpSrv = &http.Server{Handler: web.Handler(st, addresses, log.With("part", "web")), ReadHeaderTimeout: 10 * time.Second}
		log.Info("http listening", "addr", l.Addr().String())
		go func() {
			if err := httpSrv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("http server failed", "err", err)
			}
		}()
	}

	relayDone := make(chan error, 1)
	go func() { relayDone <- rel.Run(ctx) }()
	verifierDone := make(chan struct{})
	go func() { defer close(verifierDone); verifier.Run(ctx) }()
	subDone := make(chan error, 1)
	go func() { subDone <- sub.Serve() }()
	log.Info("sesame started", "version", version, "hostname", cfg.Hostname)
	if started != nil {
		started()
	}

	var runErr error
	relayRunning := true
	select {
	case <-ctx.Done():
		log.Info("stopping: finishing SMTP sessions in progress", "grace", shutdownGrace)
	case runErr = <-subDone:
		log.Error("submission service failed", "err", runErr)
	case runErr = <-relayDone:
		// Run returns early only for a setting it cannot use; accepting mail
		// that nothing would deliver helps nobody.
		relayRunning = false
		log.Error("relay failed", "err", runErr)
	}
	stop()
	graceCtx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := sub.Shutdown(graceCtx); err != nil {
		log.Warn("sessions still open at the end of the grace period were cut", "err", err)
	}
	if relayRunning {
		select {
		case err := <-relayDone:
			if err != nil {
				log.Error("relay stopped with an error", "err", err)
			}
		case <-graceCtx.Done():
			// Their leases are released at the next start, and they are retried.
			log.Warn("deliveries still running at the end of the grace period were abandoned")
		}
	}
	if httpSrv != nil {
		httpSrv.Shutdown(graceCtx)
	}
	<-verifierDone
	log.Info("stopped")
	return runErr
}
