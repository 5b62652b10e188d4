package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"math/big"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sesame-mail/sesame/delayline"
)

// sinkConfig is what one sink run does.
type sinkConfig struct {
	Listen      string        // host:port to listen on
	CertFile    string        // PEM certificate for STARTTLS; with KeyFile
	KeyFile     string        // PEM key for STARTTLS
	SelfSigned  bool          // offer STARTTLS with a certificate made in memory
	ReportEvery time.Duration // progress line interval on the log; 0 for none
	Expect      int           // stop after this many messages; 0 runs until cancelled
	Timeout     time.Duration // fail if Expect is not reached in time; 0 for no limit
	AllowRemote bool          // permit listening outside loopback
	DKIMRecords string        // "sesame domain add --json" output: keys to verify DKIM with
	DNS         string        // host:port of a DNS server to look DKIM keys up at
	// Latency holds every reply that long on a delay line (package
	// delayline), as a server across the internet: pipelined replies
	// overlap in flight, as on a real link.
	Latency time.Duration
	// Addrs is how many consecutive addresses, from Listen's on, the sink
	// listens on (all with Listen's port), as the mail exchangers of many
	// domains on shared hosting; 0 means 1.
	Addrs int
}

// maxSinkAddrs bounds --addrs.
const maxSinkAddrs = 10000

// listenAddrs are the addresses the sink listens on: Addrs consecutive
// IPs from Listen's, with its port.
func (cfg *sinkConfig) listenAddrs() ([]string, error) {
	addr, err := checkLoopback(cfg.Listen, cfg.AllowRemote)
	if err != nil {
		return nil, err
	}
	host, port, _ := net.SplitHostPort(addr)
	n := max(cfg.Addrs, 1)
	if n == 1 {
		return []string{addr}, nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return nil, fmt.Errorf("--listen %q: --addrs needs an IP address", cfg.Listen)
	}
	out := make([]string, n)
	for i := range out {
		if !ip.IsValid() || (!cfg.AllowRemote && !ip.IsLoopback()) {
			return nil, fmt.Errorf("--addrs %d from %s leaves loopback", n, host)
		}
		out[i] = net.JoinHostPort(ip.String(), port)
		ip = ip.Next()
	}
	return out, nil
}

