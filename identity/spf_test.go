package identity

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/sesame-mail/sesame/store"
	"github.com/sesame-mail/sesame/testkit"
)

// includes publishes n records _iK.example.net, each an include of the
// next, the last holding last, and returns the first name.
func includeChain(z *testkit.Zone, n int, last string) string {
	for i := range n {
		v := fmt.Sprintf("v=spf1 include:_i%d.example.net -all", i+1)
		if i == n-1 {
			v = last
		}
		z.SetTXT(fmt.Sprintf("_i%d.example.net", i), v)
	}
	return "_i0.example.net"
}

// TestSPFEval evaluates records for 203.0.113.5 as a receiver does,
// lookups and limits included (RFC 7208 §4.6.4, §5).
func TestSPFEval(t *testing.T) {
	ip := "203.0.113.5"
	many := func(n int, term string) string {
		var b strings.Builder
		b.WriteString("v=spf1")
		for i := range n {
			b.WriteString(" " + strings.ReplaceAll(term, "N", fmt.Sprint(i)))
		}
		return b.String()
	}
	tests := []struct {
		name   string
		ip     string // default ip
		record string
		zone   func(t *testing.T, z *testkit.Zone)
		want   spfResult
		why    string // a substring of the reason
	}{
		{name: "ip4 pass", record: "v=spf1 ip4:203.0.113.0/24 -all", want: spfPass},
		{name: "softfail", record: "v=spf1 ip4:192.0.2.1 ~all", want: spfNotPass},
		{name: "neutral without all", record: "v=spf1 ip4:192.0.2.1", want: spfNotPass},
		{name: "a with prefix length", record: "v=spf1 a:mail.example.com/24 -all", want: spfPass,
			zone: func(t *testing.T, z *testkit.Zone) { z.Add(t, "mail.example.com. 300 IN A 203.0.113.200") }},
		{name: "a of the current domain", record: "v=spf1 a -all", want: spfPass,
			zone: func(t *testing.T, z *testkit.Zone) { z.Add(t, "example.com. 300 IN A 203.0.113.5") }},
		{name: "a of another address", record: "v=spf1 a -all", want: spfNotPass,
			zone: func(t *testing.T, z *testkit.Zone) { z.Add(t, "example.com. 300 IN A 203.0.113.6") }},
		{name: "aaaa for IPv6 with dual prefix", ip: "2001:db8::5", record: "v=spf1 a:mail.example.com/24//64 -all", want: spfPass,
			zone: func(t *testing.T, z *testkit.Zone) { z.Add(t, "mail.example.com. 300 IN AAAA 2001:db8::99") }},
		{name: "mx", record: "v=spf1 mx -all", want: spfPass,
			zone: func(t *testing.T, z *testkit.Zone) {
				z.Add(t, "example.com. 300 IN MX 10 mx1.example.com.", "example.com. 300 IN MX 20 mx2.example.com.",
					"mx1.example.com. 300 IN A 192.0.2.1", "mx2.example.com. 300 IN A 203.0.113.5")
			}},
		{name: "mx with more than 10 names", record: "v=spf1 mx -all", want: spfPermError, why: "11 MX records",
			zone: func(t *testing.T, z *testkit.Zone) {
				for i := range 11 {
					z.Add(t, fmt.Sprintf("example.com. 300 IN MX %d mx%d.example.com.", i, i))
				}
			}},
		{name: "ptr", record: "v=spf1 ptr:example.com -all", want: spfPass,
			zone: func(t *testing.T, z *testkit.Zone) {
				z.Add(t, "5.113.0.203.in-addr.arpa. 300 IN PTR out.example.com.", "out.example.com. 300 IN A 203.0.113.5")
			}},
		{name: "ptr not confirmed", record: "v=spf1 ptr:example.com -all", want: spfNotPass,
			zone: func(t *testing.T, z *testkit.Zone) {
				z.Add(t, "5.113.0.203.in-addr.arpa. 300 IN PTR out.example.com.", "out.example.com. 300 IN A 192.0.2.9")
			}},
		{name: "exists", record: "v=spf1 exists:ok.example.com -all", want: spfPass,
			zone: func(t *testing.T, z *testkit.Zone) { z.Add(t, "ok.example.com. 300 IN A 127.0.0.2") }},
		{name: "all before redirect wins", record: "v=spf1 -all redirect=_spf.example.net", want: spfNotPass},
		{name: "include chain of 10 lookups", record: "v=spf1 include:" + "_i0.example.net -all", want: spfPass,
			zone: func(t *testing.T, z *testkit.Zone) { includeChain(z, 10, "v=spf1 ip4:203.0.113.5 -all") }},
		{name: "include chain of 11 lookups", record: "v=spf1 include:" + "_i0.example.net -all", want: spfPermError,
			why:  "more than 10 DNS lookups",
			zone: func(t *testing.T, z *testkit.Zone) { includeChain(z, 11, "v=spf1 ip4:203.0.113.5 -all") }},
		{name: "11 includes before the address", record: many(11, "include:_sN.example.net") + " ip4:203.0.113.5 -all",
			want: spfPermError, why: "the 11th being include:_s10.example.net",
			zone: func(t *testing.T, z *testkit.Zone) {
				for i := range 11 {
					z.SetTXT(fmt.Sprintf("_s%d.example.net", i), "v=spf1 ip4:192.0.2.1 -all")
				}
			}},
		{name: "11 includes after the address", record: "v=spf1 ip4:203.0.113.5 " + many(11, "include:_sN.example.net")[7:] + " -all",
			want: spfPass},
		{name: "a, mx, ptr, exists and redirect count", record: "v=spf1 " + many(3, "a:aN.example.com")[7:] + " " + many(3, "mx:mN.example.com")[7:] +
			" " + many(2, "ptr:pN.example.com")[7:] + " " + many(2, "exists:eN.example.com")[7:] + " redirect=_r.example.net",
			want: spfPermError, why: "the 11th being redirect=_r.example.net",
			zone: func(t *testing.T, z *testkit.Zone) {
				for i := range 3 {
					z.Add(t, fmt.Sprintf("a%d.example.com. 300 IN A 192.0.2.1", i), fmt.Sprintf("m%d.example.com. 300 IN MX 10 a0.example.com.", i))
				}
				z.Add(t, "5.113.0.203.in-addr.arpa. 300 IN PTR out.example.com.", "out.example.com. 300 IN A 203.0.113.5")
				z.SetTXT("_r.example.net", "v=spf1 +all")
			}},
		{name: "two void lookups", record: "v=spf1 a:gone1.example.com a:gone2.example.com ip4:203.0.113.5 -all", want: spfPass},
		{name: "three void lookups", record: "v=spf1 a:gone1.example.com mx:gone2.example.com exists:gone3.example.com ip4:203.0.113.5 -all",
			want: spfPermError, why: "more than 2 of its lookups find nothing"},
		{name: "include of nothing", record: "v=spf1 include:gone.example.net ip4:203.0.113.5 -all", want: spfPermError,
			why: "without an SPF record"},
		{name: "include with two records", record: "v=spf1 include:_spf.example.net -all", want: spfPermError, why: "2 SPF records",
			zone: func(t *testing.T, z *testkit.Zone) { z.SetTXT("_spf.example.net", "v=spf1 -all", "v=spf1 +all") }},
		{name: "include of an invalid record", record: "v=spf1 include:_spf.example.net -all", want: spfPermError, why: "invalid",
			zone: func(t *testing.T, z *testkit.Zone) { z.SetTXT("_spf.example.net", "v=spf1 bogus -all") }},
		{name: "include that fails", record: "v=spf1 include:_spf.example.net -all", want: spfTempError, why: "SERVFAIL",
			zone: func(t *testing.T, z *testkit.Zone) { z.Fail("_spf.example.net", dns.RcodeServerFailure) }},
		{name: "a macro is not evaluated", record: "v=spf1 exists:%{i}.bl.example.net -all", want: spfUnsure},
		{name: "a macro after a match does not matter", record: "v=spf1 ip4:203.0.113.5 exists:%{i}.bl.example.net -all", want: spfPass},
		{name: "a fail before an unknown include", record: "v=spf1 -ip4:203.0.113.5 include:%{d}.example.net +all", want: spfNotPass},
		{name: "an unknown include before a fail", record: "v=spf1 include:%{d}.example.net -ip4:203.0.113.5 +all", want: spfUnsure},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			z := testkit.StartZone(t)
			if tc.zone != nil {
				tc.zone(t, z)
			}
			checker, err := NewChecker(Config{Hostname: testHost, DNSServers: []string{z.Addr}, DNSTimeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			terms, err := parseSPF(tc.record)
			if err != nil {
				t.Fatalf("parse %q: %v", tc.record, err)
			}
			addr := tc.ip
			if addr == "" {
				addr = ip
			}
			e := &spfEval{ctx: context.Background(), c: checker, target: spfTarget{ip: netip.MustParseAddr(addr)}}
			if got := e.checkHost("example.com", terms); got != tc.want {
				t.Errorf("%q: result %d, want %d (%s)", tc.record, got, tc.want, e.why)
			}
			if !strings.Contains(e.why, tc.why) {
				t.Errorf("reason %q does not contain %q", e.why, tc.why)
			}
		})
	}
}

