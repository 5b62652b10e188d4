package relay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"

	"github.com/sesame-mail/sesame/testkit"
)

// zoneSOA goes in the authority section of negative answers: negative
// caching lasts min(TTL 3600, MINIMUM 30) = 30s.
const zoneSOA = "test. 3600 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 30"

// zoneServer is a recursive-looking DNS server on a loopback port, UDP and
// TCP, that answers from a zone the test defines and counts the queries.
type zoneServer struct {
	addr string

	mu      sync.Mutex
	rrs     map[dnsKey][]dns.RR // the answer section, by question
	names   map[string]bool     // names that exist; others get NXDOMAIN
	rcode   map[string]int      // name ("*": any) → rcode to answer instead
	noSOA   bool                // negative answers without an SOA
	queries map[string]int      // name → queries over either transport
}

// startZoneServer serves records (in zone file syntax) on UDP and TCP of one
// loopback port until the test ends.
func startZoneServer(t *testing.T, records ...string) *zoneServer {
	t.Helper()
	z := &zoneServer{
		rrs:     make(map[dnsKey][]dns.RR),
		names:   make(map[string]bool),
		rcode:   make(map[string]int),
		queries: make(map[string]int),
	}
	z.add(t, records...)

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
	z.addr = pc.LocalAddr().String()
	for _, srv := range []*dns.Server{
		{PacketConn: pc, Handler: dns.HandlerFunc(z.serve)},
		{Listener: ln, Handler: dns.HandlerFunc(z.serve)},
	} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go srv.ActivateAndServe()
		<-started
		t.Cleanup(func() { srv.Shutdown() })
	}
	return z
}

// add puts records in the zone, each the answer to a question for its own
// name and type.
func (z *zoneServer) add(t *testing.T, records ...string) {
	t.Helper()
	z.mu.Lock()
	defer z.mu.Unlock()
	for _, s := range records {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatalf("record %q: %v", s, err)
		}
		h := rr.Header()
		key := dnsKey{strings.ToLower(h.Name), h.Rrtype}
		z.rrs[key] = append(z.rrs[key], rr)
		z.names[key.name] = true
	}
}

// answer sets the whole answer section for a question, as a recursive
// server that followed a CNAME chain gives it.
func (z *zoneServer) answer(t *testing.T, name string, qtype uint16, records ...string) {
	t.Helper()
	z.mu.Lock()
	defer z.mu.Unlock()
	key := dnsKey{name, qtype}
	z.rrs[key] = nil
	for _, s := range records {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatalf("record %q: %v", s, err)
		}
		z.rrs[key] = append(z.rrs[key], rr)
	}
	z.names[name] = true
}

func (z *zoneServer) setRcode(name string, rcode int) {
	z.mu.Lock()
	defer z.mu.Unlock()
	if rcode == dns.RcodeSuccess {
		delete(z.rcode, name)
		return
	}
	z.rcode[name] = rcode
}

func (z *zoneServer) count(name string) int {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.queries[name]
}

func (z *zoneServer) total() int {
	z.mu.Lock()
	defer z.mu.Unlock()
	n := 0
	for _, c := range z.queries {
		n += c
	}
	return n
}