func (cfg *sinkConfig) validate() error {
	var errs []error
	if _, err := checkLoopback(cfg.Listen, cfg.AllowRemote); err != nil {
		errs = append(errs, fmt.Errorf("--listen: %w", err))
	}
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		errs = append(errs, errors.New("--tls-cert and --tls-key go together"))
	}
	if cfg.SelfSigned && cfg.CertFile != "" {
		errs = append(errs, errors.New("--self-signed and --tls-cert exclude each other"))
	}
	if cfg.ReportEvery < 0 {
		errs = append(errs, fmt.Errorf("--report-every %s: want 0 or more", cfg.ReportEvery))
	}
	if cfg.Expect < 0 {
		errs = append(errs, fmt.Errorf("--expect %d: want 0 or more", cfg.Expect))
	}
	if cfg.Timeout < 0 {
		errs = append(errs, fmt.Errorf("--timeout %s: want 0 or more", cfg.Timeout))
	}
	if cfg.DNS != "" {
		if _, err := checkLoopback(cfg.DNS, cfg.AllowRemote); err != nil {
			errs = append(errs, fmt.Errorf("--dns: %w", err))
		}
	}
	if cfg.Latency < 0 {
		errs = append(errs, fmt.Errorf("--latency %s: want 0 or more", cfg.Latency))
	}
	if cfg.Addrs < 0 || cfg.Addrs > maxSinkAddrs {
		errs = append(errs, fmt.Errorf("--addrs %d: want 1 to %d", cfg.Addrs, maxSinkAddrs))
	} else if _, err := cfg.listenAddrs(); err != nil && cfg.Addrs > 1 {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// sinkReport is the sink's final figures. Seconds runs from the first
// connection accepted to the last message received, so the time the sink
// waited for the relay to start does not dilute the rate.
type sinkReport struct {
	Received        int     `json:"received"`
	Recipients      int     `json:"recipients"`
	Bytes           int64   `json:"bytes"`
	Connections     int     `json:"connections"`
	MsgsPerConn     float64 `json:"msgs_per_conn"`
	Seconds         float64 `json:"seconds"`
	MsgsPerSec      float64 `json:"msgs_per_sec"`
	EndToEndSamples int     `json:"end_to_end_samples"`
	EndToEndP50ms   float64 `json:"end_to_end_p50_ms"`
	EndToEndP99ms   float64 `json:"end_to_end_p99_ms"`
	EndToEndMaxms   float64 `json:"end_to_end_max_ms"`
	// DKIM verification (--dkim-records, --dns). DKIMChecked says it was
	// asked for; a message is verified when every signature it carries
	// verifies, and failed when one does not.
	DKIMChecked  bool `json:"dkim_checked"`
	DKIMVerified int  `json:"dkim_verified"`
	DKIMFailed   int  `json:"dkim_failed"`
	DKIMUnsigned int  `json:"dkim_unsigned"`
	// The shape of the run: how many addresses the sink listened on, the
	// latency of its replies, and the most sessions open at once, in all
	// and at one address (the relay's outbound concurrency as the
	// receivers see it). FirstUnix and LastUnix are the first connection
	// and the last message, in Unix seconds, for end-to-end rates.
	Addrs               int     `json:"addrs"`
	LatencyMs           float64 `json:"latency_ms"`
	PeakSessions        int     `json:"peak_sessions"`
	PeakSessionsPerAddr int     `json:"peak_sessions_per_addr"`
	FirstUnix           float64 `json:"first_unix"`
	LastUnix            float64 `json:"last_unix"`
}

// dkimError is non-nil when verification was asked for and a message failed.
func (r *sinkReport) dkimError() error {
	if !r.DKIMChecked || r.DKIMFailed == 0 {
		return nil
	}
	return fmt.Errorf("%d of %d messages failed DKIM verification", r.DKIMFailed, r.Received)
}

// dkimSummary is the one-line account of the DKIM checks for the log.
func (r *sinkReport) dkimSummary() string {
	return fmt.Sprintf("dkim verified=%d failed=%d unsigned=%d", r.DKIMVerified, r.DKIMFailed, r.DKIMUnsigned)
}

// sink is a counting SMTP server. It accepts every message, reads it to the
// end and throws the bytes away: nothing is stored or fsynced, so the sink is
// never the bottleneck it measures.
type sink struct {
	cfg      sinkConfig
	now      func() time.Time
	log      io.Writer
	ln       *countingListener
	srv      *smtp.Server
	serveErr chan error
	reached  chan struct{} // closed when Expect messages have arrived
	grace    time.Duration // how long stopGracefully waits for sessions to end
	dkim     *dkimChecker  // nil unless DKIM verification was asked for

	mu          sync.Mutex
	received    int
	recipients  int
	bytes       int64
	connections int
	first, last time.Time             // first connection, last message
	endToEnd    []time.Duration       // now - X-Bench-Sent, per message that has it
	dkimCounts  [dkimUnsigned + 1]int // messages by dkimOutcome
}

// startSink listens and starts serving in the background. now is the clock
// for end-to-end times; it must agree with the sender's wall clock. logw gets
// progress lines and server errors.
func startSink(cfg sinkConfig, now func() time.Time, logw io.Writer) (*sink, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	addrs, err := cfg.listenAddrs()
	if err != nil {
		return nil, err
	}
	checker, err := newDKIMChecker(cfg.DKIMRecords, cfg.DNS)
	if err != nil {
		return nil, err
	}
	s := &sink{
		cfg:      cfg,
		now:      now,
		log:      logw,
		serveErr: make(chan error, 1),
		reached:  make(chan struct{}),
		grace:    2 * time.Second,
		dkim:     checker,
	}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &sinkSession{s: s, br: bufio.NewReaderSize(nil, 4096)}, nil
	}))
	srv.Domain = "sesame-bench-sink"
	// Never refuse for size or line length: the sink measures the relay, it
	// does not police it.
	srv.MaxLineLength = 0
	srv.MaxMessageBytes = 0
	srv.ReadTimeout = 5 * time.Minute
	srv.WriteTimeout = 5 * time.Minute
	srv.ErrorLog = logAdapter(logw)
	switch {
	case cfg.CertFile != "":
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("loading TLS key pair: %w", err)
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	case cfg.SelfSigned:
		cert, err := selfSignedCert()
		if err != nil {
			return nil, err
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	ln, err := listenAll(addrs)
	if err != nil {
		return nil, fmt.Errorf("sink: %w", err)
	}
	s.ln = &countingListener{Listener: ln, onAccept: s.connected, latency: cfg.Latency,
		open: map[*trackedConn]struct{}{}, byAddr: map[string]int{}}
	s.srv = srv
	go func() { s.serveErr <- srv.Serve(s.ln) }()
	return s, nil
}

// Addr is where the sink listens.
func (s *sink) Addr() net.Addr { return s.ln.Addr() }

// run waits until Expect messages have arrived, the timeout passes or ctx is
// cancelled, printing progress lines meanwhile, then stops the server and
// returns the final report. The error is non-nil when Expect was set and not
// reached.
func (s *sink) run(ctx context.Context) (sinkReport, error) {
	defer s.srv.Close()
	var timeout <-chan time.Time
	if s.cfg.Timeout > 0 {
		t := time.NewTimer(s.cfg.Timeout)
		defer t.Stop()
		timeout = t.C
	}
	var tick <-chan time.Time
	if s.cfg.ReportEvery > 0 {
		t := time.NewTicker(s.cfg.ReportEvery)
		defer t.Stop()
		tick = t.C
	}
	lastCount, lastTime := 0, s.now()
	for {
		select {
		case <-tick:
			lastCount, lastTime = s.progress(lastCount, lastTime)
		case <-s.reached:
			rep := s.report()
			s.stopGracefully()
			return rep, nil
		case <-timeout:
			s.srv.Close()
			rep := s.report()
			return rep, fmt.Errorf("timed out after %s with %d of %d messages", s.cfg.Timeout, rep.Received, s.cfg.Expect)
		case <-ctx.Done():
			s.srv.Close()
			rep := s.report()
			if s.cfg.Expect > 0 {
				return rep, fmt.Errorf("stopped with %d of %d messages: %w", rep.Received, s.cfg.Expect, ctx.Err())
			}
			return rep, nil
		case err := <-s.serveErr:
			return s.report(), fmt.Errorf("sink server: %w", err)
		}
	}
}

// stopGracefully stops accepting and gives open sessions a moment to send
// the reply to the last message and QUIT; a relay that pools its connections
// would otherwise see the final 250 lost. Sessions still open after that are
// cut.
func (s *sink) stopGracefully() {
	ctx, cancel := context.WithTimeout(context.Background(), s.grace)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		// Shutdown leaves the server closed but its connections open.
		s.ln.closeAll()
	}
}

