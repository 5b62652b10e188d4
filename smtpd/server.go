// Package smtpd is Sesame's submission service: the SMTP listeners apps
// connect to (STARTTLS on 587, implicit TLS on 465) and the rules of a
// submission session.
//
// The protocol state machine is go-smtp's; session.go applies Sesame's rules
// at each step: AUTH only over TLS, MAIL only after AUTH, envelope addresses
// validated (address.go), and in DATA a message with a bare CR, bare LF or
// NUL refused whole (message.go), its bytes read as the client sent them
// (dotreader.go). A message is in memory once: a large one arrives into a
// spool file and is read back for signing and queueing within a memory
// budget (msgbuf.go, inflight.go). An accepted message gets a Message-ID and
// Date if it lacks them, is DKIM-signed for its From domain, gets a Received
// field on top, and is answered 250 only once the queue has it on disk.
//
// Who may send what is decided at each step too: a credential whose sending
// is paused is refused at MAIL FROM (Standing); MAIL FROM, the From header
// and any Sender header must be identities the credential may use (Policy);
// a sandboxed credential may send only to verified recipients; the sending quotas
// (Quotas) are checked, per recipient, before the message is queued.
// Connections are capped in total and per client address (limits.go), and
// failed logins are slowed and then blocked (guard.go).
//
// The package declares what it needs from the rest of Sesame as small
// interfaces, which Deps gathers: Authenticator (logins), Signer (DKIM),
// Queue (durable storage of accepted mail), Policy (who may send as whom),
// Quotas, Standing (paused credentials), Events (refused submissions, for
// operators and statistics, repeats summed: rejects.go; optional), Metrics
// (optional) and LoginReports (the failed logins of each credential, for
// operators; optional). A Queue that
// is also a StorageChecker has mail refused with 452 4.3.1 at MAIL FROM
// while its disk is full, and one that is a StorageReporter hears of a
// spool file that found the disk full (storage.go).
package smtpd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sesame-mail/sesame/netguard"
	"github.com/sesame-mail/sesame/store"
)

// Authenticator checks SMTP credentials.
type Authenticator interface {
	// Authenticate returns the credential for username and password, or an
	// error wrapping account.ErrInvalidCredentials when they do not match.
	// Any other error is a temporary failure.
	Authenticate(ctx context.Context, username, password string) (store.Credential, error)
}

// Signer DKIM-signs messages.
type Signer interface {
	// Sign returns the DKIM-Signature header fields for msg, signed with the
	// keys of domain. An error wrapping store.ErrNotFound means Sesame has
	// no keys for domain. It must not keep msg once it returns (see Queue).
	Sign(ctx context.Context, domain string, msg []byte) ([]byte, error)
}

// Queue takes accepted messages.
type Queue interface {
	// Enqueue returns nil only once m is durably stored. It must not keep
	// m.Data once it returns: those bytes are the session's buffer, which
	// holds the next message after it.
	Enqueue(ctx context.Context, m *store.Message) error
}

// Policy decides who may send as whom, and to whom from the sandbox.
type Policy interface {
	// MaySendAs reports whether cred may use address as a sender. A
	// *identity.DMARCError is a refusal with its reason (the address's
	// domain publishes a strict DMARC policy), not a failure to decide.
	MaySendAs(ctx context.Context, cred store.Credential, address string) (bool, error)
	// VerifiedRecipient reports whether address is a verified identity or
	// in a verified domain.
	VerifiedRecipient(ctx context.Context, address string) (bool, error)
}

// Quotas enforces sending quotas.
type Quotas interface {
	// Reserve admits n recipients for cred, or refuses with an error
	// wrapping account.ErrDailyQuota or account.ErrSendRate. done is called
	// once, saying whether the message was queued.
	Reserve(ctx context.Context, cred store.Credential, n int) (done func(queued bool), err error)
}

// Metrics counts what the submission service does. Reasons are one of a
// small fixed set (see the reason constants), so label values stay bounded.
// The netguard methods count what the connection caps do.
type Metrics interface {
	netguard.Metrics
	Connection()
	TLSHandshake(version string)
	AuthFailure()
	Submission(accepted bool, reason string)
}

