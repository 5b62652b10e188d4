package dnsclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// testSOA goes in the authority section of negative answers.
const testSOA = "test. 3600 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 30"

// handler makes the reply to req, which came over TCP if overTCP.
type handler func(req *dns.Msg, overTCP bool) *dns.Msg

// server is a DNS server on one loopback port, UDP and TCP, that replies
// with its handler and counts the queries.
type server struct {
	addr string

	mu      sync.Mutex
	handle  handler
	queries map[string]int // question name → queries over either transport
	tcp     int            // queries over TCP
}

// startServer serves with h on UDP and TCP of one loopback port until the
// test ends.
func startServer(t *testing.T, h handler) *server {
	t.Helper()
	s := &server{handle: h, queries: make(map[string]int)}
	// UDP on a free port, then TCP on the same one; another process may
	// hold that TCP port, so try again with another.
	var pc net.PacketConn
	var ln net.Listener
	for attempt := 0; ; attempt++ {
		var err error
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
		if attempt == 20 {
			t.Fatalf("no port free for both UDP and TCP: %v", err)
		}
	}
	s.addr = pc.LocalAddr().String()
	for _, srv := range []*dns.Server{
		{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, m *dns.Msg) { s.serve(w, m, false) })},
		{Listener: ln, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, m *dns.Msg) { s.serve(w, m, true) })},
	} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go srv.ActivateAndServe()
		<-started
		t.Cleanup(func() { srv.Shutdown() })
	}
	return s
}

func (s *server) serve(w dns.ResponseWriter, req *dns.Msg, overTCP bool) {
	s.mu.Lock()
	if len(req.Question) == 1 {
		s.queries[strings.ToLower(req.Question[0].Name)]++
	}
	if overTCP {
		s.tcp++
	}
	h := s.handle
	s.mu.Unlock()
	if m := h(req, overTCP); m != nil {
		w.WriteMsg(m)
	}
}

func (s *server) count(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[name]
}

func (s *server) total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.queries {
		n += c
	}
	return n
}

func (s *server) tcpCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tcp
}

// zone answers from records (zone file syntax) as a recursive server does
// for a zone it just looked up: the records of the question's name and type;
// else a CNAME at the name, alone, for the client to follow; else NODATA or
// NXDOMAIN with the SOA testSOA.
func zone(t *testing.T, records ...string) handler {
	t.Helper()
	type key struct {
		name  string
		qtype uint16
	}
	rrs := make(map[key][]dns.RR)
	names := make(map[string]bool)
	for _, r := range records {
		rr, err := dns.NewRR(r)
		if err != nil {
			t.Fatalf("record %q: %v", r, err)
		}
		h := rr.Header()
		k := key{strings.ToLower(h.Name), h.Rrtype}
		rrs[k] = append(rrs[k], rr)
		names[k.name] = true
	}
	soa, err := dns.NewRR(testSOA)
	if err != nil {
		t.Fatal(err)
	}
	return func(req *dns.Msg, _ bool) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(req)
		m.RecursionAvailable = true
		q := req.Question[0]
		name := strings.ToLower(q.Name)
		switch {
		case rrs[key{name, q.Qtype}] != nil:
			m.Answer = rrs[key{name, q.Qtype}]
		case rrs[key{name, dns.TypeCNAME}] != nil:
			m.Answer = rrs[key{name, dns.TypeCNAME}]
		case names[name]:
			m.Ns = []dns.RR{soa}
		default:
			m.Rcode = dns.RcodeNameError
			m.Ns = []dns.RR{soa}
		}
		return m
	}
}

// reply answers every question with rcode and the answer records, and sets
// the reply's RA bit.
func reply(t *testing.T, rcode int, answer ...string) handler {
	t.Helper()
	var rrs []dns.RR
	for _, r := range answer {
		rr, err := dns.NewRR(r)
		if err != nil {
			t.Fatalf("record %q: %v", r, err)
		}
		rrs = append(rrs, rr)
	}
	return func(req *dns.Msg, _ bool) *dns.Msg {
		m := new(dns.Msg)
		m.SetRcode(req, rcode)
		m.RecursionAvailable = true
		m.Answer = rrs
		return m
	}
}