// progress prints one line with the rate since the previous line.
func (s *sink) progress(lastCount int, lastTime time.Time) (int, time.Time) {
	now := s.now()
	s.mu.Lock()
	count, conns := s.received, s.connections
	checked := sinkReport{DKIMVerified: s.dkimCounts[dkimVerified], DKIMFailed: s.dkimCounts[dkimFailed],
		DKIMUnsigned: s.dkimCounts[dkimUnsigned]}
	s.mu.Unlock()
	perConn := 0.0
	if conns > 0 {
		perConn = float64(count) / float64(conns)
	}
	line := fmt.Sprintf("sink: received=%d rate=%.1f/s connections=%d msgs/conn=%.1f",
		count, perSecond(count-lastCount, now.Sub(lastTime)), conns, perConn)
	if s.dkim != nil {
		line += " " + checked.dkimSummary()
	}
	fmt.Fprintln(s.log, line)
	return count, now
}

func (s *sink) report() sinkReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	rep := sinkReport{
		Received:    s.received,
		Recipients:  s.recipients,
		Bytes:       s.bytes,
		Connections: s.connections,
	}
	if s.connections > 0 {
		rep.MsgsPerConn = float64(s.received) / float64(s.connections)
	}
	if s.received > 0 {
		span := s.last.Sub(s.first)
		rep.Seconds = math.Round(span.Seconds()*1000) / 1000
		rep.MsgsPerSec = perSecond(s.received, span)
	}
	e := summarize(s.endToEnd)
	rep.EndToEndSamples = e.Count
	rep.EndToEndP50ms, rep.EndToEndP99ms, rep.EndToEndMaxms = ms(e.P50), ms(e.P99), ms(e.Max)
	rep.DKIMChecked = s.dkim != nil
	rep.DKIMVerified = s.dkimCounts[dkimVerified]
	rep.DKIMFailed = s.dkimCounts[dkimFailed]
	rep.DKIMUnsigned = s.dkimCounts[dkimUnsigned]
	rep.Addrs = max(s.cfg.Addrs, 1)
	rep.LatencyMs = ms(s.cfg.Latency)
	rep.PeakSessions, rep.PeakSessionsPerAddr = s.ln.peaks()
	if !s.first.IsZero() {
		rep.FirstUnix = unixSeconds(s.first)
	}
	if !s.last.IsZero() {
		rep.LastUnix = unixSeconds(s.last)
	}
	return rep
}

