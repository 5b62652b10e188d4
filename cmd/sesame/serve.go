package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sesame-mail/sesame/account"
	"github.com/sesame-mail/sesame/config"
	"github.com/sesame-mail/sesame/dkim"
	"github.com/sesame-mail/sesame/dnsclient"
	"github.com/sesame-mail/sesame/events"
	"github.com/sesame-mail/sesame/identity"
	"github.com/sesame-mail/sesame/inbound"
	"github.com/sesame-mail/sesame/metrics"
	"github.com/sesame-mail/sesame/netguard"
	"github.com/sesame-mail/sesame/relay"
	"github.com/sesame-mail/sesame/smtpd"
	"github.com/sesame-mail/sesame/store"
	"github.com/sesame-mail/sesame/verp"
	"github.com/sesame-mail/sesame/warmup"
	"github.com/sesame-mail/sesame/web"
)

// shutdownGrace bounds how long a stop waits for SMTP sessions in progress.
const shutdownGrace = 20 * time.Second

// readiness is what /readyz reports: nil while mail is taken.
type readiness struct{ v atomic.Value }

func (r *readiness) set(err error) { r.v.Store(readyState{err}) }
func (r *readiness) err() error    { return r.v.Load().(readyState).err }

type readyState struct{ err error }

// watchdog pings systemd's watchdog while the store answers, so a process
// that hangs (or loses its disk) is restarted.
func watchdog(ctx context.Context, every time.Duration, st interface{ Ping(context.Context) error }, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, every)
		err := st.Ping(pctx)
		cancel()
		if err != nil {
			log.Error("store does not answer; not pinging the watchdog", "err", err)
			continue
		}
		sdNotify("WATCHDOG=1")
	}
}

// pruneEvents deletes events past their retention, hourly.
func pruneEvents(ctx context.Context, st interface {
	PruneEvents(context.Context, time.Time) (int, error)
}, retention time.Duration, log *slog.Logger) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		if n, err := st.PruneEvents(ctx, time.Now().Add(-retention)); err != nil {
			if ctx.Err() == nil {
				log.Error("pruning old events failed", "err", err)
			}
		} else if n > 0 {
			log.Info("old events pruned", "events", n, "retention", retention)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// reloadConfig applies what can change without a restart: the TLS
// certificate (read again, typically after a renewal) and the log level. It
// names the other changed keys, which need a restart.
func reloadConfig(e *env, cert *smtpd.Certificate, level *slog.LevelVar, log *slog.Logger) {
	log.Info("reloading (SIGHUP)")
	if err := cert.Reload(); err != nil {
		log.Error("reloading the TLS certificate failed; keeping the current one", "err", err)
	}
	if e.cfg.Path == "" {
		return
	}
	next, err := config.Load(e.cfg.Path, true)
	if err != nil {
		log.Error("reloading the configuration failed; nothing changed", "err", err)
		return
	}
	var restart []string
	for _, key := range config.Diff(e.cfg, next) {
		switch key {
		case "log_level":
			setLevel(level, next)
			log.Info("applied", "key", key, "value", next.LogLevel)
		case "submission.tls_cert_file", "submission.tls_key_file":
			restart = append(restart, key) // the files named at start are the ones read again
		default:
			restart = append(restart, key)
		}
	}
	if len(restart) > 0 {
		log.Warn("configuration changes that need a restart (systemctl restart sesame)", "keys", strings.Join(restart, ", "))
	}
}

// newLogger returns the log, at a level a reload can change.
func newLogger(cfg *config.Config, w io.Writer, level *slog.LevelVar) *slog.Logger {
	setLevel(level, cfg)
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func setLevel(level *slog.LevelVar, cfg *config.Config) {
	var l slog.Level
	l.UnmarshalText([]byte(cfg.LogLevel)) // validated by config
	level.Set(l)
}

// fileReserve is the file descriptors serve needs besides client
// connections: the store's files, the relay's connections, DNS, webhooks.
const fileReserve = 200

// checkFileLimit warns when the connection caps of every listener add up to
// more file descriptors than the process may open: a flood would then make
// accept fail with EMFILE (logged and retried, but new clients wait) before
// the caps shed anyone.
func checkFileLimit(cfg *config.Config, log *slog.Logger) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	caps := cfg.Submission.MaxConnections
	if len(cfg.Inbound.Listen) > 0 {
		caps += cfg.Inbound.MaxConnections
	}
	if cfg.HTTP.Listen != "" {
		caps += cfg.HTTP.MaxConnections
	}
	if cfg.API.Listen != "" {
		caps += cfg.API.MaxConnections
	}
	if need := uint64(caps + fileReserve); lim.Cur < need {
		log.Warn("the connection caps add up to more open files than the process may have; raise the limit "+
			"(LimitNOFILE in the systemd unit, ulimit -n) or lower the max_connections keys",
			"open_file_limit", lim.Cur, "connection_caps", caps, "needed", need)
	}
}

// The submission service counts suppressed reject events through this
// optional ability of its Metrics.
var _ smtpd.RejectMetrics = (*metrics.Metrics)(nil)

// runServe runs the service until SIGINT or SIGTERM; SIGHUP reloads.
func runServe(e *env, _ []string) error {
	tuneGC(e.cfg)
	tuneProcs()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reload := make(chan struct{})
	go func() {
		for range hup {
			select {
			case reload <- struct{}{}:
			case <-ctx.Done():
				return
			}
		}
	}()
	return serve(ctx, e, hooks{reload: reload})
}

// tuneGC makes the garbage collector run less often than Go's default
// (GOGC=100) unless the operator set GOGC. The server's live heap is small
// (tens of MiB: the queue lives in SQLite), so letting it grow to five times
// that costs little memory, and at full load it took the collector's share of
// the CPU from about 5% to about 1%: 5% more messages a second
// (docs/performance.md).
//
// Unless the operator set GOMEMLIMIT, five times is also capped by a soft
// memory limit (gcMemoryLimit): large messages are live on the heap too
// (the relay holds the one it delivers), and five times a heap holding a
// few of 40 MB is over a GiB. In a burst of 30 uploads of 40 MB the heap
// grew to 800 MB without the limit and stayed under 300 MB with it.
func tuneGC(cfg *config.Config) {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(gcMemoryLimit(cfg))
	}
}