func testClient(t *testing.T, timeout time.Duration, servers ...string) *Client {
	t.Helper()
	c, err := New(servers, timeout)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// closedUDPPort returns a loopback address where nothing listens: queries
// to it fail at once with "connection refused".
func closedUDPPort(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}

// silentServer returns a loopback UDP address that reads queries and never
// answers; got receives a value for each query.
func silentServer(t *testing.T) (addr string, got <-chan struct{}) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	ch := make(chan struct{}, 100)
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}()
	return pc.LocalAddr().String(), ch
}

// rrStrings returns the records in zone file syntax, for comparing.
func rrStrings(rrs []dns.RR) []string {
	var ss []string
	for _, rr := range rrs {
		ss = append(ss, rr.String())
	}
	return ss
}

func mustRRStrings(t *testing.T, records ...string) []string {
	t.Helper()
	var ss []string
	for _, r := range records {
		rr, err := dns.NewRR(r)
		if err != nil {
			t.Fatalf("record %q: %v", r, err)
		}
		ss = append(ss, rr.String())
	}
	return ss
}

func TestLookup(t *testing.T) {
	records := []string{
		"a.test. 300 IN A 192.0.2.1",
		"a.test. 60 IN A 192.0.2.2",
		"txt.test. 300 IN TXT \"only text\"",
		"alias.test. 120 IN CNAME alias2.test.",
		"alias2.test. 600 IN CNAME real.test.",
		"real.test. 300 IN A 192.0.2.3",
		"dangling.test. 300 IN CNAME gone.test.",
		"loop1.test. 300 IN CNAME loop2.test.",
		"loop2.test. 300 IN CNAME loop1.test.",
	}
	// Chains of n CNAMEs: chainN-0.test → chainN-1.test → … → end.test.
	for _, n := range []int{8, 9} {
		for i := range n {
			next := fmt.Sprintf("chain%d-%d.test.", n, i+1)
			if i == n-1 {
				next = "end.test."
			}
			records = append(records, fmt.Sprintf("chain%d-%d.test. 300 IN CNAME %s", n, i, next))
		}
	}
	records = append(records, "end.test. 300 IN A 192.0.2.9")

	tests := []struct {
		name     string
		qname    string
		qtype    uint16
		records  []string      // want these
		nxdomain bool          // want NXDOMAIN
		ttl      time.Duration // want this TTL
		soa      bool          // want an SOA
		queries  []string      // want these names asked, once each
		err      string        // want an error with this text
	}{
		{name: "records, least TTL", qname: "a.test", qtype: dns.TypeA,
			records: []string{"a.test. 300 IN A 192.0.2.1", "a.test. 60 IN A 192.0.2.2"}, ttl: time.Minute,
			queries: []string{"a.test."}},
		{name: "name in any case, with a dot", qname: "A.Test.", qtype: dns.TypeA,
			records: []string{"a.test. 300 IN A 192.0.2.1", "a.test. 60 IN A 192.0.2.2"}, ttl: time.Minute,
			queries: []string{"a.test."}},
		{name: "NODATA", qname: "txt.test", qtype: dns.TypeA, ttl: maxTTL, soa: true,
			queries: []string{"txt.test."}},
		{name: "NXDOMAIN", qname: "nowhere.test", qtype: dns.TypeMX, nxdomain: true, ttl: maxTTL, soa: true,
			queries: []string{"nowhere.test."}},
		{name: "CNAMEs followed by hand", qname: "alias.test", qtype: dns.TypeA,
			records: []string{"real.test. 300 IN A 192.0.2.3"}, ttl: 120 * time.Second,
			queries: []string{"alias.test.", "alias2.test.", "real.test."}},
		{name: "CNAME to no name", qname: "dangling.test", qtype: dns.TypeA, nxdomain: true, ttl: 300 * time.Second, soa: true,
			queries: []string{"dangling.test.", "gone.test."}},
		{name: "CNAME loop", qname: "loop1.test", qtype: dns.TypeA, err: "more than 8 CNAMEs"},
		{name: "eight CNAMEs", qname: "chain8-0.test", qtype: dns.TypeA,
			records: []string{"end.test. 300 IN A 192.0.2.9"}, ttl: 300 * time.Second},
		{name: "nine CNAMEs", qname: "chain9-0.test", qtype: dns.TypeA, err: "more than 8 CNAMEs"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, zone(t, records...))
			c := testClient(t, 5*time.Second, s.addr)
			ans, err := c.Lookup(t.Context(), tc.qname, tc.qtype)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got, want := rrStrings(ans.Records), mustRRStrings(t, tc.records...); !slices.Equal(got, want) {
				t.Errorf("records %q, want %q", got, want)
			}
			if ans.NXDomain != tc.nxdomain || ans.TTL != tc.ttl || (ans.SOA != nil) != tc.soa {
				t.Errorf("NXDomain %v, TTL %v, SOA %v; want %v, %v, an SOA %v", ans.NXDomain, ans.TTL, ans.SOA, tc.nxdomain, tc.ttl, tc.soa)
			}
			for _, q := range tc.queries {
				if n := s.count(q); n != 1 {
					t.Errorf("%s asked %d times, want once", q, n)
				}
			}
			if tc.queries != nil && s.total() != len(tc.queries) {
				t.Errorf("%d queries, want %d", s.total(), len(tc.queries))
			}
		})
	}
}

