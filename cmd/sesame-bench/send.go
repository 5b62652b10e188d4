package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/sesame-mail/sesame/smtpio"
)

// sendConfig is what one send run does. Zero values are not defaults; the
// flags carry the defaults (see newSendFlags).
type sendConfig struct {
	Addr          string        // host:port of the submission server
	TLS           string        // "starttls", "implicit" or "none"
	Auth          string        // "plain", "login" or "none"
	User          string        // SMTP credential
	Password      string        // SMTP credential
	Connections   int           // concurrent clients
	Messages      int           // messages per client
	Size          int           // bytes per message, headers included
	Recipients    int           // recipients per message
	From          string        // envelope and header sender
	ToDomain      string        // recipients are rcptNNN@ToDomain
	Domains       int           // when > 0, message i goes to rcptNNN@d<i mod Domains>.ToDomain
	NewConnection bool          // one session per message instead of one per client
	Timeout       time.Duration // per network operation
	Scenario      string        // report label; derived from the mode when empty
	RunID         string        // token in every Subject; random when empty
	AllowRemote   bool          // permit addresses outside loopback
}

// validate reports every problem in cfg at once.
func (cfg *sendConfig) validate() error {
	var errs []error
	if _, err := checkLoopback(cfg.Addr, cfg.AllowRemote); err != nil {
		errs = append(errs, fmt.Errorf("--addr: %w", err))
	}
	switch cfg.TLS {
	case "starttls", "implicit", "none":
	default:
		errs = append(errs, fmt.Errorf("--tls %q: want starttls, implicit or none", cfg.TLS))
	}
	switch cfg.Auth {
	case "plain", "login":
		if cfg.User == "" {
			errs = append(errs, fmt.Errorf("--user is required with --auth %s", cfg.Auth))
		}
	case "none":
	default:
		errs = append(errs, fmt.Errorf("--auth %q: want plain, login or none", cfg.Auth))
	}
	if cfg.Connections < 1 {
		errs = append(errs, fmt.Errorf("--connections %d: want at least 1", cfg.Connections))
	}
	if cfg.Messages < 1 {
		errs = append(errs, fmt.Errorf("--messages %d: want at least 1", cfg.Messages))
	}
	if cfg.Size < 1 {
		errs = append(errs, fmt.Errorf("--size %d: want at least 1", cfg.Size))
	}
	if cfg.Recipients < 1 || cfg.Recipients > 1000 {
		errs = append(errs, fmt.Errorf("--recipients %d: want 1 to 1000", cfg.Recipients))
	}
	if local, domain, ok := strings.Cut(cfg.From, "@"); !ok || local == "" || domain == "" || strings.ContainsAny(cfg.From, " <>\r\n") {
		errs = append(errs, fmt.Errorf("--from %q: want a plain address like sender@example.com", cfg.From))
	}
	if cfg.ToDomain == "" || strings.ContainsAny(cfg.ToDomain, " @<>\r\n") {
		errs = append(errs, fmt.Errorf("--to-domain %q: want a domain like example.net", cfg.ToDomain))
	}
	if cfg.Domains < 0 || cfg.Domains > maxDomains {
		errs = append(errs, fmt.Errorf("--domains %d: want 0 to %d", cfg.Domains, maxDomains))
	}
	if cfg.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("--timeout %s: want a positive duration", cfg.Timeout))
	}
	if strings.ContainsAny(cfg.RunID, " \r\n") {
		errs = append(errs, fmt.Errorf("--run-id %q: must not contain spaces", cfg.RunID))
	}
	return errors.Join(errs...)
}

// maxDomains bounds --domains.
const maxDomains = 1000000

// recipients are the recipients of message n of client id: rcptNNN at
// ToDomain, or, with Domains, at one of Domains subdomains of it, taken in
// turn by the clients' messages together, so each domain's mail is spread
// over the whole run as a newsletter's is.
func (cfg *sendConfig) recipients(id, n int) []string {
	domain := cfg.ToDomain
	if cfg.Domains > 0 {
		domain = "d" + strconv.Itoa((n*cfg.Connections+id)%cfg.Domains) + "." + cfg.ToDomain
	}
	rcpts := make([]string, cfg.Recipients)
	for i := range rcpts {
		rcpts[i] = fmt.Sprintf("rcpt%03d@%s", i, domain)
	}
	return rcpts
}