func unixSeconds(t time.Time) float64 { return math.Round(float64(t.UnixMicro())/1000) / 1000 }

func (s *sink) connected() {
	now := s.now()
	s.mu.Lock()
	if s.connections == 0 {
		s.first = now
	}
	s.connections++
	s.mu.Unlock()
}

// delivered records one message. sent is zero when the message had no
// X-Bench-Sent header; dkimErr says why a failed message failed.
func (s *sink) delivered(rcpts int, size int64, sent time.Time, outcome dkimOutcome, dkimErr error) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dkimCounts[outcome]++
	if outcome == dkimFailed && s.dkimCounts[dkimFailed] <= maxDKIMFailuresLogged {
		fmt.Fprintf(s.log, "sink: DKIM failed: %v\n", dkimErr)
	}
	s.received++
	s.recipients += rcpts
	s.bytes += size
	s.last = now
	if !sent.IsZero() {
		// Clocks are shared on one host; a negative gap can only be a clock
		// step, counted as zero rather than dropped.
		s.endToEnd = append(s.endToEnd, max(now.Sub(sent), 0))
	}
	if s.received == s.cfg.Expect {
		close(s.reached)
	}
}

// maxDKIMFailuresLogged bounds the log lines for failed signatures: the
// first few say why, the count says how many.
const maxDKIMFailuresLogged = 5

// sinkSession is one SMTP session on the sink: it accepts every sender and
// recipient.
type sinkSession struct {
	s     *sink
	br    *bufio.Reader
	rcpts int
	msg   bytes.Buffer // the whole message, kept only to verify DKIM
	rd    bytes.Reader
}

var _ smtp.Session = (*sinkSession)(nil)

func (ss *sinkSession) Mail(string, *smtp.MailOptions) error { ss.rcpts = 0; return nil }
func (ss *sinkSession) Rcpt(string, *smtp.RcptOptions) error { ss.rcpts++; return nil }
func (ss *sinkSession) Reset()                               { ss.rcpts = 0 }
func (ss *sinkSession) Logout() error                        { return nil }

// Data reads the headers for X-Bench-Sent, then counts and discards the body.
// When the sink verifies DKIM, it reads the whole message into the
// session's buffer and checks it here, in the session's goroutine, so the
// sessions verify in parallel.
func (ss *sinkSession) Data(r io.Reader) error {
	if ss.s.dkim != nil {
		return ss.dataVerified(r)
	}
	cr := &countingReader{r: r}
	ss.br.Reset(cr)
	sent, _, err := readSentHeader(ss.br)
	if err == nil {
		_, err = io.Copy(io.Discard, ss.br)
	}
	if err != nil {
		return fmt.Errorf("reading message: %w", err)
	}
	ss.s.delivered(ss.rcpts, cr.n, sent, dkimNotChecked, nil)
	ss.rcpts = 0
	return nil
}

