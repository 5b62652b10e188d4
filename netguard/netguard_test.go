package netguard

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sesame-mail/sesame/testkit"
)

// counter records what a guard reports to its metrics.
type counter struct {
	mu                 sync.Mutex
	refused            map[string]int
	shed, acceptErrors int
}

func (m *counter) ConnRefused(listener, reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.refused == nil {
		m.refused = map[string]int{}
	}
	m.refused[reason]++
}
func (m *counter) ConnShed(string) { m.mu.Lock(); m.shed++; m.mu.Unlock() }
func (m *counter) AcceptError(string) {
	m.mu.Lock()
	m.acceptErrors++
	m.mu.Unlock()
}
func (m *counter) get() (refused map[string]int, shed, acceptErrors int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := map[string]int{}
	for k, v := range m.refused {
		r[k] = v
	}
	return r, m.shed, m.acceptErrors
}

// server is a guarded listener on 127.0.0.1 whose connections an accept
// loop hands to the test, in order.
type server struct {
	g        *Guard
	ln       net.Listener
	m        *counter
	log      *testkit.Buffer
	accepted chan *Conn
}

func newServer(t *testing.T, cfg Config) *server {
	t.Helper()
	s := &server{m: &counter{}, log: &testkit.Buffer{}, accepted: make(chan *Conn, 100)}
	cfg.Name = "test"
	cfg.Metrics = s.m
	cfg.Logger = slog.New(slog.NewTextHandler(s.log, nil))
	s.g = New(cfg)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.ln = s.g.Wrap(l, func(c net.Conn, reason string) { io.WriteString(c, "refused "+reason+"\n") })
	t.Cleanup(func() { s.ln.Close() })
	return s
}

// serve runs the accept loop.
func (s *server) serve(t *testing.T) *server {
	go func() {
		defer close(s.accepted)
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			s.accepted <- c.(*Conn)
		}
	}()
	return s
}

// next returns the next connection the loop accepted.
func (s *server) next(t *testing.T) *Conn {
	t.Helper()
	select {
	case c, ok := <-s.accepted:
		if !ok {
			t.Fatal("Accept failed")
		}
		t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("Accept returned nothing within 10s")
	}
	return nil
}

// dial connects from source (an address of 127.0.0.0/8).
func dial(t *testing.T, addr net.Addr, source string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}}
	c, err := d.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// connect dials from source and returns both sides.
func (s *server) connect(t *testing.T, source string) (client net.Conn, srv *Conn) {
	t.Helper()
	client = dial(t, s.ln.Addr(), source)
	return client, s.next(t)
}

// refusedWith dials from source: the guard must refuse it with reason.
func (s *server) refusedWith(t *testing.T, source, reason string) {
	t.Helper()
	c := dial(t, s.ln.Addr(), source)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, _ := bufio.NewReader(c).ReadString('\n')
	if want := "refused " + reason + "\n"; line != want {
		t.Fatalf("connection from %s got %q, want %q", source, line, want)
	}
}

// closedByServer reports whether the server closed c: reading what it
// sent ends with the end of the stream rather than a wait.
func closedByServer(t *testing.T, c net.Conn) bool {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, c)
	return !errors.Is(err, os.ErrDeadlineExceeded)
}

func stillOpen(t *testing.T, c net.Conn) bool {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err := c.Read(make([]byte, 1))
	return errors.Is(err, os.ErrDeadlineExceeded)
}

func TestNetwork(t *testing.T) {
	for _, tc := range []struct{ ip, want string }{
		{"192.0.2.1", "192.0.2.1"},
		{"::ffff:192.0.2.1", "192.0.2.1"},
		{"2001:db8:1:2::a", "2001:db8:1:2::/64"},
		{"2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"},
		{"::1", "::/64"},
		{"not an address", "not an address"},
	} {
		if got := NetworkOf(tc.ip); got != tc.want {
			t.Errorf("NetworkOf(%q) = %q, want %q", tc.ip, got, tc.want)
		}
	}
}

// The per-IP caps count IPv6 clients by /64: a host with a /64 cannot open
// a slot per address. (Loopback has one IPv6 address, so the connections
// here are made up; the sockets tests below use 127.0.0.x.)
func TestPerNetworkCapIPv6(t *testing.T) {
	g := New(Config{Name: "test", MaxPerIP: 3, MaxUnauthenticatedPerIP: 2})
	conn := func(ip string) *Conn {
		a := netip.MustParseAddr(ip)
		return &Conn{g: g, addr: a, network: Network(a)}
	}
	for _, ip := range []string{"2001:db8:1:2::a", "2001:db8:1:2::b"} {
		if _, refused := g.admit(conn(ip)); refused != "" {
			t.Fatalf("%s refused (%s) under the cap", ip, refused)
		}
	}
	if _, refused := g.admit(conn("2001:db8:1:2:ffff::1")); refused != RefusedUnauthenticatedPerIP {
		t.Errorf("a third connection from the same /64: %q, want %q", refused, RefusedUnauthenticatedPerIP)
	}
	if _, refused := g.admit(conn("2001:db8:1:3::a")); refused != "" {
		t.Errorf("the next /64 was refused (%s)", refused)
	}
	if _, refused := g.admit(conn("::ffff:192.0.2.1")); refused != "" {
		t.Errorf("IPv4 was refused (%s)", refused)
	}
}