func (cfg *sendConfig) scenario() string {
	if cfg.Scenario != "" {
		return cfg.Scenario
	}
	mode := "persistent"
	if cfg.NewConnection {
		mode = "new-connection"
	}
	return mode + "-" + cfg.TLS + "-" + cfg.Auth
}

// runSend runs the whole load and reports on it. An error means the run
// could not start; failed messages are counted in the report instead. A
// cancelled ctx ends the run early with a report of what was done.
func runSend(ctx context.Context, cfg sendConfig) (sendReport, error) {
	if err := cfg.validate(); err != nil {
		return sendReport{}, err
	}
	addr, _ := checkLoopback(cfg.Addr, cfg.AllowRemote)
	host, _, _ := net.SplitHostPort(addr)
	if cfg.RunID == "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		cfg.RunID = hex.EncodeToString(b[:])
	}
	rcpts := cfg.recipients(0, 0)
	tlsConf := &tls.Config{
		// Servers under test use self-signed certificates; this tool
		// measures speed, not the certificate chain.
		InsecureSkipVerify: true, //nolint:gosec
		MinVersion:         tls.VersionTLS12,
		ServerName:         host,
	}

	clients := make([]*client, cfg.Connections)
	for i := range clients {
		clients[i] = &client{
			cfg:     &cfg,
			addr:    addr,
			id:      i,
			rcpts:   rcpts,
			tlsConf: tlsConf,
			msg:     newMessageBuilder(cfg.RunID, cfg.From, rcpts, cfg.Size),
			errors:  map[string]int{},
			samples: map[string]string{},
		}
	}

	start := time.Now()
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Go(func() { c.run(ctx) })
	}
	wg.Wait()
	elapsed := time.Since(start)

	// Each client kept its own figures so the hot path takes no lock.
	rep := sendReport{
		Scenario:              cfg.scenario(),
		RunID:                 cfg.RunID,
		Connections:           cfg.Connections,
		MessagesPerConnection: cfg.Messages,
		Size:                  cfg.Size,
		Recipients:            cfg.Recipients,
		Errors:                map[string]int{},
		ErrorSamples:          map[string]string{},
		Seconds:               math.Round(elapsed.Seconds()*1000) / 1000,
	}
	var latencies, setups []time.Duration
	for _, c := range clients {
		rep.Accepted += c.accepted
		latencies = append(latencies, c.latencies...)
		setups = append(setups, c.setups...)
		for k, n := range c.errors {
			rep.Errors[k] += n
		}
		for k, s := range c.samples {
			rep.ErrorSamples[k] = s
		}
	}
	rep.MsgsPerSec = perSecond(rep.Accepted, elapsed)
	l := summarize(latencies)
	rep.P50ms, rep.P90ms, rep.P99ms, rep.MaxMs = ms(l.P50), ms(l.P90), ms(l.P99), ms(l.Max)
	s := summarize(setups)
	rep.Sessions, rep.SessionP50ms, rep.SessionP99ms = s.Count, ms(s.P50), ms(s.P99)
	return rep, nil
}

// client is one simulated application: one goroutine sending its share of
// the messages, over one persistent session or a session per message.
type client struct {
	cfg     *sendConfig
	addr    string
	id      int
	rcpts   []string
	tlsConf *tls.Config
	msg     *messageBuilder

	// Owned by the client's goroutine until runSend merges them.
	accepted  int
	latencies []time.Duration // MAIL to final DATA reply, accepted messages only
	setups    []time.Duration // dial to AUTH done, successful sessions only
	errors    map[string]int
	samples   map[string]string // one error text per class, for the table
}

