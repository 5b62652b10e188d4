package test

import (
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
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// tokenRE matches what newToken makes; the sink indexes messages by it.
var tokenRE = regexp.MustCompile(`e2e-[0-9a-f]{16}`)

// sinkMessage is one message as the smarthost received it.
type sinkMessage struct {
	From string
	To   []string
	Data []byte
	Peer string // Sesame's address as the sink saw it
	TLS  bool   // whether the relay used STARTTLS
	At   time.Time
}

// sink is the smarthost Sesame relays to: an SMTP server on 127.0.0.2 that
// accepts everything without AUTH and records it. Like a real smarthost it
// offers STARTTLS, with a self-signed certificate, so a relay that insists on
// TLS works and one that only uses it when offered is exercised too. It lives
// as long as the test, so it keeps receiving while serve is killed and
// restarted.
type sink struct {
	addr string

	mu      sync.Mutex
	msgs    []*sinkMessage
	byToken map[string][]*sinkMessage
	changed chan struct{} // closed and replaced whenever a message arrives
}

func startSink(t *testing.T) *sink {
	t.Helper()
	// All of 127.0.0.0/8 is loopback on Linux; a second address keeps the
	// smarthost visibly apart from the submission listeners.
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatalf("sink: %v", err)
	}
	s := &sink{
		addr:    ln.Addr().String(),
		byToken: make(map[string][]*sinkMessage),
		changed: make(chan struct{}),
	}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		_, isTLS := c.TLSConnectionState()
		return &sinkSession{sink: s, peer: c.Conn().RemoteAddr().String(), tls: isTLS}, nil
	}))
	srv.Domain = "sink.test"
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{selfSignedCert(t, "sink.test")}}
	srv.ReadTimeout = time.Minute
	srv.WriteTimeout = time.Minute
	srv.MaxMessageBytes = 64 << 20
	// Resets from a relay killed mid-transfer are expected here.
	srv.ErrorLog = log.New(io.Discard, "", 0)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return s
}

func (s *sink) add(m *sinkMessage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs = append(s.msgs, m)
	seen := map[string]bool{}
	for _, tok := range tokenRE.FindAll(m.Data, -1) {
		if !seen[string(tok)] {
			seen[string(tok)] = true
			s.byToken[string(tok)] = append(s.byToken[string(tok)], m)
		}
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

// wait returns the first message carrying token, waiting up to timeout.
func (s *sink) wait(token string, timeout time.Duration) (*sinkMessage, bool) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		ms, changed := s.byToken[token], s.changed
		s.mu.Unlock()
		if len(ms) > 0 {
			return ms[0], true
		}
		select {
		case <-changed:
		case <-deadline.C:
			return nil, false
		}
	}
}

// copies returns how many messages carrying token have arrived so far.
func (s *sink) copies(token string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.byToken[token])
}

// all returns every message carrying token that has arrived so far.
func (s *sink) all(token string) []*sinkMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*sinkMessage(nil), s.byToken[token]...)
}

func (s *sink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.msgs)
}

// changes returns a channel closed on the next arrival.
func (s *sink) changes() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

type sinkSession struct {
	sink *sink
	peer string
	tls  bool
	from string
	to   []string
}

var _ smtp.Session = (*sinkSession)(nil)

func (ss *sinkSession) Mail(from string, _ *smtp.MailOptions) error {
	ss.from, ss.to = from, nil
	return nil
}

func (ss *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.to = append(ss.to, to)
	return nil
}

func (ss *sinkSession) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	ss.sink.add(&sinkMessage{From: ss.from, To: ss.to, Data: data, Peer: ss.peer, TLS: ss.tls, At: time.Now()})
	return nil
}

func (ss *sinkSession) Reset()        { ss.from, ss.to = "", nil }
func (ss *sinkSession) Logout() error { return nil }

func selfSignedCert(t *testing.T, host string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: host},
		DNSNames:     []string{host},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