// Reasons a submission is refused, for Metrics.
const (
	reasonAuthRequired = "auth_required"
	reasonNotVerified  = "not_verified"
	reasonSandbox      = "sandbox"
	reasonQuotaDaily   = "quota_daily"
	reasonQuotaRate    = "quota_rate"
	reasonBadAddress   = "bad_address"
	reasonBadMessage   = "bad_message"
	reasonTooBig       = "too_big"
	reasonNoKeys       = "no_keys"
	reasonPaused       = "paused"
	reasonTemporary    = "temporary"

	// reasonDMARCProtected: a verified address whose domain's DMARC policy
	// is quarantine or reject.
	reasonDMARCProtected = "dmarc_protected"
	reasonInflight       = "inflight_limit" // the in-flight memory budget (inflight.go)
)

// Standing says whether a credential may send at all right now.
type Standing interface {
	// PausedReason is why the credential's sending is paused; "" if it
	// is not.
	PausedReason(ctx context.Context, name string) (string, error)
}

// Events records what operators and statistics need to know of refusals.
type Events interface {
	RecordEvent(ctx context.Context, e store.Event) error
}

// LoginReports keeps, for the operator ("sesame user show"), the summary of
// each credential's failed logins that the guard holds in memory.
type LoginReports interface {
	// RecordLoginFailures replaces the summary of the credential whose
	// username is username; it does nothing when no credential has it.
	RecordLoginFailures(ctx context.Context, username string, f store.LoginFailures) error
}

// Deps are the parts of Sesame the submission service works with.
type Deps struct {
	Auth     Authenticator
	Signer   Signer
	Queue    Queue
	Policy   Policy
	Quotas   Quotas
	Standing Standing
	Events   Events  // nil: none
	Metrics  Metrics // nil: none
	// LoginReports gets each credential's failed logins every
	// AuthLimits.ReportEvery while there are new ones; nil: none.
	LoginReports LoginReports
}

type noMetrics struct{}

func (noMetrics) Connection()                {}
func (noMetrics) TLSHandshake(string)        {}
func (noMetrics) AuthFailure()               {}
func (noMetrics) Submission(bool, string)    {}
func (noMetrics) ConnRefused(string, string) {}
func (noMetrics) ConnShed(string)            {}
func (noMetrics) AcceptError(string)         {}

// Config is what the submission service needs from the configuration.
type Config struct {
	Hostname        string
	StartTLSListen  []string
	TLSListen       []string
	TLS             *tls.Config
	MaxMessageBytes int64
	MaxRecipients   int
	// The connection caps, in total and per client network (/32, /64):
	// all connections, and those not logged in yet, which are shed first
	// when the caps are reached (package netguard). 0: no cap.
	MaxConnections                     int
	MaxConnectionsPerIP                int
	MaxUnauthenticatedConnections      int
	MaxUnauthenticatedConnectionsPerIP int
	// ReadTimeout is the wait for the next bytes from a client that
	// logged in; UnauthenticatedReadTimeout from one that has not (0:
	// ReadTimeout).
	ReadTimeout                time.Duration
	UnauthenticatedReadTimeout time.Duration
	WriteTimeout               time.Duration
	AuthLimits                 AuthLimits
	// FallbackSigningDomain signs mail whose From domain has no keys (a
	// verified address in someone else's domain); "" refuses such mail.
	FallbackSigningDomain string
	// SimulatorDomain is the mailbox simulator's domain: its recipients
	// are allowed in the sandbox and not counted in quotas. "" for none.
	SimulatorDomain string
	Logger          *slog.Logger
	Now             func() time.Time // default time.Now

	// MaxInflightBytes bounds the memory held by messages larger than a
	// pooled buffer (64 KiB) while they are signed and queued, all
	// clients together; one client network may hold a quarter of it.
	// 0: DefaultMaxInflightBytes.
	MaxInflightBytes int64
	// SpoolDir is where such messages are written while they arrive;
	// "": os.TempDir(). Put it on a disk, not a tmpfs: the point is to
	// keep them out of memory.
	SpoolDir string
}

// maxLineLength bounds a line of a command or of a message. RFC 5321 allows
// 1000 octets; like go-smtp we accept twice that, since mail with slightly
// long lines is common and harmless.
const maxLineLength = 2000

