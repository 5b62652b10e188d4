package testkit

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log"
	"math/big"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// NextTimeout bounds Sink.Next's wait: generous, for a loaded machine.
const NextTimeout = 30 * time.Second

// Message is one message as a Sink received it.
type Message struct {
	From string           // the envelope sender; "" for the null sender
	Opts smtp.MailOptions // the MAIL FROM parameters
	To   []string         // the recipients the sink accepted, in order
	Data []byte           // the message as it arrived, dot-stuffing undone
	Peer string           // the client's address
	TLS  bool             // whether the session ran under TLS (STARTTLS)
	At   time.Time        // when the data arrived, by the wall clock
}

// SinkOptions configure a Sink; the zero value is a plain sink on
// 127.0.0.2 without STARTTLS.
type SinkOptions struct {
	// Addr is where to listen; default "127.0.0.2:0" (any port). All of
	// 127.0.0.0/8 is loopback on Linux; a second address keeps a sink
	// visibly apart from the listeners under test.
	Addr string
	// Listener, when set, is served instead of listening on Addr (one of
	// ReservePort's, for mail exchangers sharing a port).
	Listener net.Listener
	// Domain is the name in the greeting; default "sink.test".
	Domain string
	// TLS, when set, makes the sink offer STARTTLS with it (SelfSigned
	// makes one).
	TLS *tls.Config
	// Trace keeps the whole protocol exchange, both directions, for Trace
	// and TraceCount. Off by default: it holds every message's bytes too.
	Trace bool
	// Index, when set, indexes each message by the distinct matches of the
	// expression in its data (a test's tokens), for Keyed.
	Index *regexp.Regexp
	// Wrap, when set, wraps the sink's backend, to watch its sessions.
	Wrap func(smtp.Backend) smtp.Backend
}

// Sink is an SMTP server (go-smtp) on loopback standing in for a smarthost
// or a mail exchanger: it accepts every message without AUTH and records
// it. What it answers can be scripted while it runs, per recipient (ReplyTo,
// SetRcptPolicy) and at the end of the data (SetDataReply, HoldData); the
// changes apply to connections already open. It never blocks on a test that
// does not read what it received.
type Sink struct {
	Addr string // the address it listens on

	srv      *smtp.Server
	trace    *lockedBuffer // nil unless SinkOptions.Trace
	index    *regexp.Regexp
	accepted atomic.Int64
	open     atomic.Int64
	inData   chan struct{}
	done     chan struct{} // closed when the test ends

	mu        sync.Mutex
	msgs      []*Message
	byKey     map[string][]*Message
	taken     int           // messages Next has returned
	changed   chan struct{} // closed and replaced whenever a message arrives
	replies   map[string][]*smtp.SMTPError
	policy    func(rcpt string) error
	rcpts     map[string]int // RCPT commands seen, by lower-case address
	dataReply *smtp.SMTPError
	hold      chan struct{}
}

// StartSink starts a sink that serves until the test ends.
func StartSink(t testing.TB, o SinkOptions) *Sink {
	t.Helper()
	ln := o.Listener
	if ln == nil {
		addr := o.Addr
		if addr == "" {
			addr = "127.0.0.2:0"
		}
		var err error
		if ln, err = net.Listen("tcp", addr); err != nil {
			t.Fatalf("SMTP sink: %v", err)
		}
	}
	s := &Sink{
		Addr:    ln.Addr().String(),
		index:   o.Index,
		inData:  make(chan struct{}, 1000),
		done:    make(chan struct{}),
		byKey:   make(map[string][]*Message),
		changed: make(chan struct{}),
		replies: make(map[string][]*smtp.SMTPError),
		rcpts:   make(map[string]int),
	}
	var be smtp.Backend = s
	if o.Wrap != nil {
		be = o.Wrap(s)
	}
	s.srv = smtp.NewServer(be)
	s.srv.Domain = o.Domain
	if s.srv.Domain == "" {
		s.srv.Domain = "sink.test"
	}
	s.srv.TLSConfig = o.TLS
	s.srv.EnableSMTPUTF8 = true
	s.srv.ReadTimeout = time.Minute
	s.srv.WriteTimeout = time.Minute
	s.srv.MaxMessageBytes = 64 << 20
	// Resets from a client killed mid-transfer are expected in tests; the
	// trace has the exchange when one is wanted.
	s.srv.ErrorLog = log.New(io.Discard, "", 0)
	if o.Trace {
		s.trace = &lockedBuffer{}
		s.srv.Debug = s.trace
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		s.srv.Serve(&countingListener{Listener: ln, s: s})
	}()
	t.Cleanup(func() {
		close(s.done)
		s.srv.Close()
		<-served
	})
	return s
}