func (ss *sinkSession) dataVerified(r io.Reader) error {
	ss.msg.Reset()
	if _, err := ss.msg.ReadFrom(r); err != nil {
		return fmt.Errorf("reading message: %w", err)
	}
	ss.rd.Reset(ss.msg.Bytes())
	ss.br.Reset(&ss.rd)
	sent, _, _ := readSentHeader(ss.br) // reading memory cannot fail
	outcome, err := ss.s.dkim.check(ss.msg.Bytes())
	ss.s.delivered(ss.rcpts, int64(ss.msg.Len()), sent, outcome, err)
	ss.rcpts = 0
	return nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// countingListener counts accepted connections and the sessions open at
// once (in all and per address), puts each connection behind the delay line
// when there is a latency, and keeps the open ones so they can be cut after
// a graceful shutdown runs out of time. Counting in the Backend would count
// a STARTTLS connection twice, as go-smtp makes a new session after the TLS
// upgrade.
type countingListener struct {
	net.Listener
	onAccept func()
	latency  time.Duration

	mu         sync.Mutex
	open       map[*trackedConn]struct{}
	byAddr     map[string]int // sessions open now, by the sink's address
	peak       int            // the most sessions open at once
	peakByAddr int            // the most open at once at one address
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.onAccept()
	local := c.LocalAddr().String()
	tc := &trackedConn{Conn: delayline.Wrap(c, l.latency), l: l, local: local}
	l.mu.Lock()
	l.open[tc] = struct{}{}
	l.byAddr[local]++
	l.peak = max(l.peak, len(l.open))
	l.peakByAddr = max(l.peakByAddr, l.byAddr[local])
	l.mu.Unlock()
	return tc, nil
}

func (l *countingListener) peaks() (total, perAddr int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.peak, l.peakByAddr
}

func (l *countingListener) closeAll() {
	l.mu.Lock()
	open := l.open
	l.open = map[*trackedConn]struct{}{}
	l.mu.Unlock()
	for c := range open {
		c.Conn.Close()
	}
}

// trackedConn leaves its listener's open set when closed.
type trackedConn struct {
	net.Conn
	l     *countingListener
	local string
}

func (c *trackedConn) Close() error {
	c.l.mu.Lock()
	if _, ok := c.l.open[c]; ok {
		delete(c.l.open, c)
		if c.l.byAddr[c.local]--; c.l.byAddr[c.local] <= 0 {
			delete(c.l.byAddr, c.local)
		}
	}
	c.l.mu.Unlock()
	return c.Conn.Close()
}

// multiListener accepts on several listeners as one, so one go-smtp server
// serves every address.
type multiListener struct {
	lns      []net.Listener
	accepted chan acceptResult
	done     chan struct{}
	once     sync.Once
}

type acceptResult struct {
	c   net.Conn
	err error
}

// listenAll listens on every one of addrs, the first of which may have port
// 0: the others then take the port it got.
func listenAll(addrs []string) (net.Listener, error) {
	first, err := net.Listen("tcp", addrs[0])
	if err != nil {
		return nil, err
	}
	if len(addrs) == 1 {
		return first, nil
	}
	port := strconv.Itoa(first.Addr().(*net.TCPAddr).Port)
	m := &multiListener{lns: []net.Listener{first}, accepted: make(chan acceptResult), done: make(chan struct{})}
	for _, a := range addrs[1:] {
		host, _, _ := net.SplitHostPort(a)
		ln, err := net.Listen("tcp", net.JoinHostPort(host, port))
		if err != nil {
			m.Close()
			return nil, err
		}
		m.lns = append(m.lns, ln)
	}
	for _, ln := range m.lns {
		go func() {
			for {
				c, err := ln.Accept()
				select {
				case m.accepted <- acceptResult{c, err}:
				case <-m.done:
					if c != nil {
						c.Close()
					}
					return
				}
				if err != nil {
					return
				}
			}
		}()
	}
	return m, nil
}

func (m *multiListener) Accept() (net.Conn, error) {
	select {
	case r := <-m.accepted:
		return r.c, r.err
	case <-m.done:
		return nil, net.ErrClosed
	}
}

func (m *multiListener) Close() error {
	m.once.Do(func() {
		close(m.done)
		for _, ln := range m.lns {
			ln.Close()
		}
	})
	return nil
}

// Addr is the first address listened on.
func (m *multiListener) Addr() net.Addr { return m.lns[0].Addr() }

// selfSignedCert makes a throwaway ECDSA certificate for loopback names; the
// relay under test is expected not to verify it.
func selfSignedCert() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generating key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generating serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "sesame-bench"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv4(127, 0, 0, 2), net.IPv6loopback},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("creating certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// logAdapter routes go-smtp's error log to w.
func logAdapter(w io.Writer) *log.Logger {
	return log.New(w, "sink: smtp: ", log.LstdFlags)
}

// newSinkFlags binds the sink flags to cfg, with their defaults.
func newSinkFlags(cfg *sinkConfig) *flag.FlagSet {
	fs := flag.NewFlagSet("sink", flag.ContinueOnError)
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.2:2525", "host:port to listen on (loopback only unless --allow-remote)")
	fs.StringVar(&cfg.CertFile, "tls-cert", "", "PEM certificate; STARTTLS is offered when given (with --tls-key)")
	fs.StringVar(&cfg.KeyFile, "tls-key", "", "PEM private key for --tls-cert")
	fs.BoolVar(&cfg.SelfSigned, "self-signed", false, "offer STARTTLS with a certificate generated in memory")
	fs.DurationVar(&cfg.ReportEvery, "report-every", 5*time.Second, "progress line interval on stderr (0 for none)")
	fs.IntVar(&cfg.Expect, "expect", 0, "exit 0 after this many messages (0: run until interrupted)")
	fs.DurationVar(&cfg.Timeout, "timeout", 0, "exit 1 if --expect is not reached within this time (0: no limit)")
	fs.BoolVar(&cfg.AllowRemote, "allow-remote", false, "allow --listen and --dns addresses outside loopback")
	fs.StringVar(&cfg.DKIMRecords, "dkim-records", "", "verify DKIM with the keys in this file, the output of \"sesame domain add --json\"")
	fs.StringVar(&cfg.DNS, "dns", "", "verify DKIM with keys looked up at this DNS server, host:port (after --dkim-records)")
	fs.DurationVar(&cfg.Latency, "latency", 0, "hold every reply this long, as a server across the internet (a delay line: pipelined replies overlap)")
	fs.IntVar(&cfg.Addrs, "addrs", 1, "listen on this many consecutive addresses from --listen's, all on its port (the MX hosts of many domains)")
	setUsage(fs, `Usage: sesame-bench sink [flags]

A counting SMTP server for the relay to deliver to. It accepts every message,
reads and discards it, and measures end-to-end latency from the X-Bench-Sent
header that "sesame-bench send" puts in each message. Progress goes to stderr;
the final JSON line goes to stdout when --expect is reached, on --timeout
(exit 1), or on interrupt.

With --dkim-records or --dns it also verifies every message's DKIM
signatures and counts messages verified, failed and unsigned; it exits 1 if
any failed.

With --latency every reply reaches the client that much later, as from a
server across the internet: a delay line on the connection's writes, so the
replies to pipelined commands overlap in flight as on a real link. With
--addrs N it listens on N consecutive addresses (127.0.0.101 to
127.0.0.200 with --listen 127.0.0.101:25525 --addrs 100), and reports the
most sessions open at once, in all and at one address.
`)
	return fs
}

func sinkMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cfg sinkConfig
	fs := newSinkFlags(&cfg)
	if done, code := parseFlags(fs, args, stdout, stderr); done {
		return code
	}
	s, err := startSink(cfg, time.Now, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "sesame-bench sink: %v\n", err)
		return 2
	}
	fmt.Fprintf(stderr, "sink: listening on %s\n", s.Addr())
	rep, runErr := s.run(ctx)
	if rep.DKIMChecked {
		fmt.Fprintf(stderr, "sink: received=%d %s\n", rep.Received, rep.dkimSummary())
	}
	if err := writeJSON(stdout, rep); err != nil {
		fmt.Fprintf(stderr, "sesame-bench sink: %v\n", err)
		return 1
	}
	code := 0
	for _, err := range []error{runErr, rep.dkimError()} {
		if err != nil {
			fmt.Fprintf(stderr, "sesame-bench sink: %v\n", err)
			code = 1
		}
	}
	return code
}