// Server is the submission service.
type Server struct {
	cfg   Config
	deps  Deps
	log   *slog.Logger
	conns *netguard.Guard
	open  *openConns
	guard *authGuard

	inflight *inflight // the memory budget of large messages (inflight.go)
	// cutting ends when Shutdown starts closing connections in the middle
	// of a transaction: no use waiting for memory then.
	cutting context.Context
	cut     context.CancelFunc

	mu        sync.Mutex
	servers   []*smtp.Server
	listeners []net.Listener

	rejects rejectCaps // each credential's cap on reject events (rejects.go)
	// The loop writing the failed-login reports: started by Serve,
	// stopped by Shutdown (after which it does not start).
	reporting  bool
	stopped    bool
	stopReport chan struct{}
	reportDone chan struct{}
}

// New returns a submission service; Listen binds it, Serve runs it.
func New(cfg Config, deps Deps) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if deps.Metrics == nil {
		deps.Metrics = noMetrics{}
	}
	cfg.AuthLimits = cfg.AuthLimits.withDefaults()
	if cfg.MaxInflightBytes <= 0 {
		cfg.MaxInflightBytes = DefaultMaxInflightBytes
	}
	if cfg.TLS != nil {
		// Count inbound TLS versions: this runs once per handshake, on both
		// STARTTLS and implicit-TLS listeners.
		tlsCfg := cfg.TLS.Clone()
		prev := tlsCfg.VerifyConnection
		tlsCfg.VerifyConnection = func(cs tls.ConnectionState) error {
			deps.Metrics.TLSHandshake(tls.VersionName(cs.Version))
			if prev != nil {
				return prev(cs)
			}
			return nil
		}
		cfg.TLS = tlsCfg
	}
	s := &Server{
		cfg:   cfg,
		deps:  deps,
		log:   cfg.Logger,
		conns: newConnGuard(cfg, deps.Metrics, cfg.Logger),
		open:  newOpenConns(),
		guard: newAuthGuard(cfg.AuthLimits, cfg.Now),

		inflight: newInflight(cfg.MaxInflightBytes, headroom+cfg.MaxMessageBytes),

		stopReport: make(chan struct{}),
		reportDone: make(chan struct{}),
	}
	s.cutting, s.cut = context.WithCancel(context.Background())
	return s
}

func (s *Server) now() time.Time     { return s.cfg.Now() }
func (s *Server) maxLineLength() int { return maxLineLength }

// NewSession is called by go-smtp at the client's first EHLO (and again after
// STARTTLS).
func (s *Server) NewSession(c *smtp.Conn) (smtp.Session, error) {
	ip := remoteIP(c.Conn().RemoteAddr())
	return &session{srv: s, conn: c, remoteIP: ip, log: s.log.With("client", ip)}, nil
}

func (s *Server) newSMTPServer(implicitTLS bool) *smtp.Server {
	srv := smtp.NewServer(s)
	srv.Domain = s.cfg.Hostname
	srv.MaxMessageBytes = s.cfg.MaxMessageBytes
	srv.MaxRecipients = s.cfg.MaxRecipients
	srv.MaxLineLength = maxLineLength
	srv.ReadTimeout = s.cfg.ReadTimeout
	srv.WriteTimeout = s.cfg.WriteTimeout
	srv.EnableSMTPUTF8 = true
	// The session hides and refuses AUTH before TLS itself, so that the
	// refusal is RFC 4954's 530 rather than go-smtp's 523.
	srv.AllowInsecureAuth = true
	srv.ErrorLog = slogAdapter{s.log}
	if !implicitTLS {
		srv.TLSConfig = s.cfg.TLS // offers STARTTLS
	}
	return srv
}

// Listen binds every configured listener. Nothing is served until Serve.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	bind := func(addr string, implicitTLS bool) error {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("smtpd: listen on %s: %w%s", addr, err, bindHint(err))
		}
		var refuse netguard.RefuseFunc
		if !implicitTLS {
			refuse = refuse421(s.cfg.Hostname)
		}
		var ln net.Listener = &limitedListener{Listener: s.conns.Wrap(l, refuse), open: s.open, guard: s.guard,
			greet: !implicitTLS, hostname: s.cfg.Hostname, log: s.log, accepted: s.deps.Metrics.Connection}
		if implicitTLS {
			ln = tls.NewListener(ln, s.cfg.TLS)
		}
		s.listeners = append(s.listeners, ln)
		s.servers = append(s.servers, s.newSMTPServer(implicitTLS))
		return nil
	}
	for _, a := range s.cfg.StartTLSListen {
		if err := bind(a, false); err != nil {
			s.closeListeners()
			return err
		}
	}
	for _, a := range s.cfg.TLSListen {
		if err := bind(a, true); err != nil {
			s.closeListeners()
			return err
		}
	}
	return nil
}

