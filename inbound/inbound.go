// Package inbound is the listener for mail coming back to Sesame:
// asynchronous bounces (DSNs, RFC 3464) sent to the return paths of
// outbound mail, and complaint reports (ARF, RFC 5965) sent by mailbox
// providers' feedback loops to the configured feedback addresses.
//
// It is neither a relay nor a mailbox: it accepts mail only for Sesame's own
// return paths (b+TOKEN@bounce.DOMAIN, whose HMAC it checks, see package
// verp) and for the feedback addresses; anything else gets 550 5.1.1. Each
// report becomes bounce or complaint events for the original recipient,
// found through the token or the returned message's header, and hard
// bounces and complaints put the recipient on the suppression list. Every
// message accepted is stored with what was made of it, so one that cannot
// be read is kept for the operator (sesame inbound list), not lost; what is
// kept is bounded per message, per client and in total, whatever strangers
// send (limits.go).
package inbound

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/mail"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
	"golang.org/x/net/netutil"

	"github.com/sesame-mail/sesame/relay"
	"github.com/sesame-mail/sesame/report"
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
	MaxMessageBytes   int64         // default DefaultMaxMessageBytes
	ReadTimeout       time.Duration // default 5m
	WriteTimeout      time.Duration // default 1m
	Limits            Limits        // what is kept (limits.go)
	Metrics           Metrics       // counts what is kept and refused; nil: nothing counted
	Logger            *slog.Logger
	Now               func() time.Time
}

// maxRecipients bounds RCPT per transaction; a report has one.
const maxRecipients = 10

// maxConnections bounds the listener's open connections; more wait in the
// kernel's accept queue.
const maxConnections = 200

// Server is the inbound listener.
type Server struct {
	cfg    Config
	st     Store
	signer *verp.Signer
	log    *slog.Logger

	metrics Metrics
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
	return &Server{cfg: cfg, st: st, signer: signer, log: cfg.Logger, metrics: cfg.Metrics,
		clients: newClientLimiter(cfg.Limits.ClientMessagesPerHour, cfg.Limits.ClientBytesPerHour, cfg.Now), warned: map[string]time.Time{}}
}

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
		// Port 25 is open to anyone: bound the connections at once, so a
		// flood cannot use up the process's file descriptors.
		s.lns = append(s.lns, netutil.LimitListener(ln, maxConnections))
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
	addr := c.Conn().RemoteAddr()
	return &session{s: s, remote: addr.String(), client: clientKey(addr)}, nil
}