// Per-IP caps on real connections: over the cap a network is refused with
// the reason; others still connect; a closed connection frees its slot.
func TestPerIPCaps(t *testing.T) {
	s := newServer(t, Config{MaxPerIP: 3, MaxUnauthenticatedPerIP: 2}).serve(t)
	_, a := s.connect(t, "127.0.0.2")
	s.connect(t, "127.0.0.2")
	s.refusedWith(t, "127.0.0.2", RefusedUnauthenticatedPerIP)
	// A client that logged in leaves its unauthenticated slot.
	a.Authenticated()
	_, third := s.connect(t, "127.0.0.2")
	s.refusedWith(t, "127.0.0.2", RefusedPerIP)
	s.connect(t, "127.0.0.3") // another address is not concerned
	third.Close()
	a.Close()
	s.connect(t, "127.0.0.2") // the slots of closed connections are free again
	refused, _, _ := s.m.get()
	if refused[RefusedPerIP] != 1 || refused[RefusedUnauthenticatedPerIP] != 1 {
		t.Errorf("refusals counted %v, want one of each", refused)
	}
	if st := s.g.Stats(); st.Listener != "test" || st.Authenticated != 0 || st.Unauthenticated != 3 {
		t.Errorf("Stats %+v, want 3 unauthenticated", st)
	}
}

// Under the caps' pressure the unauthenticated connection idle longest is
// closed to make room; authenticated ones never are, and once every slot is
// theirs a newcomer is refused.
func TestSheddingOrder(t *testing.T) {
	s := newServer(t, Config{MaxConns: 4, MaxUnauthenticated: 2}).serve(t)
	clientA, a := s.connect(t, "127.0.0.2")
	clientB, _ := s.connect(t, "127.0.0.3")
	// A speaks after B connected: B is now the longest idle.
	io.WriteString(clientA, "x")
	if _, err := a.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	// The unauthenticated cap is full: C gets in, B goes.
	clientC, c := s.connect(t, "127.0.0.4")
	if !closedByServer(t, clientB) {
		t.Fatal("the longest idle unauthenticated connection (B) was not closed")
	}
	if !stillOpen(t, clientA) || !stillOpen(t, clientC) {
		t.Fatal("a connection other than the longest idle one was closed")
	}
	// C logs in: it is out of the unauthenticated count and never shed.
	c.Authenticated()
	clientD, d := s.connect(t, "127.0.0.5")
	if !stillOpen(t, clientA) || !stillOpen(t, clientC) {
		t.Fatal("a connection was closed though there was room")
	}
	// A and D fill the unauthenticated cap, A idle longest: E replaces A.
	_, e := s.connect(t, "127.0.0.6")
	if !closedByServer(t, clientA) {
		t.Fatal("A, idle longest, was not shed")
	}
	// Fill the total (4) with logged-in clients: C, D, E and F.
	d.Authenticated()
	e.Authenticated()
	_, f := s.connect(t, "127.0.0.7")
	f.Authenticated()
	s.refusedWith(t, "127.0.0.8", RefusedTotal)
	if !stillOpen(t, clientC) || !stillOpen(t, clientD) {
		t.Fatal("an authenticated connection was closed")
	}
	// One leaves: the next client gets its slot.
	f.Close()
	s.connect(t, "127.0.0.8")
	_, shed, _ := s.m.get()
	if shed != 2 {
		t.Errorf("%d connections counted as shed, want 2", shed)
	}
	if !strings.Contains(s.log.String(), "closed the longest idle unauthenticated connection") {
		t.Errorf("the shedding was not logged:\n%s", s.log.String())
	}
}

// Before Authenticated a read waits UnauthenticatedReadTimeout; after it,
// ReadTimeout. Each read moves the deadline.
func TestReadTimeouts(t *testing.T) {
	s := newServer(t, Config{ReadTimeout: time.Hour, UnauthenticatedReadTimeout: 100 * time.Millisecond}).serve(t)
	client, c := s.connect(t, "127.0.0.2")
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("an unauthenticated read of a silent client: %v, want a timeout", err)
	}
	client2, c2 := s.connect(t, "127.0.0.2")
	c2.Authenticated()
	go func() {
		time.Sleep(300 * time.Millisecond) // longer than the timeout before AUTH
		io.WriteString(client2, "x")
	}()
	if _, err := c2.Read(make([]byte, 1)); err != nil {
		t.Fatalf("an authenticated read waited less than ReadTimeout: %v", err)
	}
	client.Close()
}