func (z *zoneServer) serve(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	z.mu.Lock()
	defer z.mu.Unlock()
	m.RecursionAvailable = true
	if len(req.Question) != 1 || !req.RecursionDesired {
		m.Rcode = dns.RcodeFormatError
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	z.queries[name]++
	negative := func() {
		if !z.noSOA {
			soa, _ := dns.NewRR(zoneSOA)
			m.Ns = append(m.Ns, soa)
		}
	}
	rcode, ok := z.rcode[name]
	if !ok {
		rcode, ok = z.rcode["*"]
	}
	switch {
	case ok:
		m.Rcode = rcode
	case z.rrs[dnsKey{name, q.Qtype}] != nil:
		m.Answer = z.rrs[dnsKey{name, q.Qtype}]
	case z.rrs[dnsKey{name, dns.TypeCNAME}] != nil:
		// Like an authoritative server: the CNAME alone, the client
		// follows it.
		m.Answer = z.rrs[dnsKey{name, dns.TypeCNAME}]
	case z.names[name]:
		negative()
	default:
		m.Rcode = dns.RcodeNameError
		negative()
	}
	w.WriteMsg(m)
}

func testResolver(t *testing.T, clock *testkit.Clock, servers ...string) *resolver {
	t.Helper()
	r, err := newResolver(servers, 5*time.Second, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	return r
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

func wantFailure(t *testing.T, err error, permanent bool, status smtp.EnhancedCode, text string) {
	t.Helper()
	var f *failure
	if !errors.As(err, &f) {
		t.Fatalf("error %v (%T), want a *failure", err, err)
	}
	if f.permanent != permanent || f.status != status || !strings.Contains(f.text, text) {
		t.Fatalf("failure %q (permanent %v), want %v %q (permanent %v)", f, f.permanent, status, text, permanent)
	}
}

func exchangerHosts(xs []exchanger) []string {
	var hs []string
	for _, x := range xs {
		hs = append(hs, x.host)
	}
	return hs
}

func mustAddrs(ss ...string) []netip.Addr {
	var as []netip.Addr
	for _, s := range ss {
		as = append(as, netip.MustParseAddr(s))
	}
	return as
}

func TestResolverMXPriorities(t *testing.T) {
	z := startZoneServer(t,
		"prio.test. 300 IN MX 20 mx-b.prio.test.",
		"prio.test. 300 IN MX 10 MX-A.prio.test.",
		"prio.test. 300 IN MX 20 mx-c.prio.test.",
		"mx-a.prio.test. 300 IN A 192.0.2.1",
		"mx-b.prio.test. 300 IN A 192.0.2.2",
		"mx-c.prio.test. 300 IN A 192.0.2.3",
	)
	r := testResolver(t, testkit.NewClock(t), z.addr)
	orders := make(map[string]int)
	for range 64 {
		xs, err := r.exchangers(t.Context(), "prio.test")
		if err != nil {
			t.Fatal(err)
		}
		hs := exchangerHosts(xs)
		if len(xs) != 3 || xs[0].host != "mx-a.prio.test" || xs[0].pref != 10 ||
			xs[1].pref != 20 || xs[2].pref != 20 ||
			!slices.Contains(hs, "mx-b.prio.test") || !slices.Contains(hs, "mx-c.prio.test") {
			t.Fatalf("exchangers %+v, want mx-a (10) then mx-b and mx-c (20) in either order", xs)
		}
		want := map[string]string{"mx-a.prio.test": "192.0.2.1", "mx-b.prio.test": "192.0.2.2", "mx-c.prio.test": "192.0.2.3"}
		for _, x := range xs {
			if !slices.Equal(x.addrs, mustAddrs(want[x.host])) {
				t.Fatalf("%s has addresses %v, want %s", x.host, x.addrs, want[x.host])
			}
		}
		orders[strings.Join(hs, " ")]++
	}
	if len(orders) != 2 {
		t.Fatalf("orders seen %v, want both orders of the equal pair", orders)
	}
}

func TestResolverLimitsExchangers(t *testing.T) {
	var records []string
	for i := range 15 {
		records = append(records,
			fmt.Sprintf("many.test. 300 IN MX %d mx%d.many.test.", i, i),
			fmt.Sprintf("mx%d.many.test. 300 IN A 192.0.2.%d", i, i+1))
	}
	z := startZoneServer(t, records...)
	r := testResolver(t, testkit.NewClock(t), z.addr)
	xs, err := r.exchangers(t.Context(), "many.test")
	if err != nil {
		t.Fatal(err)
	}
	if len(xs) != maxExchangers || xs[0].host != "mx0.many.test" || xs[9].host != "mx9.many.test" {
		t.Fatalf("exchangers %v, want the %d best", exchangerHosts(xs), maxExchangers)
	}
	if n := z.count("mx10.many.test."); n != 0 {
		t.Fatalf("%d queries for the 11th MX host, want none", n)
	}
}

func TestResolverExchangerWithoutAddressSkipped(t *testing.T) {
	z := startZoneServer(t,
		"skip.test. 300 IN MX 10 gone.skip.test.", // NXDOMAIN
		"skip.test. 300 IN MX 20 noaddr.skip.test.",
		"skip.test. 300 IN MX 30 good.skip.test.",
		"noaddr.skip.test. 300 IN TXT \"no address here\"",
		"good.skip.test. 300 IN A 192.0.2.30",

		"none.test. 300 IN MX 10 gone.none.test.",
		"none.test. 300 IN MX 20 noaddr.skip.test.",

		"flaky.test. 300 IN MX 10 gone.none.test.",
		"flaky.test. 300 IN MX 20 broken.flaky.test.",
	)
	z.setRcode("broken.flaky.test.", dns.RcodeServerFailure)
	r := testResolver(t, testkit.NewClock(t), z.addr)

	xs, err := r.exchangers(t.Context(), "skip.test")
	if err != nil {
		t.Fatal(err)
	}
	if len(xs) != 1 || xs[0].host != "good.skip.test" || xs[0].pref != 30 || !slices.Equal(xs[0].addrs, mustAddrs("192.0.2.30")) {
		t.Fatalf("exchangers %+v, want only good.skip.test", xs)
	}

	_, err = r.exchangers(t.Context(), "none.test")
	wantFailure(t, err, true, smtp.EnhancedCode{5, 4, 4}, "no address for the mail exchangers of none.test")

	_, err = r.exchangers(t.Context(), "flaky.test")
	wantFailure(t, err, false, smtp.EnhancedCode{4, 4, 3}, "DNS lookup of broken.flaky.test")
}

func TestResolverImplicitMX(t *testing.T) {
	z := startZoneServer(t,
		"bare.test. 300 IN A 192.0.2.40",
		"bare.test. 300 IN AAAA 2001:db8::40",
	)
	r := testResolver(t, testkit.NewClock(t), z.addr)
	xs, err := r.exchangers(t.Context(), "bare.test")
	if err != nil {
		t.Fatal(err)
	}
	if len(xs) != 1 || xs[0].host != "bare.test" || xs[0].pref != 0 ||
		!slices.Equal(xs[0].addrs, mustAddrs("192.0.2.40", "2001:db8::40")) {
		t.Fatalf("exchangers %+v, want bare.test itself with its addresses", xs)
	}
}

func TestResolverNullMX(t *testing.T) {
	z := startZoneServer(t,
		"nomail.test. 300 IN MX 0 .",
		"nomail.test. 300 IN A 192.0.2.50", // must not be used
		"mixed.test. 300 IN MX 10 mx.mixed.test.",
		"mixed.test. 300 IN MX 0 .",
		"mx.mixed.test. 300 IN A 192.0.2.51",
	)
	r := testResolver(t, testkit.NewClock(t), z.addr)
	for _, domain := range []string{"nomail.test", "mixed.test"} {
		_, err := r.exchangers(t.Context(), domain)
		wantFailure(t, err, true, smtp.EnhancedCode{5, 1, 10}, "domain "+domain+" accepts no mail (null MX)")
	}
	if n := z.total(); n != 2 {
		t.Fatalf("%d queries, want only the 2 MX queries", n)
	}
}

func TestResolverNXDOMAIN(t *testing.T) {
	z := startZoneServer(t)
	r := testResolver(t, testkit.NewClock(t), z.addr)
	_, err := r.exchangers(t.Context(), "nowhere.test")
	wantFailure(t, err, true, smtp.EnhancedCode{5, 1, 2}, "domain nowhere.test does not exist")
}

func TestResolverNoMXNoAddress(t *testing.T) {
	z := startZoneServer(t, "txtonly.test. 300 IN TXT \"v=spf1 -all\"")
	r := testResolver(t, testkit.NewClock(t), z.addr)
	_, err := r.exchangers(t.Context(), "txtonly.test")
	wantFailure(t, err, true, smtp.EnhancedCode{5, 4, 4}, "domain txtonly.test has no MX and no address record")
}

func TestResolverInvalidDomain(t *testing.T) {
	z := startZoneServer(t)
	r := testResolver(t, testkit.NewClock(t), z.addr)
	for _, domain := range []string{"", strings.Repeat("a", 64) + ".test"} {
		_, err := r.exchangers(t.Context(), domain)
		wantFailure(t, err, true, smtp.EnhancedCode{5, 1, 2}, "not a valid DNS name")
	}
	if n := z.total(); n != 0 {
		t.Fatalf("%d queries for invalid names, want none", n)
	}
}

func TestResolverServfailNotCached(t *testing.T) {
	z := startZoneServer(t,
		"sf.test. 300 IN MX 10 mx.sf.test.",
		"mx.sf.test. 300 IN A 192.0.2.60",
	)
	z.setRcode("sf.test.", dns.RcodeServerFailure)
	r := testResolver(t, testkit.NewClock(t), z.addr)
	_, err := r.exchangers(t.Context(), "sf.test")
	wantFailure(t, err, false, smtp.EnhancedCode{4, 4, 3}, "DNS lookup of sf.test MX failed: server answered SERVFAIL")

	z.setRcode("sf.test.", dns.RcodeSuccess)
	xs, err := r.exchangers(t.Context(), "sf.test")
	if err != nil {
		t.Fatalf("after the server recovered: %v", err)
	}
	if len(xs) != 1 || xs[0].host != "mx.sf.test" {
		t.Fatalf("exchangers %+v, want mx.sf.test", xs)
	}
}

func TestResolverAllServersDead(t *testing.T) {
	refusing := startZoneServer(t, "dead.test. 300 IN MX 10 mx.dead.test.")
	refusing.setRcode("*", dns.RcodeRefused)
	closed := closedUDPPort(t)
	r := testResolver(t, testkit.NewClock(t), refusing.addr, closed)
	for range 2 { // whichever server is asked first
		_, err := r.exchangers(t.Context(), "dead.test")
		wantFailure(t, err, false, smtp.EnhancedCode{4, 4, 3}, "DNS lookup of dead.test MX failed: ")
		if f := err.(*failure); !strings.Contains(f.text, "REFUSED") || !strings.Contains(f.text, "connection refused") {
			t.Fatalf("failure %q, want both servers' reasons", f)
		}
	}
	if n := refusing.count("dead.test."); n != 2 {
		t.Fatalf("refusing server asked %d times, want 2: failures are not cached", n)
	}
}

func TestResolverFollowsCNAME(t *testing.T) {
	z := startZoneServer(t,
		// Chains the server leaves to us.
		"alias.test. 300 IN CNAME alias2.test.",
		"alias2.test. 300 IN CNAME real.test.",
		"real.test. 300 IN MX 10 mxalias.real.test.",
		"mxalias.real.test. 300 IN CNAME host.real.test.",
		"host.real.test. 300 IN A 192.0.2.90",
		"loop1.test. 300 IN CNAME loop2.test.",
		"loop2.test. 300 IN CNAME loop1.test.",
	)
	// A chain the server followed itself: the records are owned by the
	// chain's last name.
	z.answer(t, "chased.test.", dns.TypeA,
		"chased.test. 300 IN CNAME target.test.",
		"target.test. 300 IN A 192.0.2.91")
	r := testResolver(t, testkit.NewClock(t), z.addr)

	xs, err := r.exchangers(t.Context(), "alias.test")
	if err != nil {
		t.Fatal(err)
	}
	if len(xs) != 1 || xs[0].host != "mxalias.real.test" || !slices.Equal(xs[0].addrs, mustAddrs("192.0.2.90")) {
		t.Fatalf("exchangers %+v, want mxalias.real.test at 192.0.2.90", xs)
	}

	ips, err := r.lookupHost(t.Context(), "chased.test")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ips, mustAddrs("192.0.2.91")) {
		t.Fatalf("chased.test has %v, want 192.0.2.91", ips)
	}
	if n := z.count("target.test."); n != 0 {
		t.Fatalf("target.test asked %d times, want none: the answer had its records", n)
	}

	_, err = r.lookupHost(t.Context(), "loop1.test")
	wantFailure(t, err, false, smtp.EnhancedCode{4, 4, 3}, "CNAMEs")
}

func TestResolverCachesByTTL(t *testing.T) {
	z := startZoneServer(t,
		"cache.test. 600 IN MX 10 mx.cache.test.",
		"mx.cache.test. 120 IN A 192.0.2.100",
	)
	clock := testkit.NewClock(t)
	r := testResolver(t, clock, z.addr)
	lookup := func() {
		t.Helper()
		xs, err := r.exchangers(t.Context(), "cache.test")
		if err != nil {
			t.Fatal(err)
		}
		if len(xs) != 1 || !slices.Equal(xs[0].addrs, mustAddrs("192.0.2.100")) {
			t.Fatalf("exchangers %+v, want mx.cache.test", xs)
		}
	}
	want := func(mx, a int) {
		t.Helper()
		if got := z.count("cache.test."); got != mx {
			t.Fatalf("%d MX queries, want %d", got, mx)
		}
		if got := z.count("mx.cache.test."); got != a {
			t.Fatalf("%d queries for mx.cache.test (A and AAAA), want %d", got, a)
		}
	}
	lookup()
	want(1, 2)
	clock.Advance(29 * time.Second)
	lookup()
	want(1, 2)
	clock.Advance(time.Second) // t=30s: the AAAA NODATA (SOA minimum 30s) is over
	lookup()
	want(1, 3)
	clock.Advance(90 * time.Second) // t=120s: the A record's TTL is over, and the AAAA's again
	lookup()
	want(1, 5)
	clock.Advance(480 * time.Second) // t=600s: the MX record's TTL is over
	lookup()
	want(2, 7)
}

func TestResolverNegativeCache(t *testing.T) {
	z := startZoneServer(t)
	clock := testkit.NewClock(t)
	r := testResolver(t, clock, z.addr)
	lookup := func() {
		t.Helper()
		_, err := r.exchangers(t.Context(), "gone.test")
		wantFailure(t, err, true, smtp.EnhancedCode{5, 1, 2}, "does not exist")
	}
	lookup()
	clock.Advance(29 * time.Second)
	lookup()
	if n := z.count("gone.test."); n != 1 {
		t.Fatalf("%d queries within the SOA minimum, want 1", n)
	}
	clock.Advance(time.Second)
	lookup()
	if n := z.count("gone.test."); n != 2 {
		t.Fatalf("%d queries after the SOA minimum, want 2", n)
	}

	// Without an SOA, a minute.
	z.mu.Lock()
	z.noSOA = true
	z.mu.Unlock()
	_, err := r.lookupHost(t.Context(), "nosoa.test")
	wantFailure(t, err, true, smtp.EnhancedCode{5, 4, 4}, "host nosoa.test has no address record")
	clock.Advance(59 * time.Second)
	r.lookupHost(t.Context(), "nosoa.test")
	if n := z.count("nosoa.test."); n != 2 {
		t.Fatalf("%d queries (A and AAAA) within a minute, want 2", n)
	}
	clock.Advance(time.Second)
	r.lookupHost(t.Context(), "nosoa.test")
	if n := z.count("nosoa.test."); n != 4 {
		t.Fatalf("%d queries (A and AAAA) after a minute, want 4", n)
	}
}

func TestResolverIPv6AfterIPv4(t *testing.T) {
	z := startZoneServer(t,
		"dual.test. 300 IN AAAA 2001:db8::1",
		"dual.test. 300 IN AAAA 2001:db8::2",
		"dual.test. 300 IN A 192.0.2.110",
		"v6.test. 300 IN AAAA 2001:db8::3",
	)
	r := testResolver(t, testkit.NewClock(t), z.addr)
	ips, err := r.lookupHost(t.Context(), "dual.test")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ips, mustAddrs("192.0.2.110", "2001:db8::1", "2001:db8::2")) {
		t.Fatalf("dual.test has %v, want the IPv4 address first", ips)
	}
	ips, err = r.lookupHost(t.Context(), "v6.test")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ips, mustAddrs("2001:db8::3")) {
		t.Fatalf("v6.test has %v, want 2001:db8::3", ips)
	}
}