func (c *client) run(ctx context.Context) {
	c.latencies = make([]time.Duration, 0, c.cfg.Messages)
	var s *session
	defer func() {
		if s != nil {
			s.quit()
		}
	}()
	for n := range c.cfg.Messages {
		if ctx.Err() != nil {
			return
		}
		if s == nil {
			var err error
			if s, err = c.connect(ctx); err != nil {
				// A failed session costs the message it was opened for, so a
				// dead server ends the run instead of spinning forever.
				c.fail(ctx, err)
				continue
			}
		}
		err := c.send(s, n)
		if err != nil {
			c.fail(ctx, err)
			// The session's state after an error is unknown: start afresh
			// rather than RSET, as the applications we imitate do.
			s.close()
			s = nil
			continue
		}
		if c.cfg.NewConnection {
			s.quit()
			s = nil
		}
	}
}

// fail counts err under its class, unless it is only the echo of ctx ending.
func (c *client) fail(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	k := errorClass(err)
	c.errors[k]++
	if _, ok := c.samples[k]; !ok {
		c.samples[k] = err.Error()
	}
}

// errorClass names an error the way the report counts it: the SMTP reply
// code, "timeout", or "conn" for any other network or TLS failure.
func errorClass(err error) string {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return strconv.Itoa(se.Code)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	return "conn"
}

// send submits message n and records its latency.
func (c *client) send(s *session, n int) error {
	rcpts := c.rcpts
	if c.cfg.Domains > 0 {
		rcpts = c.cfg.recipients(c.id, n)
		c.msg.setRecipients(rcpts)
	}
	msg := c.msg.build(c.id, n, time.Now())
	start := time.Now()
	if err := s.tx.command(250, "MAIL FROM:<"+c.cfg.From+">"+s.mailParams+" SIZE="+strconv.Itoa(len(msg))); err != nil {
		return fmt.Errorf("MAIL: %w", err)
	}
	for _, r := range rcpts {
		if err := s.tx.command(250, "RCPT TO:<"+r+">"); err != nil {
			return fmt.Errorf("RCPT %s: %w", r, err)
		}
	}
	if err := s.tx.command(354, "DATA"); err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	if err := s.tx.data(msg); err != nil {
		return fmt.Errorf("end of DATA: %w", err)
	}
	c.latencies = append(c.latencies, time.Since(start))
	c.accepted++
	return nil
}

// session is one SMTP connection, closed early if the run is cancelled.
// go-smtp's client greets, starts TLS and logs in; the transactions then
// run on tx, which writes each message in one piece (go-smtp's data writer
// goes a byte at a time and sends 4 KiB TLS records), so the load tool
// takes less of the CPU it shares with the server under test.
type session struct {
	tx         *txConn
	mailParams string      // " BODY=8BITMIME" when the server offers it
	stop       func() bool // detaches the close-on-cancel hook
}

