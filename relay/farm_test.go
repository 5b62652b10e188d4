package relay

// A farm of receiving servers for the tests of delivery at scale
// (fairness_test.go, latency_test.go): many mail exchangers on many
// loopback addresses, a DNS server that answers for generated domains, and
// the sessions each server sees at once.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"

	"github.com/sesame-mail/sesame/delayline"
)

// farm is a real go-smtp server on each of several loopback addresses, all
// on one port (the relay's MXPort), accepting every message. With a latency
// every reply of every server is held that long on a delay line, as on a
// link across the internet. It counts, per server address, the sessions
// open at once, as the receiving servers see them.
type farm struct {
	port    int
	latency time.Duration

	delivered atomic.Int64 // recipients accepted with their message
	refused   atomic.Int64 // connections answered with a refusal
	holding   atomic.Int64 // messages whose reply waits for hold

	mu        sync.Mutex
	open      map[string]int    // sessions open now, by server IP
	peak      map[string]int    // the most ever open at once, by server IP
	total     int               // sessions open now, on all servers
	peakTotal int               // the most ever open at once, on all servers
	refuse    map[string]string // server IP → the reply to every new connection, which is then closed
	hold      chan struct{}     // when set, the reply to each message's data waits until it is closed
}

// startFarm serves on one free port of every one of ips until the test
// ends.
func startFarm(t *testing.T, ips []string, latency time.Duration) *farm {
	t.Helper()
	return startFarmTLS(t, ips, latency, nil)
}

// startFarmTLS is startFarm with servers that offer STARTTLS with
// tlsConfig.
func startFarmTLS(t *testing.T, ips []string, latency time.Duration, tlsConfig *tls.Config) *farm {
	t.Helper()
	port, lns := listenSamePort(t, ips)
	f := &farm{port: port, latency: latency, open: map[string]int{}, peak: map[string]int{}, refuse: map[string]string{}}
	for ip, ln := range lns {
		srv := smtp.NewServer(farmBackend{f})
		srv.Domain = "farm.test"
		srv.TLSConfig = tlsConfig
		srv.ReadTimeout = time.Minute
		srv.WriteTimeout = time.Minute
		served := make(chan struct{})
		go func() {
			defer close(served)
			srv.Serve(&farmListener{Listener: ln, f: f, ip: ip})
		}()
		t.Cleanup(func() {
			srv.Close()
			<-served
		})
	}
	return f
}

// listenSamePort listens on one TCP port on every one of ips.
func listenSamePort(t *testing.T, ips []string) (int, map[string]net.Listener) {
	t.Helper()
	for attempt := 0; attempt < 50; attempt++ {
		first, err := net.Listen("tcp", net.JoinHostPort(ips[0], "0"))
		if err != nil {
			t.Fatal(err)
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
			return port, lns
		}
		for _, ln := range lns {
			ln.Close()
		}
	}
	t.Fatalf("no port free on all of %d addresses", len(ips))
	return 0, nil
}

// loopbackIPs returns n addresses from 127.0.<third>.1 on.
func loopbackIPs(third, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "127.0." + strconv.Itoa(third+i/250) + "." + strconv.Itoa(1+i%250)
	}
	return out
}

// peaks returns the most sessions ever open at once, by server IP.
func (f *farm) peaks() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]int, len(f.peak))
	for ip, n := range f.peak {
		out[ip] = n
	}
	return out
}

func (f *farm) sessions() (now, peak int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.total, f.peakTotal
}

// farmListener counts the sessions of one server and puts its connections
// behind the farm's delay line.
type farmListener struct {
	net.Listener
	f  *farm
	ip string
}

func (l *farmListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		c = delayline.Wrap(c, l.f.latency)
		f := l.f
		f.mu.Lock()
		reply := f.refuse[l.ip]
		if reply == "" {
			f.open[l.ip]++
			f.total++
			f.peak[l.ip] = max(f.peak[l.ip], f.open[l.ip])
			f.peakTotal = max(f.peakTotal, f.total)
		}
		f.mu.Unlock()
		if reply != "" {
			f.refused.Add(1)
			io.WriteString(c, reply+"\r\n")
			c.Close()
			continue
		}
		return &farmConn{Conn: c, f: f, ip: l.ip}, nil
	}
}

// farmConn leaves the count of open sessions when the server closes it
// (after QUIT, or when the client went away).
type farmConn struct {
	net.Conn
	f    *farm
	ip   string
	once sync.Once
}

func (c *farmConn) Close() error {
	c.once.Do(func() {
		c.f.mu.Lock()
		c.f.open[c.ip]--
		c.f.total--
		c.f.mu.Unlock()
	})
	return c.Conn.Close()
}

type farmBackend struct{ f *farm }

func (b farmBackend) NewSession(*smtp.Conn) (smtp.Session, error) { return &farmSession{f: b.f}, nil }

type farmSession struct {
	f     *farm
	rcpts int
}

func (s *farmSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *farmSession) Rcpt(string, *smtp.RcptOptions) error { s.rcpts++; return nil }
func (s *farmSession) Reset()                               { s.rcpts = 0 }
func (s *farmSession) Logout() error                        { return nil }

func (s *farmSession) Data(r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	s.f.mu.Lock()
	hold := s.f.hold
	s.f.mu.Unlock()
	if hold != nil {
		s.f.holding.Add(1)
		<-hold
		s.f.holding.Add(-1)
	}
	s.f.delivered.Add(int64(s.rcpts))
	s.rcpts = 0
	return nil
}

// zoneFunc answers a DNS question with records (zone file syntax), or
// drops it unanswered when drop is set, as a dead name server does.
type zoneFunc func(name string, qtype uint16) (records []string, drop bool)

// startZoneFunc serves zone on a loopback UDP port until the test ends, and
// returns its address and a count of the questions it dropped.
func startZoneFunc(t *testing.T, zone zoneFunc) (addr string, dropped *atomic.Int64) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dropped = new(atomic.Int64)
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		m.RecursionAvailable = true
		if len(req.Question) != 1 {
			m.Rcode = dns.RcodeFormatError
			w.WriteMsg(m)
			return
		}
		q := req.Question[0]
		records, drop := zone(dns.CanonicalName(q.Name), q.Qtype)
		if drop {
			dropped.Add(1)
			return
		}
		for _, s := range records {
			rr, err := dns.NewRR(s)
			if err != nil {
				t.Errorf("record %q: %v", s, err)
				continue
			}
			m.Answer = append(m.Answer, rr)
		}
		if len(m.Answer) == 0 {
			soa, _ := dns.NewRR("test. 3600 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 30")
			m.Ns = append(m.Ns, soa)
		}
		w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String(), dropped
}

// farmTLS is a TLS configuration with a fresh self-signed certificate for
// the farm's servers (the relay does not require a valid one).
func farmTLS(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "farm.test"},
		DNSNames:     []string{"farm.test"},
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