// A recursive server that followed a CNAME chain gives the records at its
// end: they count, whatever their owner, and nothing more is asked.
func TestLookupChainFollowedByServer(t *testing.T) {
	s := startServer(t, reply(t, dns.RcodeSuccess,
		"chased.test. 30 IN CNAME target.test.",
		"target.test. 300 IN A 192.0.2.91",
		"target.test. 300 CH A 192.0.2.92",
		"target.test. 300 IN TXT \"not an address\""))
	c := testClient(t, 5*time.Second, s.addr)
	ans, err := c.Lookup(t.Context(), "chased.test", dns.TypeA)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := rrStrings(ans.Records), mustRRStrings(t, "target.test. 300 IN A 192.0.2.91"); !slices.Equal(got, want) {
		t.Fatalf("records %q, want %q: only the IN A ones", got, want)
	}
	if s.total() != 1 {
		t.Fatalf("%d queries, want 1", s.total())
	}
}

func TestLookupQuery(t *testing.T) {
	var got *dns.Msg
	var mu sync.Mutex
	records := zone(t, "q.test. 300 IN A 192.0.2.1")
	s := startServer(t, func(req *dns.Msg, overTCP bool) *dns.Msg {
		mu.Lock()
		got = req.Copy()
		mu.Unlock()
		return records(req, overTCP)
	})
	c := testClient(t, 5*time.Second, s.addr)
	if _, err := c.Lookup(t.Context(), "Q.test", dns.TypeA); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !got.RecursionDesired || len(got.Question) != 1 || got.Question[0].Name != "q.test." ||
		got.Question[0].Qtype != dns.TypeA || got.Question[0].Qclass != dns.ClassINET {
		t.Fatalf("query %v, want RD and one question q.test. IN A", got)
	}
	if o := got.IsEdns0(); o == nil || o.UDPSize() != udpSize || o.Do() {
		t.Fatalf("query EDNS0 %v, want a UDP size of %d and no DO bit", o, udpSize)
	}
}

func TestLookupTruncatedRetriesOverTCP(t *testing.T) {
	records := zone(t,
		"big.test. 300 IN A 192.0.2.80",
		"small.test. 300 IN A 192.0.2.81")
	s := startServer(t, func(req *dns.Msg, overTCP bool) *dns.Msg {
		m := records(req, overTCP)
		if !overTCP && req.Question[0].Name == "big.test." {
			m.Answer = nil
			m.Truncated = true
		}
		return m
	})
	c := testClient(t, 5*time.Second, s.addr)
	ans, err := c.Lookup(t.Context(), "big.test", dns.TypeA)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := rrStrings(ans.Records), mustRRStrings(t, "big.test. 300 IN A 192.0.2.80"); !slices.Equal(got, want) {
		t.Fatalf("records %q, want %q", got, want)
	}
	if s.count("big.test.") != 2 || s.tcpCount() != 1 {
		t.Fatalf("%d queries for big.test, %d over TCP; want a UDP one, then a TCP one", s.count("big.test."), s.tcpCount())
	}
	if _, err := c.Lookup(t.Context(), "small.test", dns.TypeA); err != nil {
		t.Fatal(err)
	}
	if s.tcpCount() != 1 {
		t.Fatal("an untruncated answer was asked again over TCP")
	}
}