// ReplyTo makes the sink answer RCPT TO:<addr> (as written) with replies in
// turn, the last one for good; a nil reply accepts.
func (s *Sink) ReplyTo(addr string, replies ...*smtp.SMTPError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.replies[addr] = replies
}

// SetRcptPolicy has policy decide every RCPT that ReplyTo does not: a
// non-nil error refuses the recipient with it. nil accepts them all.
func (s *Sink) SetRcptPolicy(policy func(rcpt string) error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.policy = policy
}

// SetDataReply makes the sink answer the end of every message's data with
// reply and keep nothing; nil accepts again.
func (s *Sink) SetDataReply(reply *smtp.SMTPError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dataReply = reply
}

// HoldData holds the reply to the end of each message's data from now on:
// each held reply waits for a value on the returned channel, or for the
// channel to be closed (which releases them all). InData tells when a
// message is waiting.
func (s *Sink) HoldData() chan<- struct{} {
	hold := make(chan struct{})
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hold = hold
	return hold
}

// InData receives a value when a message's data has arrived, before its
// reply (and before HoldData holds it); values are dropped when 1000 are
// unread.
func (s *Sink) InData() <-chan struct{} { return s.inData }

// Next returns the oldest message that Next has not returned yet, waiting
// up to NextTimeout for one to arrive.
func (s *Sink) Next(t testing.TB) *Message {
	t.Helper()
	m, ok := s.NextWithin(NextTimeout)
	if !ok {
		t.Fatalf("SMTP sink %s: no message within %s", s.Addr, NextTimeout)
	}
	return m
}

// NextWithin is Next waiting up to d; false if no message came (0 does not
// wait).
func (s *Sink) NextWithin(d time.Duration) (*Message, bool) {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		changed := s.changed
		if s.taken < len(s.msgs) {
			m := s.msgs[s.taken]
			s.taken++
			s.mu.Unlock()
			return m, true
		}
		s.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			return nil, false
		}
	}
}

// Wait returns the first message match accepts, waiting up to timeout; match
// sees each message once.
func (s *Sink) Wait(match func(*Message) bool, timeout time.Duration) (*Message, bool) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	seen := 0
	for {
		s.mu.Lock()
		msgs, changed := s.msgs[seen:], s.changed
		s.mu.Unlock()
		for _, m := range msgs {
			if match(m) {
				return m, true
			}
		}
		seen += len(msgs)
		select {
		case <-changed:
		case <-deadline.C:
			return nil, false
		}
	}
}

// Messages returns every message received so far, in order.
func (s *Sink) Messages() []*Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.msgs)
}

// Count returns how many messages received so far match accepts.
func (s *Sink) Count(match func(*Message) bool) int {
	n := 0
	for _, m := range s.Messages() {
		if match(m) {
			n++
		}
	}
	return n
}

// Keyed returns the messages whose data holds key, a match of
// SinkOptions.Index, in order.
func (s *Sink) Keyed(key string) []*Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.byKey[key])
}

// Changed returns a channel closed at the next message's arrival.
func (s *Sink) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// RcptCount returns how many RCPT commands named addr (in any case),
// refused ones included.
func (s *Sink) RcptCount(addr string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rcpts[strings.ToLower(addr)]
}

// Accepted returns how many connections the sink accepted.
func (s *Sink) Accepted() int { return int(s.accepted.Load()) }

// Open returns how many of its connections are not closed yet.
func (s *Sink) Open() int { return int(s.open.Load()) }

// Trace returns the protocol exchange so far (SinkOptions.Trace).
func (s *Sink) Trace() string {
	if s.trace == nil {
		return ""
	}
	return s.trace.String()
}

// TraceCount returns how many lines of the trace start with prefix
// ("MAIL FROM", "RSET").
func (s *Sink) TraceCount(prefix string) int {
	n := 0
	for line := range strings.SplitSeq(s.Trace(), "\n") {
		if strings.HasPrefix(line, prefix) {
			n++
		}
	}
	return n
}

