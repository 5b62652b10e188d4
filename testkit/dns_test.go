package testkit

import (
	"strings"
	"testing"

	"github.com/miekg/dns"
)

func exchange(t *testing.T, z *Zone, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	in, err := dns.Exchange(m, z.Addr)
	if err == nil && in.Truncated {
		in, _, err = (&dns.Client{Net: "tcp"}).Exchange(m, z.Addr)
	}
	if err != nil {
		t.Fatalf("%s %s: %v", name, dns.TypeToString[qtype], err)
	}
	return in
}

func TestZoneAnswers(t *testing.T) {
	z := StartZone(t,
		"a.test. 300 IN A 192.0.2.1",
		"alias.test. 300 IN CNAME a.test.")
	for _, tc := range []struct {
		name   string
		qtype  uint16
		rcode  int
		answer string // the first answer record, "" for none
		soa    bool
	}{
		{"A.Test", dns.TypeA, dns.RcodeSuccess, "a.test.\t300\tIN\tA\t192.0.2.1", false},
		{"a.test", dns.TypeAAAA, dns.RcodeSuccess, "", true}, // NODATA
		{"alias.test", dns.TypeA, dns.RcodeSuccess, "alias.test.\t300\tIN\tCNAME\ta.test.", false},
		{"nowhere.test", dns.TypeA, dns.RcodeNameError, "", true},
	} {
		in := exchange(t, z, tc.name, tc.qtype)
		got := ""
		if len(in.Answer) > 0 {
			got = in.Answer[0].String()
		}
		if in.Rcode != tc.rcode || got != tc.answer || (len(in.Ns) == 1) != tc.soa || !in.RecursionAvailable {
			t.Errorf("%s %s: %s, answer %q, authority %v; want %s, %q, an SOA %v, RA",
				tc.name, dns.TypeToString[tc.qtype], dns.RcodeToString[in.Rcode], got, in.Ns, dns.RcodeToString[tc.rcode], tc.answer, tc.soa)
		}
	}
	if z.Count("a.test") != 2 || z.CountType("A.TEST.", dns.TypeA) != 1 || z.Total() != 4 {
		t.Errorf("counts %d, %d, %d; want 2 for a.test, 1 for a.test A, 4 in all", z.Count("a.test"), z.CountType("a.test", dns.TypeA), z.Total())
	}
}

func TestZoneChanges(t *testing.T) {
	z := StartZone(t)
	z.SetTXT("big.test", strings.Repeat("x", 300), strings.Repeat("y", 300))
	if in := exchange(t, z, "big.test", dns.TypeTXT); len(in.Answer) != 2 || len(in.Answer[0].(*dns.TXT).Txt) != 2 {
		t.Fatalf("answer %v, want two records of two strings each", in.Answer)
	}
	if z.TCPCount() != 1 {
		t.Errorf("%d queries over TCP, want the retry of the truncated answer", z.TCPCount())
	}
	z.Fail("*", dns.RcodeServerFailure)
	if in := exchange(t, z, "big.test", dns.TypeTXT); in.Rcode != dns.RcodeServerFailure || len(in.Answer) != 0 {
		t.Errorf("failing: %s with %d records, want SERVFAIL and none", dns.RcodeToString[in.Rcode], len(in.Answer))
	}
	z.Fail("*", dns.RcodeSuccess)
	z.Remove("big.test", dns.TypeTXT)
	if in := exchange(t, z, "big.test", dns.TypeTXT); in.Rcode != dns.RcodeNameError {
		t.Errorf("removed: %s, want NXDOMAIN", dns.RcodeToString[in.Rcode])
	}
}