func bindHint(err error) string {
	if errors.Is(err, os.ErrPermission) {
		return " (ports below 1024 need root or CAP_NET_BIND_SERVICE; or choose a port above 1024 in [submission])"
	}
	return ""
}

func (s *Server) closeListeners() {
	for _, l := range s.listeners {
		l.Close()
	}
	s.listeners, s.servers = nil, nil
}

// ConnStats returns the open submission connections, logged in and not.
func (s *Server) ConnStats() netguard.Stats { return s.conns.Stats() }

// GuardStats returns what the failed-login guard blocks now.
func (s *Server) GuardStats() GuardStats { return s.guard.stats() }

// reportLoop hands the summaries of failed logins that changed to
// LoginReports every ReportEvery, and once more when stopped: however many
// failures an attacker makes, a credential's summary is written at most
// once an interval.
func (s *Server) reportLoop() {
	defer close(s.reportDone)
	tick := time.NewTicker(s.cfg.AuthLimits.ReportEvery)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			s.report()
		case <-s.stopReport:
			s.report()
			return
		}
	}
}

func (s *Server) report() {
	for _, r := range s.guard.reports() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := s.deps.LoginReports.RecordLoginFailures(ctx, r.username, r.summary)
		cancel()
		if err != nil {
			// The next failure reports it again; the guard itself works on.
			s.log.Warn("recording failed logins for sesame user show failed", "username", r.username, "err", err)
		}
	}
}

// Addrs returns the bound addresses, STARTTLS listeners first, in
// configuration order.
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []net.Addr
	for _, l := range s.listeners {
		out = append(out, l.Addr())
	}
	return out
}

// Serve serves every listener until Shutdown. It returns the first error
// of a listener that failed for another reason.
func (s *Server) Serve() error {
	s.mu.Lock()
	servers, listeners := s.servers, s.listeners
	if s.deps.LoginReports != nil && !s.reporting && !s.stopped {
		s.reporting = true
		go s.reportLoop()
	}
	s.mu.Unlock()
	errc := make(chan error, len(servers))
	for i := range servers {
		srv, l := servers[i], listeners[i]
		s.log.Info("submission listening", "addr", l.Addr().String(), "implicit_tls", srv.TLSConfig == nil)
		go func() { errc <- srv.Serve(l) }()
	}
	var first error
	for range servers {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Shutdown stops accepting connections, closes the idle ones, and lets the
// mail transactions in progress finish until ctx ends; then it closes the
// rest. It returns ctx's error if it had to cut transactions short.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	servers := s.servers
	s.stopped = true
	if s.reporting {
		s.reporting = false
		close(s.stopReport)
		defer func() { <-s.reportDone }() // a last report first
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		for _, srv := range servers {
			wg.Go(func() { srv.Shutdown(context.Background()) }) // closes the listeners, then waits
		}
		wg.Wait()
	}()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		// A connection between transactions (or before its first) is closed
		// now; one inside a transaction when that ends.
		s.open.closeIdle(false)
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			s.cut()
			s.open.closeIdle(true)
			<-done
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// slogAdapter gives go-smtp's error log to slog.
type slogAdapter struct{ log *slog.Logger }

func (a slogAdapter) Printf(format string, v ...any) {
	a.log.Debug("smtp: " + fmt.Sprintf(format, v...))
}
func (a slogAdapter) Println(v ...any) { a.log.Debug("smtp: " + fmt.Sprint(v...)) }

// simulated reports whether addr is a mailbox simulator address.
func (s *Server) simulated(addr string) bool {
	return s.cfg.SimulatorDomain != "" && strings.EqualFold(store.AddressDomain(addr), s.cfg.SimulatorDomain)
}