// connect opens a session: TCP, TLS as configured, EHLO and AUTH, all
// within cfg.Timeout.
func (c *client) connect(ctx context.Context) (*session, error) {
	start := time.Now()
	setupCtx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	d := net.Dialer{}
	conn, err := d.DialContext(setupCtx, "tcp", c.addr)
	if err != nil {
		return nil, fmt.Errorf("connecting: %w", err)
	}
	// go-smtp bounds each command with its own deadline, which would
	// override one set on conn; closing conn is what bounds the setup.
	stopSetup := context.AfterFunc(setupCtx, func() { conn.Close() })

	var sc *smtp.Client
	txc := conn // the connection the transactions run on
	switch c.cfg.TLS {
	case "implicit":
		tc := tls.Client(conn, c.tlsConf)
		sc, txc = smtp.NewClient(tc), tc
	case "starttls":
		var tc *tls.Conn
		if tc, err = startTLS(setupCtx, conn, c.tlsConf); err == nil {
			// go-smtp reads a greeting first: hand it one, and it carries on
			// with EHLO over TLS.
			sc, txc = smtp.NewClient(&smtpio.GreetedConn{Conn: tc, Pending: []byte("220 TLS started\r\n")}), tc
		}
	default:
		sc = smtp.NewClient(conn)
	}
	if err == nil {
		sc.CommandTimeout = c.cfg.Timeout
		sc.SubmissionTimeout = c.cfg.Timeout
		// Extension runs the greeting and (after STARTTLS, the second) EHLO
		// now, so their cost counts as setup and not against the first
		// message. The client keeps an EHLO error and returns it from the
		// next command.
		sc.Extension("AUTH")
	}
	if err == nil {
		switch c.cfg.Auth {
		case "plain":
			err = sc.Auth(sasl.NewPlainClient("", c.cfg.User, c.cfg.Password))
		case "login":
			err = sc.Auth(sasl.NewLoginClient(c.cfg.User, c.cfg.Password))
		}
		if err != nil {
			err = fmt.Errorf("AUTH: %w", err)
		}
	}
	if !stopSetup() && err == nil {
		// The hook already ran: the timeout or cancel won the race.
		err = fmt.Errorf("session setup: %w", context.Cause(setupCtx))
	}
	if err != nil {
		conn.Close()
		if setupCtx.Err() != nil && ctx.Err() == nil {
			err = fmt.Errorf("session setup to %s: %w after %s: %w", c.addr, errTimeout, c.cfg.Timeout, err)
		}
		return nil, err
	}
	c.setups = append(c.setups, time.Since(start))
	s := &session{
		tx:   newTxConn(txc, c.cfg.Timeout),
		stop: context.AfterFunc(ctx, func() { conn.Close() }),
	}
	if ok, _ := sc.Extension("8BITMIME"); ok {
		s.mailParams = " BODY=8BITMIME"
	}
	return s, nil
}

