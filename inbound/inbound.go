// Package inbound is the listener for mail coming back to Sesame:
// asynchronous bounces (DSNs, RFC 3464) sent to the return paths of
// outbound mail, and complaint reports (ARF, RFC 5965) sent by mailbox
// providers' feedback loops to the configured feedback addresses.
//
// It is neither a relay nor a mailbox: it accepts mail only for Sesame's own
// return paths (b+TOKEN@bounce.DOMAIN, whose HMAC it checks, see package
// verp) and for the feedback addresses; anything else gets 550 5.1.1. A
// report that proves who sent it becomes bounce or complaint events for the
// original recipient, and hard bounces and complaints put the recipient on
// the suppression list: a DSN proves itself by coming to the signed return
// path of the very recipient it reports on, a complaint by a DKIM signature
// of a configured feedback reporter or by coming from a reporter's address
// (verify.go). A report without proof changes nothing. Every message
// accepted is stored with what was made of it and whether it was verified,
// so one that cannot be read or believed is kept for the operator (sesame
// inbound list), not lost. The work a report gets is bounded (process.go,
// budget.go), and so is what is kept, per message, per client and in
// total, whatever strangers send (limits.go).
package inbound

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sesame-mail/sesame/netguard"
	"github.com/sesame-mail/sesame/store"
	"github.com/sesame-mail/sesame/verp"
)

// Store is what the listener needs from the store (store.SQLite has it).
type Store interface {
	RecordInbound(ctx context.Context, m store.InboundMessage, events []store.Event, sups []store.Suppression, limit store.InboundLimit) (int64, error)
	InboundTotals(ctx context.Context) (store.InboundTotals, error)
	SendEvents(ctx context.Context, queueID, messageID string) ([]store.Event, error)
}

// Config configures a Server. Zero values take the defaults noted.
type Config struct {
	Listen    []string    // "host:port" to listen on (port 25 in production)
	Hostname  string      // the greeting's name
	TLSConfig *tls.Config // STARTTLS is offered when set
	// FeedbackAddresses receive ARF reports from feedback loops (the
	// address registered with each provider's program).
	FeedbackAddresses []string
	// FeedbackReporters are who may send complaints (verify.go): an
	// address, or a domain for every address in it (the defaults are in
	// package config).
	FeedbackReporters []string
	// FeedbackReporterIPs are networks whose complaints are believed
	// without a signature.
	FeedbackReporterIPs []netip.Prefix
	// DNS looks up the DKIM keys of feedback reporters. Without it no
	// signature verifies.
	DNS Resolver
	// ReportBudget is how much processing time one client address may
	// spend in a burst, earned back at ReportBudgetRate seconds a second
	// (budget.go); defaults 10s and 0.1.
	ReportBudget     time.Duration
	ReportBudgetRate float64
	ReportTimeout    time.Duration // examining one report; default 30s
	MaxMessageBytes  int64         // default DefaultMaxMessageBytes
	// ReadTimeout is the wait for a client's next bytes (moved forward by
	// every read, so a slow upload that keeps sending is not cut).
	ReadTimeout  time.Duration // default 5m
	WriteTimeout time.Duration // default 1m
	// The connection caps, in total and per client network (/32, /64).
	// Nobody logs in here, so when the total is reached the connection
	// idle longest is closed to make room (package netguard).
	MaxConnections      int     // default 200
	MaxConnectionsPerIP int     // default 20
	Limits              Limits  // what is kept (limits.go)
	Metrics             Metrics // counts connections, reports, and what is kept and refused; nil: nothing counted
	Logger              *slog.Logger
	Now                 func() time.Time
}

// Metrics counts what the listener does (metrics.Metrics has it): its
// connections (netguard.Metrics); per report its kind ("dsn", "arf", ""
// unparsed), the verdict (verified, unverified, over_budget, none), the
// store lookups it cost and the time it took; per message kept its status
// and whether only its start was kept; per refusal its reason (the
// refused* constants, limits.go).
type Metrics interface {
	netguard.Metrics
	InboundReport(kind, verdict string, lookups int, took time.Duration)
	InboundKept(status string, truncated bool)
	InboundRefused(reason string)
}