// gcMemoryLimit is the heap the collector tries to stay under: room for
// the server's own data and the per-connection buffers, and for the
// messages the relay holds while it delivers them (relayMessageBytes). The
// messages being signed and queued are not on the heap (smtpd's memory
// budget, submission.max_inflight_bytes, bounds them).
func gcMemoryLimit(cfg *config.Config) int64 {
	return 256<<20 + relayMessageBytes(cfg)
}

// relayMessageBytes bounds the bytes of the messages the relay delivers at
// once: relay.memory_budget, or less when relay.workers caps the deliveries
// to fewer than that many messages of the largest size.
func relayMessageBytes(cfg *config.Config) int64 {
	b := cfg.Relay.MemoryBudget
	if w := int64(cfg.Relay.Workers) * cfg.Submission.MaxMessageBytes; cfg.Relay.Workers > 0 && w < b {
		b = w
	}
	return b
}

// procsPerCPU is how many Go processors tuneProcs gives each CPU.
const procsPerCPU = 4

// tuneProcs runs Go's scheduler with four processors (Ps) per CPU the
// process may use, unless the operator set GOMAXPROCS. A DKIM signature is
// 1.1-1.6 ms of CPU that Go does not preempt; with one P per CPU, two of them
// hold both Ps of a 2-core box, and everything else (the replies of other
// sessions, the committer, the syncer, the relay) waits behind them in Go's
// run queue. With more Ps than CPUs the kernel time-slices the threads and
// runs a thread that has just woken soon, so the short work goes first. On
// the 2-core reference box, with the load tool and the sink on it too, 8 Ps
// against 2 gave 963 and 1011 msg/s against 837 and 869, a p99 of 98 and
// 92 ms against 124 and 123, and 5% less CPU per message
// (docs/performance.md). runtime.GOMAXPROCS(0) is Go's own default at start,
// which follows a container's CPU limit; setting it stops Go from following
// later changes of that limit, so a changed limit needs a restart.
func tuneProcs() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(procsPerCPU * runtime.GOMAXPROCS(0))
	}
}