func TestResolverOneFamilyFailing(t *testing.T) {
	z := startZoneServer(t, "half.test. 300 IN A 192.0.2.120")
	r := testResolver(t, testkit.NewClock(t), z.addr)
	z.setRcode("half.test.", dns.RcodeServerFailure)
	_, err := r.lookupHost(t.Context(), "half.test")
	wantFailure(t, err, false, smtp.EnhancedCode{4, 4, 3}, "DNS lookup of half.test")

	// The A answer alone is enough while AAAA fails.
	z.setRcode("half.test.", dns.RcodeSuccess)
	if _, err := r.lookup(t.Context(), "half.test", dns.TypeA); err != nil {
		t.Fatal(err)
	}
	z.setRcode("half.test.", dns.RcodeServerFailure)
	ips, err := r.lookupHost(t.Context(), "half.test")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ips, mustAddrs("192.0.2.120")) {
		t.Fatalf("half.test has %v, want 192.0.2.120", ips)
	}
}

func TestResolverLookupHostIPLiteral(t *testing.T) {
	z := startZoneServer(t)
	r := testResolver(t, testkit.NewClock(t), z.addr)
	for in, want := range map[string]string{"192.0.2.1": "192.0.2.1", "2001:db8::1": "2001:db8::1", "::ffff:192.0.2.2": "192.0.2.2"} {
		ips, err := r.lookupHost(t.Context(), in)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ips, mustAddrs(want)) {
			t.Fatalf("lookupHost(%s) = %v, want %s", in, ips, want)
		}
	}
	if n := z.total(); n != 0 {
		t.Fatalf("%d queries for IP literals, want none", n)
	}
}