type nopMetrics struct{}

func (nopMetrics) InboundReport(string, string, int, time.Duration) {}
func (nopMetrics) InboundKept(string, bool)                         {}
func (nopMetrics) InboundRefused(string)                            {}
func (nopMetrics) ConnRefused(string, string)                       {}
func (nopMetrics) ConnShed(string)                                  {}
func (nopMetrics) AcceptError(string)                               {}

// maxRecipients bounds RCPT per transaction; a report has one.
const maxRecipients = 10

// Server is the inbound listener.
type Server struct {
	cfg         Config
	st          Store
	signer      *verp.Signer
	log         *slog.Logger
	metrics     Metrics
	dns         Resolver
	reporters   []reporter
	reporterIPs []netip.Prefix
	budget      *budget
	conns       *netguard.Guard

	clients *clientLimiter       // the per-client caps
	warnMu  sync.Mutex           // guards warned
	warned  map[string]time.Time // when each kind of refusal was last logged at Warn

	mu      sync.Mutex
	servers []*smtp.Server
	lns     []net.Listener
}

// New returns a Server; Listen binds it.
func New(cfg Config, st Store, signer *verp.Signer) *Server {
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = DefaultMaxMessageBytes
	}
	cfg.Limits.defaults()
	if cfg.Metrics == nil {
		cfg.Metrics = nopMetrics{}
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = 5 * time.Minute
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ReportBudget <= 0 {
		cfg.ReportBudget = defaultReportBudget
	}
	if cfg.ReportBudgetRate <= 0 {
		cfg.ReportBudgetRate = defaultReportBudgetRate
	}
	if cfg.ReportTimeout <= 0 {
		cfg.ReportTimeout = defaultReportTimeout
	}
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = 200
	}
	if cfg.MaxConnectionsPerIP <= 0 {
		cfg.MaxConnectionsPerIP = 20
	}
	conns := netguard.New(netguard.Config{Name: "inbound", MaxConns: cfg.MaxConnections, MaxPerIP: cfg.MaxConnectionsPerIP,
		ReadTimeout: cfg.ReadTimeout, Logger: cfg.Logger, Metrics: cfg.Metrics})
	return &Server{cfg: cfg, st: st, signer: signer, log: cfg.Logger, metrics: cfg.Metrics, dns: cfg.DNS,
		reporters: parseReporters(cfg.FeedbackReporters), reporterIPs: cfg.FeedbackReporterIPs,
		budget:  newBudget(cfg.ReportBudget, cfg.ReportBudgetRate),
		clients: newClientLimiter(cfg.Limits.ClientMessagesPerHour, cfg.Limits.ClientBytesPerHour, cfg.Now), warned: map[string]time.Time{}, conns: conns}
}

// ConnStats returns the open inbound connections.
func (s *Server) ConnStats() netguard.Stats { return s.conns.Stats() }

// Listen binds every address; it fails if one cannot be bound.
func (s *Server) Listen() error {
	for _, addr := range s.cfg.Listen {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			for _, l := range s.lns {
				l.Close()
			}
			return fmt.Errorf("inbound: listen on %s: %w", addr, err)
		}
		// Port 25 is open to anyone: cap the connections, so a flood
		// cannot use up the process's file descriptors.
		s.lns = append(s.lns, s.conns.Wrap(ln, func(c net.Conn, _ string) {
			io.WriteString(c, "421 4.7.0 "+s.cfg.Hostname+" Too many connections, try again later\r\n")
		}))
	}
	return nil
}

// Serve accepts connections on the bound listeners until Shutdown.
func (s *Server) Serve() {
	var wg sync.WaitGroup
	for _, ln := range s.lns {
		srv := smtp.NewServer(s)
		srv.Domain = s.cfg.Hostname
		srv.TLSConfig = s.cfg.TLSConfig
		srv.MaxMessageBytes = s.cfg.MaxMessageBytes
		srv.MaxRecipients = maxRecipients
		srv.ReadTimeout = s.cfg.ReadTimeout
		srv.WriteTimeout = s.cfg.WriteTimeout
		srv.ErrorLog = slogWriter{s.log}
		s.mu.Lock()
		s.servers = append(s.servers, srv)
		s.mu.Unlock()
		s.log.Info("inbound: listening", "addr", ln.Addr().String())
		wg.Go(func() { srv.Serve(ln) })
	}
	wg.Wait()
}