func (s *Sink) add(m *Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs = append(s.msgs, m)
	if s.index != nil {
		seen := map[string]bool{}
		for _, k := range s.index.FindAll(m.Data, -1) {
			if !seen[string(k)] {
				seen[string(k)] = true
				s.byKey[string(k)] = append(s.byKey[string(k)], m)
			}
		}
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

// NewSession implements smtp.Backend.
func (s *Sink) NewSession(c *smtp.Conn) (smtp.Session, error) {
	_, isTLS := c.TLSConnectionState()
	return &sinkSession{s: s, peer: c.Conn().RemoteAddr().String(), tls: isTLS}, nil
}

type sinkSession struct {
	s    *Sink
	peer string
	tls  bool
	from string
	opts smtp.MailOptions
	to   []string
}

var _ smtp.Session = (*sinkSession)(nil)

func (ss *sinkSession) Mail(from string, opts *smtp.MailOptions) error {
	ss.from, ss.opts, ss.to = from, smtp.MailOptions{}, nil
	if opts != nil {
		ss.opts = *opts
	}
	return nil
}

func (ss *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s := ss.s
	s.mu.Lock()
	s.rcpts[strings.ToLower(to)]++
	var reply *smtp.SMTPError
	scripted := false
	if q := s.replies[to]; len(q) > 0 {
		reply, scripted = q[0], true
		if len(q) > 1 {
			s.replies[to] = q[1:]
		}
	}
	policy := s.policy
	s.mu.Unlock()
	if reply != nil {
		return reply
	}
	if !scripted && policy != nil {
		if err := policy(to); err != nil {
			return err
		}
	}
	ss.to = append(ss.to, to)
	return nil
}

func (ss *sinkSession) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s := ss.s
	select {
	case s.inData <- struct{}{}:
	default:
	}
	s.mu.Lock()
	hold := s.hold
	s.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-s.done:
			return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "Sink shutting down"}
		}
	}
	s.mu.Lock()
	reply := s.dataReply // as it is once the hold is over
	s.mu.Unlock()
	if reply != nil {
		return reply
	}
	s.add(&Message{From: ss.from, Opts: ss.opts, To: slices.Clone(ss.to), Data: data, Peer: ss.peer, TLS: ss.tls, At: time.Now()})
	return nil
}

func (ss *sinkSession) Reset()        { ss.from, ss.opts, ss.to = "", smtp.MailOptions{}, nil }
func (ss *sinkSession) Logout() error { return nil }

// countingListener counts the sink's connections.
type countingListener struct {
	net.Listener
	s *Sink
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.s.accepted.Add(1)
	l.s.open.Add(1)
	return &countedConn{Conn: c, open: &l.s.open}, nil
}

type countedConn struct {
	net.Conn
	open *atomic.Int64
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.open.Add(-1) })
	return c.Conn.Close()
}

// lockedBuffer is a bytes.Buffer safe for concurrent writers and readers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// ReservePort listens on one TCP port on every one of ips and returns the
// port and the listeners by IP, for sinks standing in for mail exchangers
// (all on the port a relay uses) or for the test to close (to leave nothing
// listening there). A port taken on one of the IPs makes it try another.
// Listeners left unused are closed when the test ends.
func ReservePort(t testing.TB, ips ...string) (int, map[string]net.Listener) {
	t.Helper()
	for attempt := 0; ; attempt++ {
		first, err := net.Listen("tcp", net.JoinHostPort(ips[0], "0"))
		if err != nil {
			t.Fatalf("reserving a port: %v", err)
		}
		port := first.Addr().(*net.TCPAddr).Port
		lns := map[string]net.Listener{ips[0]: first}
		for _, ip := range ips[1:] {
			ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				break
			}
			lns[ip] = ln
		}
		if len(lns) == len(ips) {
			t.Cleanup(func() {
				for _, ln := range lns {
					ln.Close()
				}
			})
			return port, lns
		}
		for _, ln := range lns {
			ln.Close()
		}
		if attempt == 50 {
			t.Fatalf("no port free on all of %v", ips)
		}
	}
}

// SelfSigned returns a TLS server configuration with a fresh self-signed
// certificate for names (host names or IP addresses), valid from an hour
// ago for a day.
func SelfSigned(t testing.TB, names ...string) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if len(names) > 0 {
		tmpl.Subject = pkix.Name{CommonName: names[0]}
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}