func TestLookupRcodes(t *testing.T) {
	for rcode, want := range map[int]string{
		dns.RcodeServerFailure:  "server answered SERVFAIL",
		dns.RcodeRefused:        "server answered REFUSED",
		dns.RcodeFormatError:    "server answered FORMERR",
		dns.RcodeNotImplemented: "server answered NOTIMP",
		dns.RcodeYXDomain:       "server answered YXDOMAIN",
	} {
		s := startServer(t, reply(t, rcode))
		c := testClient(t, 5*time.Second, s.addr)
		_, err := c.Lookup(t.Context(), "rcode.test", dns.TypeA)
		if err == nil || err.Error() != want {
			t.Errorf("rcode %s: error %v, want %q", dns.RcodeToString[rcode], err, want)
		}
	}
}

func TestLookupQuestionMismatch(t *testing.T) {
	good := zone(t, "asked.test. 300 IN A 192.0.2.1")
	other, err := dns.NewRR("other.test. 300 IN A 192.0.2.66")
	if err != nil {
		t.Fatal(err)
	}
	for name, change := range map[string]func(m *dns.Msg){
		"name": func(m *dns.Msg) { m.Question[0].Name, m.Answer = "other.test.", []dns.RR{other} },
		"type": func(m *dns.Msg) { m.Question[0].Qtype = dns.TypeAAAA },
		"none": func(m *dns.Msg) { m.Question = nil },
		"two":  func(m *dns.Msg) { m.Question = append(m.Question, m.Question[0]) },
	} {
		t.Run(name, func(t *testing.T) {
			spoofed := startServer(t, func(req *dns.Msg, overTCP bool) *dns.Msg {
				m := good(req, overTCP)
				change(m)
				return m
			})
			c := testClient(t, 5*time.Second, spoofed.addr)
			_, err := c.Lookup(t.Context(), "asked.test", dns.TypeA)
			if err == nil || err.Error() != "reply to another question" {
				t.Fatalf("error %v, want %q", err, "reply to another question")
			}

			// The next server is asked.
			honest := startServer(t, good)
			c = testClient(t, 5*time.Second, spoofed.addr, honest.addr)
			ans, err := c.Lookup(t.Context(), "asked.test", dns.TypeA)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := rrStrings(ans.Records), mustRRStrings(t, "asked.test. 300 IN A 192.0.2.1"); !slices.Equal(got, want) {
				t.Fatalf("records %q, want %q", got, want)
			}
		})
	}
}

// A server that does not recurse answers with a referral, which is not
// NODATA.
func TestLookupLameServer(t *testing.T) {
	ns, err := dns.NewRR("test. 300 IN NS ns.test.")
	if err != nil {
		t.Fatal(err)
	}
	soa, err := dns.NewRR(testSOA)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		make func(m *dns.Msg)
		err  string
	}{
		{name: "referral", make: func(m *dns.Msg) { m.Ns = []dns.RR{ns} }, err: "server does not recurse"},
		{name: "nothing", make: func(m *dns.Msg) {}, err: "server does not recurse"},
		{name: "NODATA with an SOA", make: func(m *dns.Msg) { m.Ns = []dns.RR{soa} }},
		{name: "authoritative NODATA", make: func(m *dns.Msg) { m.Authoritative = true }},
		{name: "recursive NODATA", make: func(m *dns.Msg) { m.RecursionAvailable = true }},
		{name: "NXDOMAIN", make: func(m *dns.Msg) { m.Rcode = dns.RcodeNameError }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, func(req *dns.Msg, _ bool) *dns.Msg {
				m := new(dns.Msg)
				m.SetReply(req)
				tc.make(m)
				return m
			})
			c := testClient(t, 5*time.Second, s.addr)
			ans, err := c.Lookup(t.Context(), "lame.test", dns.TypeA)
			if tc.err == "" && err != nil {
				t.Fatalf("error %v, want a negative answer", err)
			}
			if tc.err != "" && (err == nil || err.Error() != tc.err) {
				t.Fatalf("answer %+v, error %v; want %q", ans, err, tc.err)
			}
		})
	}
}