func TestParseSPFErrors(t *testing.T) {
	for _, r := range []string{
		"v=spf1 a:example.com/33", "v=spf1 mx//129", "v=spf1 ptr/24", "v=spf1 include:", "v=spf1 include:x.example/24",
		"v=spf1 all:x", "v=spf1 ip4", "v=spf1 redirect=a.example redirect=b.example", "v=spf1 a:", "v=spf1 foo:bar",
	} {
		if _, err := parseSPF(r); err == nil {
			t.Errorf("parseSPF(%q) accepted it", r)
		}
	}
	terms, err := parseSPF("v=spf1 a/24 mx:example.com//64 -a:x.example/8//48 exp=explain.example unknown=x")
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprintf("%s %d %d|%s %s %d %d|%c %s %d %d", terms[0].name, terms[0].v4, terms[0].v6, terms[1].name, terms[1].arg, terms[1].v4, terms[1].v6,
		terms[2].qualifier, terms[2].arg, terms[2].v4, terms[2].v6)
	if got != "a 24 128|mx example.com 32 64|- x.example 8 48" || len(terms) != 5 {
		t.Errorf("parsed %s (%d terms)", got, len(terms))
	}
}

// The finding for a record over the lookup limit names the cause and
// proposes Sesame's terms first.
func TestCheckSPFOverLookupLimit(t *testing.T) {
	c := testkit.NewClock(t)
	d := newDomain(t, "example.com", c.Now(), store.AlgEd25519)
	z := testkit.StartZone(t)
	cfg := testConfig(z, c, nil)
	cfg.SourceIPs = []string{"203.0.113.5"}
	publishAll(t, z, cfg, d)
	var b strings.Builder
	b.WriteString("v=spf1")
	for i := range 11 {
		z.SetTXT(fmt.Sprintf("_s%d.example.net", i), "v=spf1 ip4:192.0.2.1 -all")
		fmt.Fprintf(&b, " include:_s%d.example.net", i)
	}
	z.SetTXT("example.com", b.String()+" ip4:203.0.113.5 -all")
	checker, err := NewChecker(cfg)
	if err != nil {
		t.Fatal(err)
	}
	findings, err := checker.Check(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	f := findings[iSPF]
	if f.Status != StatusWrong || !strings.Contains(f.Advice, "more than 10 DNS lookups") ||
		!strings.Contains(f.Advice, `"v=spf1 ip4:203.0.113.5 include:_s0.example.net`) {
		t.Errorf("SPF over the lookup limit: %s, %s", f.Status, f.Advice)
	}
}

// The evaluations for each of Sesame's addresses share the answers: an
// include is asked once, not once per address.
func TestCheckSPFAsksOnce(t *testing.T) {
	c := testkit.NewClock(t)
	d := newDomain(t, "example.com", c.Now(), store.AlgEd25519)
	z := testkit.StartZone(t)
	cfg := testConfig(z, c, nil) // three source addresses
	publishAll(t, z, cfg, d)
	z.SetTXT("example.com", "v=spf1 include:_spf.example.net -all")
	z.SetTXT("_spf.example.net", "v=spf1 ip4:203.0.113.5 ip6:2001:db8::5 ip4:10.0.0.7 -all")
	checker, err := NewChecker(cfg)
	if err != nil {
		t.Fatal(err)
	}
	findings, err := checker.Check(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	if f := findings[iSPF]; f.Status != StatusOK {
		t.Errorf("SPF through an include: %s (%s)", f.Status, f.Advice)
	}
	if n := z.CountType("_spf.example.net", dns.TypeTXT); n != 1 {
		t.Errorf("the include was asked %d times for three addresses, want once", n)
	}
}