// Out of file descriptors, Accept logs at ERROR and counts it; with a
// client waiting it sheds the longest idle unauthenticated connection, whose
// descriptor lets the client in; with none waiting it sheds nobody. It
// backs off rather than spinning.
func TestAcceptOutOfFiles(t *testing.T) {
	s := newServer(t, Config{}).serve(t)
	idleClient, _ := s.connect(t, "127.0.0.2")
	exhaustFiles(t)
	freeOne(t)
	newClient := dial(t, s.ln.Addr(), "127.0.0.3") // takes the descriptor just freed
	c := s.next(t)
	if c.Addr().String() != "127.0.0.3" {
		t.Fatalf("accepted %s, want 127.0.0.3", c.Addr())
	}
	if !closedByServer(t, idleClient) {
		t.Error("the idle unauthenticated connection was not shed to free a descriptor")
	}
	log := s.log.String()
	if !strings.Contains(log, "level=ERROR") || !strings.Contains(log, "too many open files") {
		t.Errorf("EMFILE not logged at ERROR:\n%s", log)
	}

	// Still out of descriptors, but nobody waits: accept keeps failing
	// (with a backoff: 5 ms doubling to 1 s, a few errors a second rather
	// than thousands) and sheds nobody.
	_, _, before := s.m.get()
	time.Sleep(500 * time.Millisecond)
	_, shed, after := s.m.get()
	if shed != 1 || !stillOpen(t, newClient) {
		t.Errorf("%d connections shed, the new client's open: %v; want 1 shed, open (nobody waits)", shed, stillOpen(t, newClient))
	}
	if n := after - before; n < 1 || n > 20 {
		t.Errorf("%d accept errors in 500 ms out of descriptors; want a few (backoff)", n)
	}
	if lines := strings.Count(s.log.String(), "accepting a connection failed"); lines > 3 {
		t.Errorf("%d log lines for the accept errors of about a second; want at most one a second", lines)
	}

	// Nothing to shed (the only connection logged in): the client waits
	// for a descriptor.
	c.Authenticated()
	freeOne(t)
	dial(t, s.ln.Addr(), "127.0.0.4")
	time.Sleep(100 * time.Millisecond)
	if !stillOpen(t, newClient) {
		t.Error("a logged-in connection was shed")
	}
	freeOne(t)
	if c := s.next(t); c.Addr().String() != "127.0.0.4" {
		t.Errorf("accepted %s, want 127.0.0.4", c.Addr())
	}
}

// fillers hold the descriptors exhaustFiles took.
var fillers []*os.File

// exhaustFiles lowers this process's open-file limit a little above what
// it uses and opens files until none is left; the test's end undoes both.
func exhaustFiles(t *testing.T) {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count open files: %v", err)
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	saved := lim
	lim.Cur = min(lim.Cur, uint64(len(fds)+64))
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, f := range fillers {
			f.Close()
		}
		fillers = nil
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &saved)
	})
	for {
		f, err := os.Open(os.DevNull)
		if err != nil {
			if !errors.Is(err, syscall.EMFILE) {
				t.Fatalf("filling the descriptor table: %v", err)
			}
			return
		}
		fillers = append(fillers, f)
	}
}

func freeOne(t *testing.T) {
	t.Helper()
	if len(fillers) == 0 {
		t.Fatal("no descriptor left to free")
	}
	fillers[len(fillers)-1].Close()
	fillers = fillers[:len(fillers)-1]
}

// HTTPServer's limits: an idle keep-alive connection and a body that stops
// coming are both closed; a body declared too large is refused with 413.
func TestHTTPServerLimits(t *testing.T) {
	var served atomic.Int32
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		if _, err := io.ReadAll(r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		io.WriteString(w, "ok\n")
	})
	srv := HTTPServer(h, HTTPConfig{ReadTimeout: 200 * time.Millisecond, WriteTimeout: time.Second,
		IdleTimeout: 200 * time.Millisecond, MaxBodyBytes: 1000, Logger: slog.New(slog.DiscardHandler)})
	s := newServer(t, Config{})
	go srv.Serve(s.ln)
	t.Cleanup(func() { srv.Close() })

	request := func(c net.Conn, req string) string {
		t.Helper()
		io.WriteString(c, req)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%q: %v", req, err)
		}
		resp.Body.Close()
		return resp.Status
	}
	idle := dial(t, s.ln.Addr(), "127.0.0.2")
	if st := request(idle, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); st != "200 OK" {
		t.Fatalf("GET: %s", st)
	}
	slow := dial(t, s.ln.Addr(), "127.0.0.3")
	io.WriteString(slow, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 900\r\n\r\nabc")
	big := dial(t, s.ln.Addr(), "127.0.0.4")
	if st := request(big, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc"); st != "413 Request Entity Too Large" {
		t.Errorf("a body declared larger than MaxBodyBytes: %s, want 413", st)
	}
	for name, c := range map[string]net.Conn{"idle keep-alive": idle, "slow body": slow, "refused body": big} {
		if !closedByServer(t, c) {
			t.Errorf("the %s connection is still open", name)
		}
	}
}