// hooks connect serve to its caller: a reload request (SIGHUP), and a
// function called once everything listens (tests wait for it).
type hooks struct {
	reload  <-chan struct{}
	started func()
}

// serve assembles the whole service: store → (auth, signer, policy, quotas)
// → submission listeners → queue → relay, plus the inbound listener (with
// [inbound] listen), the HTTP listener, the domain verifier, the webhook
// dispatcher, the reputation guard, event pruning and (with [tls]
// acme_domains) the ACME certificate manager; then it runs until ctx ends.
func serve(ctx context.Context, e *env, h hooks) error {
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	cfg := e.cfg
	var level slog.LevelVar
	log := newLogger(cfg, e.stderr, &level)
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

	m := metrics.New(st)
	// The certificate: from the ACME CA with [tls] acme_domains (each new
	// one served from the next handshake), else the files, else self-signed.
	var cert *smtpd.Certificate
	acmeLog := log.With("part", "acme")
	acm, err := newACME(cfg, m, acmeLog, func() {
		if err := cert.Reload(); err != nil {
			acmeLog.Error("serving the new certificate failed; keeping the current one", "err", err)
		}
	})
	if err != nil {
		return err
	}
	if acm != nil {
		cert, err = smtpd.ManagedCertificate(acm.Certificate, cfg.DataDir, cfg.Hostname, log)
	} else {
		cert, err = smtpd.LoadCertificate(cfg.Submission.TLSCertFile, cfg.Submission.TLSKeyFile, cfg.DataDir, cfg.Hostname, log)
	}
	if err != nil {
		return err
	}
	m.TLSCertificate(cert.NotAfter)
	tlsConfig := func() *tls.Config {
		c := cert.TLSConfig()
		if acm != nil {
			c.GetConfigForClient = acm.TLSALPNConfig // TLS-ALPN-01 on any TLS listener
		}
		return c
	}
	senders := identity.NewAuthorizerWith(st, identity.AuthorizerOptions{AllowDMARCProtected: cfg.Identity.AllowDMARCProtectedAddresses})
	sub := smtpd.New(smtpd.Config{
		Hostname:                           cfg.Hostname,
		StartTLSListen:                     cfg.Submission.StartTLSListen,
		TLSListen:                          cfg.Submission.TLSListen,
		TLS:                                tlsConfig(),
		MaxMessageBytes:                    cfg.Submission.MaxMessageBytes,
		MaxRecipients:                      cfg.Submission.MaxRecipients,
		MaxConnections:                     cfg.Submission.MaxConnections,
		MaxConnectionsPerIP:                cfg.Submission.MaxConnectionsPerIP,
		MaxUnauthenticatedConnections:      cfg.Submission.MaxUnauthenticatedConnections,
		MaxUnauthenticatedConnectionsPerIP: cfg.Submission.MaxUnauthenticatedConnectionsPerIP,
		ReadTimeout:                        cfg.Submission.ReadTimeout.Duration,
		UnauthenticatedReadTimeout:         cfg.Submission.UnauthenticatedReadTimeout.Duration,
		WriteTimeout:                       cfg.Submission.WriteTimeout.Duration,
		AuthLimits: smtpd.AuthLimits{
			PerConnection: cfg.Submission.AuthFailuresPerConnection,
			PerNetwork:    cfg.Submission.AuthFailuresPerNetwork,
			PerUsername:   cfg.Submission.AuthFailuresPerUsername,
			Window:        cfg.Submission.AuthFailureWindow.Duration,
			BlockFor:      cfg.Submission.AuthBlockTime.Duration,
			Delay:         cfg.Submission.AuthFailureDelay.Duration,
			ReportEvery:   cfg.Submission.AuthFailureReportInterval.Duration,
		},
		FallbackSigningDomain: cfg.DKIM.FallbackDomain,
		SimulatorDomain:       cfg.Policy.SimulatorDomain,
		Logger:                log.With("part", "smtpd"),
		MaxInflightBytes:      cfg.Submission.MaxInflightBytes,
		SpoolDir:              cfg.DataDir, // large messages arrive into unlinked files there
	}, smtpd.Deps{
		Auth:     account.NewAuthenticator(st, time.Now, cfg.Submission.AuthCacheTTL.Duration),
		Signer:   dkim.NewDomainSigner(st),
		Queue:    st,
		Policy:   senders,
		Quotas:   account.NewQuotas(st, e.quotaDefaults(), time.Now),
		Standing: st,
		Events:   st,
		Metrics:  m,

		LoginReports: st,
	})
	if err := sub.Listen(); err != nil {
		return err
	}
	m.SubmissionInflight(sub.InflightBytes, cfg.Submission.MaxInflightBytes)

	var dnsServers []string
	for _, s := range cfg.Relay.DNSServers {
		a, _ := config.DNSServerAddr(s) // validated by config
		dnsServers = append(dnsServers, a)
	}
	// With an inbound listener, outbound mail from verified domains gets a
	// return path per recipient that the listener recognises.
	var returnPath func(sender, queueID, rcpt string) string
	var in *inbound.Server
	if len(cfg.Inbound.Listen) > 0 {
		key, err := verp.LoadKey(filepath.Join(cfg.DataDir, "verp.key"))
		if err != nil {
			return err
		}
		signer := verp.New(key, cfg.Identity.MailFromSubdomain)
		returnPath = signer.ForVerifiedDomains(st, time.Now)
		// Feedback reporters' DKIM keys, through the relay's DNS servers.
		resolver, err := dnsclient.New(dnsServers, 0)
		if err != nil {
			return fmt.Errorf("inbound: %w; set [relay] dns_servers", err)
		}
		var reporterIPs []netip.Prefix
		for _, n := range cfg.Inbound.FeedbackReporterIPs {
			p, _ := config.ParsePrefix(n) // validated by config
			reporterIPs = append(reporterIPs, p)
		}
		in = inbound.New(inbound.Config{
			Listen:              cfg.Inbound.Listen,
			Hostname:            cfg.Hostname,
			TLSConfig:           tlsConfig(),
			FeedbackAddresses:   cfg.Inbound.FeedbackAddresses,
			FeedbackReporters:   cfg.Inbound.FeedbackReporters,
			FeedbackReporterIPs: reporterIPs,
			DNS:                 resolver,
			MaxMessageBytes:     cfg.Inbound.MaxMessageBytes,
			ReadTimeout:         cfg.Inbound.ReadTimeout.Duration,
			WriteTimeout:        cfg.Inbound.WriteTimeout.Duration,
			MaxConnections:      cfg.Inbound.MaxConnections,
			MaxConnectionsPerIP: cfg.Inbound.MaxConnectionsPerIP,
			Limits:              inboundLimits(cfg),
			Metrics:             m,
			Logger:              log.With("part", "inbound"),
		}, st, signer)
		if err := in.Listen(); err != nil {
			return err
		}
		m.InboundStorage(func(ctx context.Context) (int, int64, error) {
			t, err := st.InboundTotals(ctx)
			return t.Messages, t.Bytes, err
		}, cfg.Inbound.MaxStoredMessages, cfg.Inbound.MaxStoredBytes)
	}
	shaper := warmup.NewLimiter(shaperConfig(cfg))
	system := dkim.NewSystemSigner(dkim.NewDomainSigner(st), cfg.SystemDomain(), log.With("part", "dkim"))
	logSystemDomain(ctx, log, system)
	m.OutboundIPs(func() []warmup.IPStatus { return shaper.Status(time.Now()) }, st.ParkedCounts)
	rel := relay.New(relay.Config{
		Hostname:                      cfg.Hostname,
		Smarthost:                     cfg.Relay.Smarthost,
		MXPort:                        cfg.Relay.MXPort,
		SourceIPs:                     cfg.Relay.SourceIPs,
		DNSServers:                    dnsServers,
		Workers:                       cfg.Relay.Workers,
		MemoryBudget:                  cfg.Relay.MemoryBudget,
		DomainConcurrency:             cfg.Relay.DomainConcurrency,
		DestinationConcurrency:        cfg.Relay.DestinationConcurrency,
		InitialDestinationConcurrency: cfg.Relay.InitialDestinationConcurrency,
		SmarthostConcurrency:          cfg.Relay.SmarthostConcurrency,
		RetryFirst:                    cfg.Relay.RetryFirst.Duration,
		RetryMax:                      cfg.Relay.RetryMax.Duration,
		MaxLifetime:                   cfg.Relay.MaxLifetime.Duration,
		DelayWarning:                  cfg.Relay.DelayWarning.Duration,
		ConnectTimeout:                cfg.Relay.ConnectTimeout.Duration,
		CommandTimeout:                cfg.Relay.CommandTimeout.Duration,
		AllowPrivateDestinations:      cfg.Relay.AllowPrivateDestinations,
		Shaper:                        shaper,
		ReturnPath:                    returnPath,
		SimulatorDomain:               cfg.Policy.SimulatorDomain,
		SystemSigner:                  system,
		Metrics:                       m,
		Logger:                        log.With("part", "relay"),
	}, st)

	var ready readiness
	ready.set(errors.New("starting"))
	idCfg := e.identityConfig()
	idCfg.Logger = log.With("part", "identity")
	idCfg.SystemSigner = system
	checker, err := identity.NewChecker(idCfg)
	if err != nil {
		return err
	}
	verifier := identity.NewVerifier(idCfg, st, checker)
	addresses := identity.NewAddressVerifier(idCfg, st, st)

	var httpSrv *http.Server
	var httpConns *netguard.Guard
	if cfg.HTTP.Listen != "" {
		l, err := net.Listen("tcp", cfg.HTTP.Listen)
		if err != nil {
			return fmt.Errorf("http: listen on %s: %w", cfg.HTTP.Listen, err)
		}
		webLog := log.With("part", "web")
		handler := web.Handler(web.Deps{Store: st, Ready: ready.err, Addresses: addresses, Metrics: m.Handler(),
			Pprof: cfg.HTTP.Pprof, Log: webLog})
		httpSrv = netguard.HTTPServer(handler, netguard.HTTPConfig{ReadTimeout: cfg.HTTP.ReadTimeout.Duration,
			WriteTimeout: cfg.HTTP.WriteTimeout.Duration, IdleTimeout: cfg.HTTP.IdleTimeout.Duration,
			MaxBodyBytes: cfg.HTTP.MaxBodyBytes, Logger: webLog})
		httpConns = netguard.New(netguard.Config{Name: "http", MaxConns: cfg.HTTP.MaxConnections,
			MaxPerIP: cfg.HTTP.MaxConnectionsPerIP, Logger: webLog, Metrics: m})
		log.Info("http listening", "addr", l.Addr().String())
		go func() {
			if err := httpSrv.Serve(httpConns.Wrap(l, nil)); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("http server failed", "err", err)
			}
		}()
	}
	var acmeGuards []*netguard.Guard
	closeACME := func() {}
	if acm != nil {
		if acmeGuards, closeACME, err = listenACME(cfg, acm, m, acmeLog); err != nil {
			closeACME()
			return err
		}
	}
	apiSrv, apiConns, err := listenAPI(e, st, sub, cert, m, log)
	if err != nil {
		closeACME()
		return err
	}
	m.Listeners(func() []netguard.Stats {
		out := []netguard.Stats{sub.ConnStats()}
		for _, g := range acmeGuards {
			out = append(out, g.Stats())
		}
		if apiConns != nil {
			out = append(out, apiConns.Stats())
		}
		if in != nil {
			out = append(out, in.ConnStats())
		}
		if httpConns != nil {
			out = append(out, httpConns.Stats())
		}
		return out
	})
	m.LoginGuard(func() metrics.LoginGuardStats {
		g := sub.GuardStats()
		return metrics.LoginGuardStats{UsernameAttacks: g.UsernameAttacks, BlockedNetworks: g.BlockedNetworks,
			BlockedUsernameNetworks: g.BlockedUsernameNetworks}
	})
	checkFileLimit(cfg, log)

	relayDone := make(chan error, 1)
	go func() { relayDone <- rel.Run(ctx) }()
	verifierDone := make(chan struct{})
	go func() { defer close(verifierDone); verifier.Run(ctx) }()
	acmeDone := make(chan struct{})
	go func() {
		defer close(acmeDone)
		if acm != nil {
			acm.Run(ctx)
		}
	}()
	go pruneEvents(ctx, st, cfg.Events.Retention.Duration, log)
	var endpoints []events.Endpoint
	for _, w := range cfg.Webhooks {
		endpoints = append(endpoints, events.Endpoint{URL: w.URL, Secret: w.Secret, Types: w.Events, Credential: w.Credential})
	}
	webhooks := events.NewDispatcher(st, endpoints, events.Options{Version: version, Logger: log.With("part", "webhook")})
	m.WebhookBacklog(webhooks.Backlog)
	webhooksDone := make(chan struct{})
	go func() { defer close(webhooksDone); webhooks.Run(ctx) }()
	go account.NewGuard(e.reputationPolicy(), st, log.With("part", "reputation"), time.Now).Run(ctx, time.Minute)
	subDone := make(chan error, 1)
	go func() { subDone <- sub.Serve() }()
	inboundDone := make(chan struct{})
	go func() {
		defer close(inboundDone)
		if in != nil {
			in.Serve()
		}
	}()
	log.Info("sesame started", "version", version, "hostname", cfg.Hostname)
	ready.set(nil)
	if err := sdNotify("READY=1\nSTATUS=accepting mail"); err != nil {
		log.Warn("telling systemd we are ready failed", "err", err)
	}
	if every := watchdogInterval(); every > 0 {
		go watchdog(ctx, every, st, log)
	}
	if h.started != nil {
		h.started()
	}

	var runErr error
	relayRunning := true