type session struct {
	s        *Server
	remote   string
	client   netip.Prefix // what the per-client caps count by
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
	if err := ss.s.admit(ctx, ss.client, size); err != nil {
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
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, events, sups := ss.s.process(ctx, raw, ss.tokens)
	m.MailFrom, m.RcptTo = ss.from, strings.Join(ss.rcpts, " ")
	if ap, err := netip.ParseAddrPort(ss.remote); err == nil {
		m.Client = ap.Addr().Unmap().String()
	}
	ss.s.keep(&m)
	id, err := ss.store(ctx, m, events, sups)
	if err != nil {
		return err
	}
	ss.s.log.Info("inbound: report", "id", id, "client", ss.remote, "kind", m.Kind, "status", m.Status,
		"size", m.Size, "kept", len(m.Raw), "events", len(events), "suppressed", len(sups), "detail", m.Detail)
	return nil
}

func (ss *session) Reset() {
	ss.from, ss.rcpts, ss.tokens, ss.feedback = "", nil, nil, false
}

func (ss *session) Logout() error { return nil }

// process reads one report and says what it means.
func (s *Server) process(ctx context.Context, raw []byte, tokens []verp.Token) (store.InboundMessage, []store.Event, []store.Suppression) {
	now := s.cfg.Now()
	m := store.InboundMessage{ReceivedAt: now, Raw: raw}
	rep, err := report.Parse(raw)
	if err != nil {
		m.Status, m.Detail = store.InboundUnparsed, err.Error()
		return m, nil, nil
	}
	m.Kind = string(rep.Kind)
	var events []store.Event
	var sups []store.Suppression
	var notes []string
	switch rep.Kind {
	case report.KindDSN:
		for _, r := range rep.DSN.Recipients {
			if !failed(r) {
				notes = append(notes, fmt.Sprintf("%s: %s, nothing to record", r.FinalRecipient, strings.ToLower(r.Action)))
				continue
			}
			send, ok, err := s.lookup(ctx, tokens, rep.Original, r.OriginalRecipient, r.FinalRecipient)
			if err != nil {
				m.Status, m.Detail = store.InboundUnmatched, "looking up the original message failed: "+err.Error()
				return m, nil, nil
			}
			if !ok {
				notes = append(notes, fmt.Sprintf("%s: no message of ours found", r.FinalRecipient))
				continue
			}
			reply := r.Diagnostic
			if reply == "" {
				reply = "status " + r.Status
			}
			bt := relay.ClassifyBounce(r.Status, reply)
			events = append(events, store.Event{At: now, Type: store.EventBounce, BounceType: bt, Credential: send.Credential,
				QueueID: send.QueueID, MessageID: send.MessageID, Recipient: send.Recipient, RemoteMTA: r.RemoteMTA, Reply: reply})
			if bt == store.BounceHard {
				sups = append(sups, store.Suppression{Address: send.Recipient, Credential: send.Credential,
					Reason: store.SuppressBounce, Detail: reply, CreatedAt: now})
			}
			notes = append(notes, fmt.Sprintf("%s: %s bounce of %s", send.Recipient, bt, send.QueueID))
		}
	case report.KindARF:
		fb := rep.Feedback
		switch strings.ToLower(fb.Type) {
		case "abuse", "fraud", "virus", "other", "":
		default: // not-spam, auth-failure: nothing against the recipient
			m.Status, m.Detail = store.InboundIgnored, "feedback type "+fb.Type
			return m, nil, nil
		}
		addrs := fb.OriginalRcptTo
		if len(addrs) == 0 && rep.Original.To != "" {
			if list, err := mail.ParseAddressList(rep.Original.To); err == nil {
				for _, a := range list {
					addrs = append(addrs, a.Address)
				}
			} else {
				addrs = []string{rep.Original.To}
			}
		}
		if t, err := s.signer.Parse(fb.OriginalMailFrom); err == nil {
			tokens = append(tokens, t)
		}
		send, ok, err := s.lookup(ctx, tokens, rep.Original, addrs...)
		if err != nil {
			m.Status, m.Detail = store.InboundUnmatched, "looking up the original message failed: "+err.Error()
			return m, nil, nil
		}
		if !ok {
			m.Status, m.Detail = store.InboundUnmatched, fmt.Sprintf("complaint (%s) about no message of ours", fb.Type)
			return m, nil, nil
		}
		reply := "complaint: " + fb.Type
		if fb.UserAgent != "" {
			reply += " (" + fb.UserAgent + ")"
		}
		events = append(events, store.Event{At: now, Type: store.EventComplaint, Credential: send.Credential,
			QueueID: send.QueueID, MessageID: send.MessageID, Recipient: send.Recipient, RemoteMTA: fb.ReportingMTA, Reply: reply})
		sups = append(sups, store.Suppression{Address: send.Recipient, Credential: send.Credential,
			Reason: store.SuppressComplaint, Detail: reply, CreatedAt: now})
		notes = append(notes, fmt.Sprintf("%s: complaint about %s", send.Recipient, send.QueueID))
	}
	m.Detail = strings.Join(notes, "; ")
	switch {
	case len(events) > 0:
		m.Status = store.InboundProcessed
	case rep.Kind == report.KindDSN && !anyFailed(rep.DSN):
		m.Status = store.InboundIgnored
	default:
		m.Status = store.InboundUnmatched
	}
	return m, events, sups
}

// failed reports whether a DSN recipient failed for good: Action failed
// (RFC 3464 §2.3.3), or, from a server that leaves Action out, a 5.x.x
// status.
func failed(r report.Recipient) bool {
	a := strings.ToLower(r.Action)
	return a == "failed" || (a == "" && strings.HasPrefix(r.Status, "5."))
}

func anyFailed(d *report.DSN) bool {
	for _, r := range d.Recipients {
		if failed(r) {
			return true
		}
	}
	return false
}

// receivedID finds the queue id Sesame writes in its Received field
// ("with ESMTPSA id QUEUEID").
var receivedID = regexp.MustCompile(`\bid ([A-Z0-9]{16})\b`)

// lookup finds the send event a report is about: through a return path's
// token (which names the queue id and the recipient), else through the
// queue id in the returned header's Received fields or its Message-ID,
// with the recipient among addrs (or the message's only recipient).
func (s *Server) lookup(ctx context.Context, tokens []verp.Token, orig report.Headers, addrs ...string) (store.Event, bool, error) {
	for _, t := range tokens {
		sends, err := s.st.SendEvents(ctx, t.QueueID, "")
		if err != nil {
			return store.Event{}, false, err
		}
		for _, e := range sends {
			if t.Matches(e.Recipient) {
				return e, true, nil
			}
		}
	}
	var queries [][2]string
	for _, rcv := range orig.Received {
		if m := receivedID.FindStringSubmatch(rcv); m != nil {
			queries = append(queries, [2]string{m[1], ""})
		}
	}
	if orig.MessageID != "" {
		queries = append(queries, [2]string{"", "<" + strings.Trim(orig.MessageID, "<>") + ">"}, [2]string{"", orig.MessageID})
	}
	for _, q := range queries {
		sends, err := s.st.SendEvents(ctx, q[0], q[1])
		if err != nil {
			return store.Event{}, false, err
		}
		for _, e := range sends {
			for _, a := range addrs {
				if strings.EqualFold(bareAddress(a), e.Recipient) {
					return e, true, nil
				}
			}
		}
		if len(sends) == 1 && len(addrs) == 0 {
			return sends[0], true, nil
		}
	}
	return store.Event{}, false, nil
}

// bareAddress takes "Name <a@b>" or "<a@b>" to "a@b".
func bareAddress(a string) string {
	if i := strings.LastIndexByte(a, '<'); i >= 0 {
		a = a[i+1:]
	}
	return strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(a), ">"))
}
