package identity

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sesame-mail/sesame/testkit"
)

// FuzzSPF runs DNS text through the SPF parser and evaluator: no panic, and
// a record that passes an address really names it or Sesame's host.
func FuzzSPF(f *testing.F) {
	for _, s := range []string{
		"v=spf1 ip4:203.0.113.5 ~all",
		"v=spf1 include:_spf.google.com ip6:2001:db8::/32 -all",
		"v=spf1 a mx/24 a:relay.example.net/24 ?all redirect=x.example exp=y",
		"v=spf1 -ip4:203.0.113.0/24 +all",
		"v=spf1 ip4:1.2.3.4/40 ip6: all:x =x a=b",
		"v=spf1 \x00 ~",
	} {
		f.Add(s)
	}
	// An empty zone: every lookup finds nothing, quickly.
	z := testkit.StartZone(f)
	checker, err := NewChecker(Config{Hostname: testHost, DNSServers: []string{z.Addr}, DNSTimeout: time.Second})
	if err != nil {
		f.Fatal(err)
	}
	target := spfTarget{ip: netip.MustParseAddr("203.0.113.5"), name: "ip4:203.0.113.5"}
	f.Fuzz(func(t *testing.T, record string) {
		if !isSPF(record) {
			return
		}
		terms, err := parseSPF(record)
		if err != nil {
			return
		}
		e := &spfEval{ctx: context.Background(), c: checker, target: target}
		res := e.checkHost("example.com", terms)
		if res == spfPass && !strings.Contains(record, "ip4:") && !strings.Contains(strings.ToLower(record), "all") &&
			!strings.Contains(strings.ToLower(record), testHost) {
			t.Errorf("%q passes %s without naming it", record, target.ip)
		}
		if (res == spfPermError || res == spfTempError) && e.why == "" {
			t.Errorf("%q: result %d without a reason", record, res)
		}
		e = &spfEval{ctx: context.Background(), c: checker, target: spfTarget{name: "a:" + testHost}}
		e.checkHost("example.com", terms)
	})
}

// FuzzTXT runs record text through the TXT unescaper and the tag parser.
func FuzzTXT(f *testing.F) {
	for _, s := range []string{`v=DKIM1; k=rsa; p=MIIB\009IjAN`, `\`, `\25`, `\256x`, `a\"b;=;p==x`, "v=DMARC1;p=none"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u := unescapeTXT(s)
		if len(u) > len(s) {
			t.Errorf("unescaping %q made it longer: %q", s, u)
		}
		if !strings.Contains(s, `\`) && u != s {
			t.Errorf("%q without escapes changed to %q", s, u)
		}
		m, order := tags(u)
		if len(m) != len(order) {
			t.Errorf("tags(%q): %d tags, %d in order", u, len(m), len(order))
		}
	})
}

// FuzzAddress runs operator input through the address normalizer and the
// Authorizer's canonical form: what normalizeAddress accepts is stable.
func FuzzAddress(f *testing.F) {
	for _, s := range []string{"Alice@Example.COM", "jörg@bücher.example", "a@b", "@", "a@@b.c", "x@-a.example", "x@xn--bcher-kva.example."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := normalizeAddress(s)
		if err != nil {
			return
		}
		if again, err := normalizeAddress(n); err != nil || again != n {
			t.Errorf("normalizeAddress(%q) = %q, which normalizes to %q, %v", s, n, again, err)
		}
		if c, _, ok := canonical(n); !ok || c != n {
			t.Errorf("canonical(%q) = %q, %v", n, c, ok)
		}
	})
}
