package relay

import (
	"errors"
	"fmt"
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

func testResolver(t *testing.T, clock *testkit.Clock, servers ...string) *resolver {
	t.Helper()
	r, err := newResolver(servers, 5*time.Second, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	return r
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
	z := testkit.StartZone(t,
		"prio.test. 300 IN MX 20 mx-b.prio.test.",
		"prio.test. 300 IN MX 10 MX-A.prio.test.",
		"prio.test. 300 IN MX 20 mx-c.prio.test.",
		"mx-a.prio.test. 300 IN A 192.0.2.1",
		"mx-b.prio.test. 300 IN A 192.0.2.2",
		"mx-c.prio.test. 300 IN A 192.0.2.3",
	)
	r := testResolver(t, testkit.NewClock(t), z.Addr)
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
	z := testkit.StartZone(t, records...)
	r := testResolver(t, testkit.NewClock(t), z.Addr)
	xs, err := r.exchangers(t.Context(), "many.test")
	if err != nil {
		t.Fatal(err)
	}
	if len(xs) != maxExchangers || xs[0].host != "mx0.many.test" || xs[9].host != "mx9.many.test" {
		t.Fatalf("exchangers %v, want the %d best", exchangerHosts(xs), maxExchangers)
	}
	if n := z.Count("mx10.many.test."); n != 0 {
		t.Fatalf("%d queries for the 11th MX host, want none", n)
	}
}

func TestResolverExchangerWithoutAddressSkipped(t *testing.T) {
	z := testkit.StartZone(t,
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
	z.Fail("broken.flaky.test.", dns.RcodeServerFailure)
	r := testResolver(t, testkit.NewClock(t), z.Addr)

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
	z := testkit.StartZone(t,
		"bare.test. 300 IN A 192.0.2.40",
		"bare.test. 300 IN AAAA 2001:db8::40",
	)
	r := testResolver(t, testkit.NewClock(t), z.Addr)
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
	z := testkit.StartZone(t,
		"nomail.test. 300 IN MX 0 .",
		"nomail.test. 300 IN A 192.0.2.50", // must not be used
		"mixed.test. 300 IN MX 10 mx.mixed.test.",
		"mixed.test. 300 IN MX 0 .",
		"mx.mixed.test. 300 IN A 192.0.2.51",
	)
	r := testResolver(t, testkit.NewClock(t), z.Addr)
	for _, domain := range []string{"nomail.test", "mixed.test"} {
		_, err := r.exchangers(t.Context(), domain)
		wantFailure(t, err, true, smtp.EnhancedCode{5, 1, 10}, "domain "+domain+" accepts no mail (null MX)")
	}
	if n := z.Total(); n != 2 {
		t.Fatalf("%d queries, want only the 2 MX queries", n)
	}
}

func TestResolverNXDOMAIN(t *testing.T) {
	z := testkit.StartZone(t)
	r := testResolver(t, testkit.NewClock(t), z.Addr)
	_, err := r.exchangers(t.Context(), "nowhere.test")
	wantFailure(t, err, true, smtp.EnhancedCode{5, 1, 2}, "domain nowhere.test does not exist")
}

func TestResolverNoMXNoAddress(t *testing.T) {
	z := testkit.StartZone(t, "txtonly.test. 300 IN TXT \"v=spf1 -all\"")
	r := testResolver(t, testkit.NewClock(t), z.Addr)
	_, err := r.exchangers(t.Context(), "txtonly.test")
	wantFailure(t, err, true, smtp.EnhancedCode{5, 4, 4}, "domain txtonly.test has no MX and no address record")
}

func TestResolverInvalidDomain(t *testing.T) {
	z := testkit.StartZone(t)
	r := testResolver(t, testkit.NewClock(t), z.Addr)
	for _, domain := range []string{"", strings.Repeat("a", 64) + ".test"} {
		_, err := r.exchangers(t.Context(), domain)
		wantFailure(t, err, true, smtp.EnhancedCode{5, 1, 2}, "not a valid DNS name")
	}
	if n := z.Total(); n != 0 {
		t.Fatalf("%d queries for invalid names, want none", n)
	}
}

func TestResolverServfailNotCached(t *testing.T) {
	z := testkit.StartZone(t,
		"sf.test. 300 IN MX 10 mx.sf.test.",
		"mx.sf.test. 300 IN A 192.0.2.60",
	)
	z.Fail("sf.test.", dns.RcodeServerFailure)
	r := testResolver(t, testkit.NewClock(t), z.Addr)
	_, err := r.exchangers(t.Context(), "sf.test")
	wantFailure(t, err, false, smtp.EnhancedCode{4, 4, 3}, "DNS lookup of sf.test MX failed: server answered SERVFAIL")

	z.Fail("sf.test.", dns.RcodeSuccess)
	xs, err := r.exchangers(t.Context(), "sf.test")
	if err != nil {
		t.Fatalf("after the server recovered: %v", err)
	}
	if len(xs) != 1 || xs[0].host != "mx.sf.test" {
		t.Fatalf("exchangers %+v, want mx.sf.test", xs)
	}
}

func TestResolverAllServersDead(t *testing.T) {
	refusing := testkit.StartZone(t, "dead.test. 300 IN MX 10 mx.dead.test.")
	refusing.Fail("*", dns.RcodeRefused)
	closed := testkit.ClosedUDPPort(t)
	r := testResolver(t, testkit.NewClock(t), refusing.Addr, closed)
	for range 2 { // whichever server is asked first
		_, err := r.exchangers(t.Context(), "dead.test")
		wantFailure(t, err, false, smtp.EnhancedCode{4, 4, 3}, "DNS lookup of dead.test MX failed: ")
		if f := err.(*failure); !strings.Contains(f.text, "REFUSED") || !strings.Contains(f.text, "connection refused") {
			t.Fatalf("failure %q, want both servers' reasons", f)
		}
	}
	if n := refusing.Count("dead.test."); n != 2 {
		t.Fatalf("refusing server asked %d times, want 2: failures are not cached", n)
	}
}

func TestResolverFollowsCNAME(t *testing.T) {
	z := testkit.StartZone(t,
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
	z.Set(t, "chased.test.", dns.TypeA,
		"chased.test. 300 IN CNAME target.test.",
		"target.test. 300 IN A 192.0.2.91")
	r := testResolver(t, testkit.NewClock(t), z.Addr)

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
	if n := z.Count("target.test."); n != 0 {
		t.Fatalf("target.test asked %d times, want none: the answer had its records", n)
	}

	_, err = r.lookupHost(t.Context(), "loop1.test")
	wantFailure(t, err, false, smtp.EnhancedCode{4, 4, 3}, "CNAMEs")
}

func TestResolverCachesByTTL(t *testing.T) {
	z := testkit.StartZone(t,
		"cache.test. 600 IN MX 10 mx.cache.test.",
		"mx.cache.test. 120 IN A 192.0.2.100",
	)
	clock := testkit.NewClock(t)
	r := testResolver(t, clock, z.Addr)
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
		if got := z.Count("cache.test."); got != mx {
			t.Fatalf("%d MX queries, want %d", got, mx)
		}
		if got := z.Count("mx.cache.test."); got != a {
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
	z := testkit.StartZone(t)
	clock := testkit.NewClock(t)
	r := testResolver(t, clock, z.Addr)
	lookup := func() {
		t.Helper()
		_, err := r.exchangers(t.Context(), "gone.test")
		wantFailure(t, err, true, smtp.EnhancedCode{5, 1, 2}, "does not exist")
	}
	lookup()
	clock.Advance(29 * time.Second)
	lookup()
	if n := z.Count("gone.test."); n != 1 {
		t.Fatalf("%d queries within the SOA minimum, want 1", n)
	}
	clock.Advance(time.Second)
	lookup()
	if n := z.Count("gone.test."); n != 2 {
		t.Fatalf("%d queries after the SOA minimum, want 2", n)
	}

	// Without an SOA, a minute.
	z.SetSOA(t, "")
	_, err := r.lookupHost(t.Context(), "nosoa.test")
	wantFailure(t, err, true, smtp.EnhancedCode{5, 4, 4}, "host nosoa.test has no address record")
	clock.Advance(59 * time.Second)
	r.lookupHost(t.Context(), "nosoa.test")
	if n := z.Count("nosoa.test."); n != 2 {
		t.Fatalf("%d queries (A and AAAA) within a minute, want 2", n)
	}
	clock.Advance(time.Second)
	r.lookupHost(t.Context(), "nosoa.test")
	if n := z.Count("nosoa.test."); n != 4 {
		t.Fatalf("%d queries (A and AAAA) after a minute, want 4", n)
	}
}

func TestResolverIPv6AfterIPv4(t *testing.T) {
	z := testkit.StartZone(t,
		"dual.test. 300 IN AAAA 2001:db8::1",
		"dual.test. 300 IN AAAA 2001:db8::2",
		"dual.test. 300 IN A 192.0.2.110",
		"v6.test. 300 IN AAAA 2001:db8::3",
	)
	r := testResolver(t, testkit.NewClock(t), z.Addr)
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
	z := testkit.StartZone(t, "half.test. 300 IN A 192.0.2.120")
	r := testResolver(t, testkit.NewClock(t), z.Addr)
	z.Fail("half.test.", dns.RcodeServerFailure)
	_, err := r.lookupHost(t.Context(), "half.test")
	wantFailure(t, err, false, smtp.EnhancedCode{4, 4, 3}, "DNS lookup of half.test")

	// The A answer alone is enough while AAAA fails.
	z.Fail("half.test.", dns.RcodeSuccess)
	if _, err := r.lookup(t.Context(), "half.test", dns.TypeA); err != nil {
		t.Fatal(err)
	}
	z.Fail("half.test.", dns.RcodeServerFailure)
	ips, err := r.lookupHost(t.Context(), "half.test")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ips, mustAddrs("192.0.2.120")) {
		t.Fatalf("half.test has %v, want 192.0.2.120", ips)
	}
}

func TestResolverLookupHostIPLiteral(t *testing.T) {
	z := testkit.StartZone(t)
	r := testResolver(t, testkit.NewClock(t), z.Addr)
	for in, want := range map[string]string{"192.0.2.1": "192.0.2.1", "2001:db8::1": "2001:db8::1", "::ffff:192.0.2.2": "192.0.2.2"} {
		ips, err := r.lookupHost(t.Context(), in)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ips, mustAddrs(want)) {
			t.Fatalf("lookupHost(%s) = %v, want %s", in, ips, want)
		}
	}
	if n := z.Total(); n != 0 {
		t.Fatalf("%d queries for IP literals, want none", n)
	}
}

func TestResolverConcurrent(t *testing.T) {
	z := testkit.StartZone(t,
		"conc.test. 300 IN MX 10 mx1.conc.test.",
		"conc.test. 300 IN MX 10 mx2.conc.test.",
		"mx1.conc.test. 300 IN A 192.0.2.130",
		"mx2.conc.test. 300 IN A 192.0.2.131",
	)
	clock := testkit.NewClock(t)
	r := testResolver(t, clock, z.Addr)
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
	z := testkit.StartZone(t)
	for i := range 30 {
		z.Add(t, fmt.Sprintf("h%d.test. 300 IN A 192.0.2.%d", i, i+1))
	}
	z.Add(t, "fresh.test. 300 IN A 192.0.2.200")
	clock := testkit.NewClock(t)
	r := testResolver(t, clock, z.Addr)
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