// startTLS reads the greeting on conn, says EHLO and STARTTLS, and runs the
// TLS handshake.
func startTLS(ctx context.Context, conn net.Conn, cfg *tls.Config) (*tls.Conn, error) {
	tp := textproto.NewConn(conn)
	step := func(code int, cmd string) error {
		if cmd != "" {
			if err := tp.PrintfLine("%s", cmd); err != nil {
				return err
			}
		}
		if c, msg, err := tp.ReadResponse(code); err != nil {
			var perr *textproto.Error
			if errors.As(err, &perr) {
				return &smtp.SMTPError{Code: c, Message: msg}
			}
			return err
		}
		return nil
	}
	if err := step(220, ""); err != nil {
		return nil, fmt.Errorf("greeting: %w", err)
	}
	if err := step(250, "EHLO localhost"); err != nil {
		return nil, fmt.Errorf("EHLO: %w", err)
	}
	if err := step(220, "STARTTLS"); err != nil {
		return nil, fmt.Errorf("STARTTLS: %w", err)
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	return tc, nil
}

// txConn runs the mail transactions of a session: a command and its reply
// at a time, as the applications imitated do, and each message in one write.
type txConn struct {
	conn    net.Conn
	r       *textproto.Reader
	w       *bufio.Writer
	timeout time.Duration
}

func newTxConn(conn net.Conn, timeout time.Duration) *txConn {
	return &txConn{conn: conn, r: textproto.NewReader(bufio.NewReader(conn)),
		w: bufio.NewWriterSize(conn, 32<<10), timeout: timeout}
}

// command sends line and reads its reply, an *smtp.SMTPError unless it has
// code want.
func (t *txConn) command(want int, line string) error {
	t.conn.SetDeadline(time.Now().Add(t.timeout))
	t.w.WriteString(line)
	t.w.WriteString("\r\n")
	if err := t.w.Flush(); err != nil {
		return err
	}
	return t.reply(want)
}

func (t *txConn) reply(want int) error {
	code, msg, err := t.r.ReadResponse(want)
	var perr *textproto.Error
	if errors.As(err, &perr) {
		return &smtp.SMTPError{Code: code, Message: msg}
	}
	return err
}

// data sends msg (CRLF line ends), dot-stuffed, and the final dot, and reads
// the reply.
func (t *txConn) data(msg []byte) error {
	t.conn.SetDeadline(time.Now().Add(t.timeout))
	smtpio.WriteData(t.w, msg)
	if err := t.w.Flush(); err != nil {
		return err
	}
	return t.reply(250)
}

// errTimeout classifies a session setup that ran out of time.
var errTimeout error = timeoutError{}

type timeoutError struct{}

func (timeoutError) Error() string   { return "timed out" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

// quit ends the session politely; errors are ignored as the message is
// already accepted.
func (s *session) quit() {
	s.stop()
	s.tx.command(221, "QUIT")
	s.tx.conn.Close()
}

func (s *session) close() {
	s.stop()
	s.tx.conn.Close()
}

// newSendFlags binds the send flags to cfg, with their defaults.
func newSendFlags(cfg *sendConfig, jsonOnly *bool) *flag.FlagSet {
	fs := flag.NewFlagSet("send", flag.ContinueOnError)
	fs.StringVar(&cfg.Addr, "addr", "127.0.0.1:587", "submission server host:port (loopback only unless --allow-remote)")
	fs.StringVar(&cfg.TLS, "tls", "starttls", "starttls, implicit (port 465 style) or none")
	fs.StringVar(&cfg.Auth, "auth", "plain", "SASL mechanism: plain, login or none")
	fs.StringVar(&cfg.User, "user", "", "SMTP user name")
	fs.StringVar(&cfg.Password, "password", "", "SMTP password")
	fs.IntVar(&cfg.Connections, "connections", 20, "concurrent clients")
	fs.IntVar(&cfg.Messages, "messages", 1000, "messages per client")
	fs.IntVar(&cfg.Size, "size", 10240, "message size in bytes, headers included")
	fs.IntVar(&cfg.Recipients, "recipients", 1, "recipients per message")
	fs.StringVar(&cfg.From, "from", "sender@example.com", "envelope and From header address; its domain is the signing domain")
	fs.StringVar(&cfg.ToDomain, "to-domain", "example.net", "recipients are rcptNNN@<to-domain>")
	fs.IntVar(&cfg.Domains, "domains", 0, "spread the messages over this many domains, d0.<to-domain> to d<N-1>.<to-domain> (0: all to <to-domain>)")
	fs.BoolVar(&cfg.NewConnection, "new-connection", false, "open a new TCP+TLS+AUTH session per message (as WordPress does)")
	fs.DurationVar(&cfg.Timeout, "timeout", 30*time.Second, "limit for session setup and for each SMTP command")
	fs.StringVar(&cfg.Scenario, "scenario", "", "label for the report (default <mode>-<tls>-<auth>)")
	fs.StringVar(&cfg.RunID, "run-id", "", "token put in every Subject (default random)")
	fs.BoolVar(&cfg.AllowRemote, "allow-remote", false, "allow an --addr outside loopback")
	fs.BoolVar(jsonOnly, "json-only", false, "print only the JSON line")
	setUsage(fs, `Usage: sesame-bench send [flags]

Drives --connections concurrent SMTP clients, each submitting --messages
messages, and prints a table and one JSON line. Latency is measured per
message from MAIL to the final reply after DATA; errors are counted by reply
code ("conn" and "timeout" for network failures), and a client whose message
failed reconnects. Exits 1 if no message was accepted.
`)
	return fs
}

func sendMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cfg sendConfig
	var jsonOnly bool
	fs := newSendFlags(&cfg, &jsonOnly)
	if done, code := parseFlags(fs, args, stdout, stderr); done {
		return code
	}
	rep, err := runSend(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "sesame-bench send: %v\n", err)
		return 2
	}
	if !jsonOnly {
		if err := rep.writeTable(stdout); err != nil {
			fmt.Fprintf(stderr, "sesame-bench send: %v\n", err)
			return 1
		}
	}
	if err := writeJSON(stdout, rep); err != nil {
		fmt.Fprintf(stderr, "sesame-bench send: %v\n", err)
		return 1
	}
	if rep.Accepted == 0 {
		return 1
	}
	return 0
}