func TestLookupFailsOverToNextServer(t *testing.T) {
	records := zone(t, "over.test. 300 IN A 192.0.2.70")
	want := mustRRStrings(t, "over.test. 300 IN A 192.0.2.70")
	t.Run("SERVFAIL", func(t *testing.T) {
		bad := startServer(t, reply(t, dns.RcodeServerFailure))
		good := startServer(t, records)
		c := testClient(t, 5*time.Second, bad.addr, good.addr)
		ans, err := c.Lookup(t.Context(), "over.test", dns.TypeA)
		if err != nil {
			t.Fatal(err)
		}
		if got := rrStrings(ans.Records); !slices.Equal(got, want) {
			t.Fatalf("records %q, want %q", got, want)
		}
		if bad.count("over.test.") != 1 || good.count("over.test.") != 1 {
			t.Fatalf("asked %d times of the failing server and %d of the healthy one, want 1 and 1",
				bad.count("over.test."), good.count("over.test."))
		}
	})
	t.Run("timeout", func(t *testing.T) {
		silent, got := silentServer(t)
		good := startServer(t, records)
		c := testClient(t, 100*time.Millisecond, silent, good.addr)
		ans, err := c.Lookup(t.Context(), "over.test", dns.TypeA)
		if err != nil {
			t.Fatal(err)
		}
		if got := rrStrings(ans.Records); !slices.Equal(got, want) {
			t.Fatalf("records %q, want %q", got, want)
		}
		select {
		case <-got:
		default:
			t.Fatal("the silent server was never asked")
		}
	})
	t.Run("connection refused", func(t *testing.T) {
		good := startServer(t, records)
		c := testClient(t, 5*time.Second, closedUDPPort(t), good.addr)
		if _, err := c.Lookup(t.Context(), "over.test", dns.TypeA); err != nil {
			t.Fatal(err)
		}
	})
}

// When no server answers, the error gives each distinct reason once, in the
// order the servers were asked, and no address.
func TestLookupAllServersFail(t *testing.T) {
	refusing := startServer(t, reply(t, dns.RcodeRefused))
	refusing2 := startServer(t, reply(t, dns.RcodeRefused))
	silent, _ := silentServer(t)
	c := testClient(t, 100*time.Millisecond, refusing.addr, closedUDPPort(t), refusing2.addr, silent)
	_, err := c.Lookup(t.Context(), "dead.test", dns.TypeA)
	if want := "server answered REFUSED; read: connection refused; timeout"; err == nil || err.Error() != want {
		t.Fatalf("error %v, want %q", err, want)
	}
	if strings.Contains(err.Error(), "127.0.0.1") {
		t.Fatalf("error %q names a server", err)
	}
}

func TestLookupRotatesServers(t *testing.T) {
	var records []string
	for i := range 8 {
		records = append(records, fmt.Sprintf("r%d.test. 300 IN A 192.0.2.%d", i, i+1))
	}
	a := startServer(t, zone(t, records...))
	b := startServer(t, zone(t, records...))
	c := testClient(t, 5*time.Second, a.addr, b.addr)
	for i := range 8 {
		if _, err := c.Lookup(t.Context(), fmt.Sprintf("r%d.test", i), dns.TypeA); err != nil {
			t.Fatal(err)
		}
	}
	if a.total() != 4 || b.total() != 4 {
		t.Fatalf("servers asked %d and %d times, want 4 and 4", a.total(), b.total())
	}
}

