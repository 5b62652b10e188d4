package relay

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// sink is a real SMTP server on loopback that keeps what it receives.
type sink struct {
	addr  string
	srv   *smtp.Server
	trace lockedBuffer // the whole protocol exchange, both directions

	accepted atomic.Int32 // connections accepted
	open     atomic.Int32 // connections not yet closed

	mu      sync.Mutex
	replies map[string][]*smtp.SMTPError // per RCPT address; the last entry repeats, nil accepts
	dataErr *smtp.SMTPError              // reply to the end of data, nil accepts
	hold    chan struct{}                // when set, the reply to the data waits until it is closed
	inData  chan struct{}                // receives a value when a message's data has arrived
	got     chan sunk
}

// sunk is one message as the sink received it.
type sunk struct {
	from  string
	opts  smtp.MailOptions
	rcpts []string
	data  []byte
	peer  string // remote address of the connection
	tls   bool
}

// newSink starts a sink listening on addr ("127.0.0.2:0" for any port). A
// non-nil tlsConfig makes it offer STARTTLS.
func newSink(t *testing.T, addr string, tlsConfig *tls.Config) *sink {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("sink: listen: %v", err)
	}
	s := &sink{addr: ln.Addr().String(), replies: map[string][]*smtp.SMTPError{},
		got: make(chan sunk, 100), inData: make(chan struct{}, 100)}
	s.srv = smtp.NewServer(s)
	s.srv.Domain = "sink.test"
	s.srv.TLSConfig = tlsConfig
	s.srv.EnableSMTPUTF8 = true
	s.srv.ReadTimeout = 10 * time.Second
	s.srv.WriteTimeout = 10 * time.Second
	s.srv.Debug = &s.trace
	served := make(chan struct{})
	go func() {
		defer close(served)
		s.srv.Serve(&countingListener{Listener: ln, s: s})
	}()
	t.Cleanup(func() {
		s.srv.Close()
		<-served
	})
	return s
}

// replyTo makes the sink answer RCPT for addr with replies in turn, the
// last one for good; a nil reply accepts.
func (s *sink) replyTo(addr string, replies ...*smtp.SMTPError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.replies[addr] = replies
}

// next waits for the next message the sink receives.
func (s *sink) next(t *testing.T) sunk {
	t.Helper()
	select {
	case m := <-s.got:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("sink: no message within 10s")
		return sunk{}
	}
}

func (s *sink) NewSession(c *smtp.Conn) (smtp.Session, error) {
	_, isTLS := c.TLSConnectionState()
	return &sinkSession{s: s, peer: c.Conn().RemoteAddr().String(), tls: isTLS}, nil
}

type sinkSession struct {
	s     *sink
	peer  string
	tls   bool
	from  string
	opts  smtp.MailOptions
	rcpts []string
}

func (ss *sinkSession) Reset() { ss.from, ss.opts, ss.rcpts = "", smtp.MailOptions{}, nil }

func (ss *sinkSession) Logout() error { return nil }

func (ss *sinkSession) Mail(from string, opts *smtp.MailOptions) error {
	ss.from = from
	if opts != nil {
		ss.opts = *opts
	}
	return nil
}

func (ss *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.s.mu.Lock()
	defer ss.s.mu.Unlock()
	if q := ss.s.replies[to]; len(q) > 0 {
		reply := q[0]
		if len(q) > 1 {
			ss.s.replies[to] = q[1:]
		}
		if reply != nil {
			return reply
		}
	}
	ss.rcpts = append(ss.rcpts, to)
	return nil
}

func (ss *sinkSession) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	ss.s.inData <- struct{}{}
	ss.s.mu.Lock()
	dataErr, hold := ss.s.dataErr, ss.s.hold
	ss.s.mu.Unlock()
	if hold != nil {
		<-hold
	}
	if dataErr != nil {
		return dataErr
	}
	ss.s.got <- sunk{from: ss.from, opts: ss.opts, rcpts: ss.rcpts, data: data, peer: ss.peer, tls: ss.tls}
	return nil
}

// countingListener counts the sink's connections.
type countingListener struct {
	net.Listener
	s *sink
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
	open *atomic.Int32
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

// count is how many lines of b start with prefix.
func (b *lockedBuffer) count(prefix string) int {
	n := 0
	for _, line := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(line, prefix) {
			n++
		}
	}
	return n
}

// selfSigned returns a TLS config with a fresh self-signed certificate for
// 127.0.0.2 and sink.test.
func selfSigned(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "sink.test"},
		DNSNames:     []string{"sink.test"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 2)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}