func TestResolverConcurrent(t *testing.T) {
	z := startZoneServer(t,
		"conc.test. 300 IN MX 10 mx1.conc.test.",
		"conc.test. 300 IN MX 10 mx2.conc.test.",
		"mx1.conc.test. 300 IN A 192.0.2.130",
		"mx2.conc.test. 300 IN A 192.0.2.131",
	)
	clock := testkit.NewClock(t)
	r := testResolver(t, clock, z.addr)
	r.cacheMax = 3 // evictions too
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			for range 20 {
				xs, err := r.exchangers(t.Context(), "conc.test")
				if err != nil || len(xs) != 2 {
					t.Errorf("exchangers %+v, %v; want 2", xs, err)
					return
				}
				if i%4 == 0 {
					clock.Advance(time.Minute)
				}
			}
		})
	}
	wg.Wait()
}

func TestResolverCacheBounded(t *testing.T) {
	z := startZoneServer(t)
	for i := range 30 {
		z.add(t, fmt.Sprintf("h%d.test. 300 IN A 192.0.2.%d", i, i+1))
	}
	z.add(t, "fresh.test. 300 IN A 192.0.2.200")
	clock := testkit.NewClock(t)
	r := testResolver(t, clock, z.addr)
	r.cacheMax = 10
	for i := range 30 {
		if _, err := r.lookup(t.Context(), fmt.Sprintf("h%d.test", i), dns.TypeA); err != nil {
			t.Fatal(err)
		}
		if n := len(r.cache); n > r.cacheMax {
			t.Fatalf("%d cache entries, want at most %d", n, r.cacheMax)
		}
	}
	// Expired entries go first: once they all expired, a new entry
	// evicts them all.
	clock.Advance(301 * time.Second)
	if _, err := r.lookup(t.Context(), "fresh.test", dns.TypeA); err != nil {
		t.Fatal(err)
	}
	if n := len(r.cache); n != 1 {
		t.Fatalf("%d cache entries after the others expired, want 1", n)
	}
}