func TestLookupTimeout(t *testing.T) {
	silent, _ := silentServer(t)
	c := testClient(t, 100*time.Millisecond, silent)
	start := time.Now()
	_, err := c.Lookup(t.Context(), "slow.test", dns.TypeA)
	if err == nil || err.Error() != "timeout" {
		t.Fatalf("error %v, want %q", err, "timeout")
	}
	if !errors.Is(err, ErrTimeout) {
		t.Errorf("error %v is not ErrTimeout", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("the lookup took %v with a 100ms timeout", el)
	}
}

func TestLookupCancelled(t *testing.T) {
	t.Run("before", func(t *testing.T) {
		silent, got := silentServer(t)
		c := testClient(t, time.Hour, silent)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := c.Lookup(ctx, "cancel.test", dns.TypeA); !errors.Is(err, context.Canceled) {
			t.Fatalf("error %v, want %v", err, context.Canceled)
		}
		select {
		case <-got:
			t.Fatal("a query was sent with a cancelled context")
		default:
		}
	})
	t.Run("during", func(t *testing.T) {
		silent, got := silentServer(t)
		other, _ := silentServer(t)
		c := testClient(t, time.Hour, silent, other)
		ctx, cancel := context.WithCancel(t.Context())
		errc := make(chan error, 1)
		go func() {
			_, err := c.Lookup(ctx, "cancel.test", dns.TypeA)
			errc <- err
		}()
		<-got
		cancel()
		select {
		case err := <-errc:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("error %v, want %v", err, context.Canceled)
			}
		case <-time.After(time.Minute): // a liveness bound; the query timeout is an hour
			t.Fatal("the lookup went on after its context was cancelled")
		}
	})
	t.Run("deadline", func(t *testing.T) {
		silent, _ := silentServer(t)
		c := testClient(t, time.Hour, silent)
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		// The query's own deadline is ctx's, so which of the two is seen
		// ending first is a race: either error will do.
		_, err := c.Lookup(ctx, "cancel.test", dns.TypeA)
		if !errors.Is(err, context.DeadlineExceeded) && (err == nil || err.Error() != "timeout") {
			t.Fatalf("error %v, want %v or timeout", err, context.DeadlineExceeded)
		}
		if el := time.Since(start); el > time.Minute { // a liveness bound; the query timeout is an hour
			t.Fatalf("the lookup took %v with a deadline of 100ms", el)
		}
	})
}

func TestSystemServers(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(conf, []byte("search example.test\nnameserver 127.0.0.53\nnameserver ::1\noptions edns0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	servers, err := systemServers(conf)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"127.0.0.53:53", "[::1]:53"}; !slices.Equal(servers, want) {
		t.Fatalf("servers %q, want %q", servers, want)
	}

	empty := filepath.Join(dir, "empty.conf")
	if err := os.WriteFile(empty, []byte("# nothing\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{filepath.Join(dir, "missing.conf"), empty} {
		if _, err := systemServers(path); err == nil || !strings.Contains(err.Error(), "set [relay] dns_servers") {
			t.Fatalf("servers of %s: error %v, want one naming [relay] dns_servers", path, err)
		}
	}
}

func TestNew(t *testing.T) {
	for _, s := range []string{"localhost:53", "127.0.0.1", "dns.example:53", "127.0.0.1:dns"} {
		if _, err := New([]string{"127.0.0.1:53", s}, 0); err == nil || !strings.Contains(err.Error(), "want ip:port") {
			t.Errorf("New with DNS server %q: error %v, want one saying ip:port", s, err)
		}
	}
	c, err := New([]string{"127.0.0.1:53", "[::1]:5353"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if c.timeout != defaultTimeout {
		t.Errorf("timeout %v, want the default %v", c.timeout, defaultTimeout)
	}
}

func TestReasonOf(t *testing.T) {
	for err, want := range map[error]string{
		context.DeadlineExceeded: "timeout",
		&net.OpError{Op: "read", Net: "udp", Addr: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53}, Err: errors.New("connection refused")}: "connection refused",
		errors.New("server answered SERVFAIL"): "server answered SERVFAIL",
	} {
		if got := reasonOf(err); got != want {
			t.Errorf("reasonOf(%v) = %q, want %q", err, got, want)
		}
	}
}