// Shutdown stops accepting and waits for the transactions in progress.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	servers := s.servers
	s.mu.Unlock()
	var first error
	for _, srv := range servers {
		if err := srv.Shutdown(ctx); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// slogWriter makes go-smtp's error log structured.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Printf(format string, v ...any) {
	w.log.Warn("inbound: " + strings.TrimSpace(fmt.Sprintf(format, v...)))
}
func (w slogWriter) Println(v ...any) {
	w.log.Warn("inbound: " + strings.TrimSpace(fmt.Sprintln(v...)))
}

// NewSession starts a session: no authentication, nobody is trusted.
func (s *Server) NewSession(c *smtp.Conn) (smtp.Session, error) {
	remote := c.Conn().RemoteAddr()
	var client netip.Addr
	if a, ok := remote.(*net.TCPAddr); ok {
		client = a.AddrPort().Addr().Unmap()
	}
	return &session{s: s, remote: remote.String(), client: client, key: clientKey(client)}, nil
}

type session struct {
	s        *Server
	remote   string
	client   netip.Addr
	key      netip.Prefix // what the per-client caps count by
	from     string
	rcpts    []string
	tokens   []verp.Token
	feedback bool
}

var errNoSuchUser = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1},
	Message: "No such user here; this server only takes bounces and feedback reports for mail it sent"}

func (ss *session) Mail(from string, opts *smtp.MailOptions) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var size int64
	if opts != nil {
		size = opts.Size
	}
	if err := ss.s.admit(ctx, ss.key, size); err != nil {
		return err
	}
	ss.from = from
	return nil
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	tok, err := ss.s.signer.Parse(to)
	switch {
	case err == nil:
		ss.tokens = append(ss.tokens, tok)
	case ss.s.isFeedback(to):
		ss.feedback = true
	default:
		if errors.Is(err, verp.ErrForged) {
			ss.s.log.Warn("inbound: refused a return path with a bad signature", "rcpt", to, "client", ss.remote)
		} else {
			ss.s.log.Info("inbound: refused a recipient that is not ours", "rcpt", to, "client", ss.remote)
		}
		return errNoSuchUser
	}
	ss.rcpts = append(ss.rcpts, to)
	return nil
}

func (s *Server) isFeedback(addr string) bool {
	for _, a := range s.cfg.FeedbackAddresses {
		if strings.EqualFold(a, addr) {
			return true
		}
	}
	return false
}

func (ss *session) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		if errors.Is(err, smtp.ErrDataTooLarge) {
			ss.s.refuse(refusedTooLarge, smtp.ErrDataTooLarge, "client", ss.remote)
		}
		return err // go-smtp answers 552 5.3.4 for a message over the size limit
	}
	o := ss.s.examine(context.Background(), raw, envelope{client: ss.client, tokens: ss.tokens, rcpts: ss.rcpts})
	if o.retry != nil {
		return o.retry
	}
	m, events, sups := o.msg, o.events, o.sups
	m.MailFrom, m.RcptTo = ss.from, strings.Join(ss.rcpts, " ")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if ss.client.IsValid() {
		m.Client = ss.client.String()
	}
	ss.s.keep(&m)
	id, err := ss.store(ctx, m, events, sups)
	if err != nil {
		return err
	}
	ss.s.log.Info("inbound: report", "id", id, "client", ss.remote, "kind", m.Kind, "status", m.Status,
		"verified", m.Verified, "verification", m.Verification, "lookups", o.lookups,
		"size", m.Size, "kept", len(m.Raw), "events", len(events), "suppressed", len(sups), "detail", m.Detail)
	return nil
}

func (ss *session) Reset() {
	ss.from, ss.rcpts, ss.tokens, ss.feedback = "", nil, nil, false
}

func (ss *session) Logout() error { return nil }