wait:
	for {
		select {
		case <-ctx.Done():
			log.Info("stopping: finishing SMTP sessions in progress", "grace", shutdownGrace)
			break wait
		case runErr = <-subDone:
			log.Error("submission service failed", "err", runErr)
			break wait
		case runErr = <-relayDone:
			// Run returns early only for a setting it cannot use; accepting
			// mail that nothing would deliver helps nobody.
			relayRunning = false
			log.Error("relay failed", "err", runErr)
			break wait
		case <-h.reload:
			reloadConfig(e, cert, &level, log)
		}
	}
	ready.set(errors.New("stopping"))
	sdNotify("STOPPING=1")
	stop()
	graceCtx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := sub.Shutdown(graceCtx); err != nil {
		log.Warn("sessions still open at the end of the grace period were cut", "err", err)
	}
	sub.FlushRejectEvents() // refusals over a credential's cap, not yet summed into an event
	if in != nil {
		if err := in.Shutdown(graceCtx); err != nil {
			log.Warn("inbound sessions still open at the end of the grace period were cut", "err", err)
		}
	}
	<-inboundDone
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
	if apiSrv != nil {
		apiSrv.Shutdown(graceCtx)
	}
	closeACME()
	<-acmeDone
	<-verifierDone
	<-webhooksDone // before the deferred st.Close: the last cursor save lands
	log.Info("stopped")
	return runErr
}

// logSystemDomain says at start whether the mail Sesame writes itself
// (verification links, DSNs) leaves DKIM-signed, and if not, what to do.
func logSystemDomain(ctx context.Context, log *slog.Logger, system *dkim.SystemSigner) {
	d := system.Domain()
	if d == "" {
		log.Warn("Sesame's own mail (address verification, DSNs) goes unsigned: hostname names no domain; set [dkim] system_domain")
		return
	}
	status, err := system.Status(ctx)
	switch {
	case err != nil:
		log.Warn("reading the system domain's DKIM keys failed", "domain", d, "err", err)
	case status == store.IdentityVerified:
		log.Info("Sesame's own mail (address verification, DSNs) is DKIM-signed", "domain", d)
	case status != "":
		log.Warn(fmt.Sprintf("Sesame's own mail (address verification, DSNs) is DKIM-signed, but the system domain is %s: "+
			"receivers find no key until its records are published; run \"sesame domain check %s\"", status, d), "domain", d)
	default:
		log.Warn(fmt.Sprintf("Sesame's own mail (address verification, DSNs) goes unsigned, and receivers may junk it; run \"sesame domain add %s\" (or set [dkim] system_domain) to sign it", d),
			"domain", d)
	}
}
