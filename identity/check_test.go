package identity

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/sesame-mail/sesame/store"
	"github.com/sesame-mail/sesame/testkit"
)

// Indexes of a one-key domain's records, in the order of Records.
const (
	iDKIM = iota
	iSPF
	iMX
	iBounceSPF
	iDMARC
)

func TestCheck(t *testing.T) {
	c := testkit.NewClock(t)
	d := newDomain(t, "example.com", c.Now(), store.AlgEd25519)
	other := newDomain(t, "example.com", c.Now(), store.AlgEd25519) // a different key, same selector
	dk, otherKey := dkimRecord(t, d, 0), dkimRecord(t, other, 0)
	pOf := func(v string) string { return v[strings.Index(v, "p=")+2:] }

	tests := []struct {
		name   string
		noIPs  bool                                // configure no source IP
		bulk   bool                                // configure a bulk sender
		ips    []string                            // configure these source IPs instead of testConfig's
		change func(t *testing.T, z *testkit.Zone) // after publishing every record right
		index  int
		status string
		found  []string
		advice string // a substring of the advice
	}{
		{name: "dkim ok", index: iDKIM, status: StatusOK, found: []string{dk.Value}},
		{name: "dkim missing", index: iDKIM, status: StatusMissing,
			change: func(t *testing.T, z *testkit.Zone) { z.SetTXT(dk.Name) },
			advice: `publish TXT ` + dk.Name + ` "` + dk.Value + `"`},
		{name: "dkim missing but other names exist", index: iDKIM, status: StatusMissing,
			change: func(t *testing.T, z *testkit.Zone) { z.SetTXT(dk.Name, "v=spf1 -all"); z.SetTXT(dk.Name) }},
		{name: "dkim wrong key", index: iDKIM, status: StatusWrong,
			change: func(t *testing.T, z *testkit.Zone) { z.SetTXT(dk.Name, otherKey.Value) },
			found:  []string{otherKey.Value}, advice: "another key"},
		{name: "dkim revoked", index: iDKIM, status: StatusWrong,
			change: func(t *testing.T, z *testkit.Zone) { z.SetTXT(dk.Name, "v=DKIM1; k=ed25519; p=") }, advice: "revoked"},
		{name: "dkim wrong algorithm", index: iDKIM, status: StatusWrong,
			change: func(t *testing.T, z *testkit.Zone) { z.SetTXT(dk.Name, "v=DKIM1; p="+pOf(dk.Value)) }},
		{name: "dkim not a key", index: iDKIM, status: StatusWrong,
			change: func(t *testing.T, z *testkit.Zone) { z.SetTXT(dk.Name, "hello") }, advice: "not a DKIM key record"},
		{name: "dkim split into strings, tags reordered, whitespace", index: iDKIM, status: StatusOK,
			change: func(t *testing.T, z *testkit.Zone) {
				p := pOf(dk.Value)
				z.SetRRs(dk.Name, dns.TypeTXT, testkit.TXT(dk.Name, "p = "+p[:10], " "+p[10:20]+"\t", p[20:]+" ; k=ed25519;v=DKIM1 ;"))
			}},
		{name: "dkim among several records", index: iDKIM, status: StatusOK,
			change: func(t *testing.T, z *testkit.Zone) { z.SetTXT(dk.Name, otherKey.Value, dk.Value) }, advice: "remove all but"},
		{name: "dkim through a CNAME", index: iDKIM, status: StatusOK,
			change: func(t *testing.T, z *testkit.Zone) {
				z.SetTXT(dk.Name)
				z.Set(t, dk.Name, dns.TypeCNAME, dk.Name+". 300 IN CNAME keys.provider.example.")
				z.SetTXT("keys.provider.example", dk.Value)
			}},
		{name: "dkim servfail", index: iDKIM, status: StatusUnknown,
			change: func(t *testing.T, z *testkit.Zone) { z.Fail(dk.Name, dns.RcodeServerFailure) }, advice: "SERVFAIL"},

		{name: "spf ok", index: iSPF, status: StatusOK, found: []string{"v=spf1 ip4:203.0.113.5 ip6:2001:db8::5 ip4:10.0.0.7 ~all"}},
		{name: "spf missing", index: iSPF, status: StatusMissing,
			change: func(t *testing.T, z *testkit.Zone) { z.SetTXT("example.com", "google-site-verification=abc") },
			advice: `publish TXT example.com "v=spf1 ip4:203.0.113.5 ip6:2001:db8::5 ip4:10.0.0.7 ~all"`},
		{name: "spf wrong", index: iSPF, status: StatusWrong,
			change: func(t *testing.T, z *testkit.Zone) {
				z.SetTXT("example.com", "v=spf1 ip4:198.51.100.1 ip6:2001:db8::5 ip4:10.0.0.7 -all")
			},
			advice: `"v=spf1 ip4:203.0.113.5 ip4:198.51.100.1 ip6:2001:db8::5 ip4:10.0.0.7 -all"`},
		{name: "spf all before the address", index: iSPF, status: StatusWrong,
			change: func(t *testing.T, z *testkit.Zone) {
				z.SetTXT("example.com", "v=spf1 ~all ip4:203.0.113.5 ip6:2001:db8::5")
			}},
		{name: "spf address with a fail qualifier", index: iSPF, status: StatusWrong,
			change: func(t *testing.T, z *testkit.Zone) {
				z.SetTXT("example.com", "v=spf1 -ip4:203.0.113.5 ip6:2001:db8::5 +all")
			}},
		{name: "spf cidr and a:hostname", index: iSPF, status: StatusOK,
			change: func(t *testing.T, z *testkit.Zone) {
				z.SetTXT("example.com", "v=spf1 mx ip4:203.0.113.0/24 a:RELAY.example.net. -all")
				z.Add(t, "relay.example.net. 300 IN A 10.0.0.7", "relay.example.net. 300 IN AAAA 2001:db8::5")
			}},
		{name: "spf a:hostname without the address", index: iSPF, status: StatusWrong,
			change: func(t *testing.T, z *testkit.Zone) {
				z.SetTXT("example.com", "v=spf1 ip4:203.0.113.0/24 a:relay.example.net -all")
				z.Add(t, "relay.example.net. 300 IN A 10.0.0.7")
			},
			advice: `does not allow Sesame's ip6:2001:db8::5`},
		{name: "spf two records", index: iSPF, status: StatusWrong,
			change: func(t *testing.T, z *testkit.Zone) {
				z.SetTXT("example.com", "v=spf1 ip4:203.0.113.5 ip6:2001:db8::5 ~all", "v=spf1 include:_spf.google.com ~all")
			}, advice: "RFC 7208 §4.5"},
		{name: "spf include without the addresses", index: iSPF, status: StatusWrong,
			change: func(t *testing.T, z *testkit.Zone) {
				z.SetTXT("example.com", "v=spf1 include:_spf.google.com ~all")
				z.SetTXT("_spf.google.com", "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 ~all")
			},
			advice: `does not allow Sesame's ip4:203.0.113.5 ip4:10.0.0.7; change it to "v=spf1 ip4:203.0.113.5 ip4:10.0.0.7 include:_spf.google.com ~all"`},
		{name: "spf include with the addresses", index: iSPF, status: StatusOK,
			change: func(t *testing.T, z *testkit.Zone) {
				z.SetTXT("example.com", "v=spf1 include:_spf.example.net -all")
				z.SetTXT("_spf.example.net", "v=spf1 include:_ip4.example.net ip6:2001:db8::/32 -all")
				z.SetTXT("_ip4.example.net", "v=spf1 ip4:203.0.113.0/24 ip4:10.0.0.0/8 -all")
			}},
		{name: "spf include of a domain without SPF", index: iSPF, status: StatusWrong,
			change: func(t *testing.T, z *testkit.Zone) { z.SetTXT("example.com", "v=spf1 include:_spf.example.net ~all") },
			advice: "include:_spf.example.net names a domain without an SPF record"},
		{name: "spf include before the address", index: iSPF, status: StatusOK,
			change: func(t *testing.T, z *testkit.Zone) {
				z.SetTXT("example.com", "v=spf1 include:_spf.google.com ip4:203.0.113.5 ip6:2001:db8::5 ip4:10.0.0.0/8 -all")
				z.SetTXT("_spf.google.com", "v=spf1 ip4:192.0.2.0/24 ~all")
			}},
		{name: "spf include with a macro", index: iSPF, status: StatusUnknown,
			change: func(t *testing.T, z *testkit.Zone) {
				z.SetTXT("example.com", "v=spf1 include:%{ir}._spf.example.net ~all")
			},
			advice: "depends on include:%{ir}._spf.example.net, which Sesame cannot evaluate"},
		{name: "spf include that fails to resolve", index: iSPF, status: StatusUnknown,
			change: func(t *testing.T, z *testkit.Zone) {
				z.SetTXT("example.com", "v=spf1 include:_spf.example.net ~all")
				z.Fail("_spf.example.net", dns.RcodeServerFailure)
			},
			advice: "SERVFAIL"},
		{name: "spf redirect", index: iSPF, status: StatusOK,
			change: func(t *testing.T, z *testkit.Zone) {
				z.SetTXT("example.com", "v=spf1 redirect=_spf.example.org")
				z.SetTXT("_spf.example.org", "v=spf1 ip4:203.0.113.5 ip6:2001:db8::5 ip4:10.0.0.7 -all")
			}},
		{name: "spf redirect to nothing", index: iSPF, status: StatusWrong,
			change: func(t *testing.T, z *testkit.Zone) { z.SetTXT("example.com", "v=spf1 redirect=_spf.example.org") },
			advice: "redirect=_spf.example.org names a domain without an SPF record"},
		{name: "spf invalid", index: iSPF, status: StatusWrong,
			change: func(t *testing.T, z *testkit.Zone) { z.SetTXT("example.com", "v=spf1 ip4:203.0.113.500 ~all") }, advice: "invalid"},
		// Configured addresses count whatever their range: loopback in
		// tests, private ones on a LAN.
		{name: "spf loopback source IP", ips: []string{"127.0.0.6"}, index: iSPF, status: StatusOK,
			change: func(t *testing.T, z *testkit.Zone) { z.SetTXT("example.com", "v=spf1 ip4:127.0.0.6 -all") }},
		{name: "spf loopback source IP not allowed", ips: []string{"127.0.0.6"}, index: iSPF, status: StatusWrong,
			change: func(t *testing.T, z *testkit.Zone) { z.SetTXT("example.com", "v=spf1 ip4:127.0.0.7 -all") },
			advice: `does not allow Sesame's ip4:127.0.0.6; change it to "v=spf1 ip4:127.0.0.6 ip4:127.0.0.7 -all"`},
		{name: "spf private and IPv6 loopback source IPs", ips: []string{"10.1.2.3", "::1"}, index: iSPF, status: StatusOK,
			change: func(t *testing.T, z *testkit.Zone) { z.SetTXT("example.com", "v=spf1 ip6:::1 ip4:10.0.0.0/8 ~all") }},
		{name: "spf without public IPs: a:hostname", noIPs: true, index: iSPF, status: StatusOK},
		{name: "spf without public IPs: ip4", noIPs: true, index: iSPF, status: StatusUnknown,
			change: func(t *testing.T, z *testkit.Zone) { z.SetTXT("example.com", "v=spf1 ip4:203.0.113.5 ~all") }, advice: "source_ips"},
		{name: "spf without public IPs: wrong", noIPs: true, index: iSPF, status: StatusWrong,
			change: func(t *testing.T, z *testkit.Zone) { z.SetTXT("example.com", "v=spf1 -all") }, advice: `"v=spf1 a:relay.example.net -all"`},

		{name: "mail from mx ok", index: iMX, status: StatusOK, found: []string{"10 relay.example.net"}},
		{name: "mail from mx missing", index: iMX, status: StatusMissing,
			change: func(t *testing.T, z *testkit.Zone) { z.Set(t, "bounce.example.com", dns.TypeMX) },
			advice: "publish MX bounce.example.com 10 relay.example.net"},
		{name: "mail from mx wrong", index: iMX, status: StatusWrong,
			change: func(t *testing.T, z *testkit.Zone) {
				z.Set(t, "bounce.example.com", dns.TypeMX, "bounce.example.com. 300 IN MX 5 mx.example.com.")
			},
			found: []string{"5 mx.example.com"}, advice: "do not point at relay.example.net"},
		{name: "mail from spf wrong", index: iBounceSPF, status: StatusWrong,
			change: func(t *testing.T, z *testkit.Zone) { z.SetTXT("bounce.example.com", "v=spf1 -all") }},

		{name: "dmarc ok, any policy", index: iDMARC, status: StatusOK,
			change: func(t *testing.T, z *testkit.Zone) { z.SetTXT("_dmarc.example.com", "v=DMARC1;p=reject") }},
		{name: "dmarc missing", bulk: true, index: iDMARC, status: StatusMissing,
			change: func(t *testing.T, z *testkit.Zone) { z.SetTXT("_dmarc.example.com") },
			advice: `publish TXT _dmarc.example.com "v=DMARC1; p=none; rua=mailto:dmarc-reports@example.com"; Gmail, Yahoo and Outlook.com refuse`},
		{name: "dmarc missing, not a bulk sender", index: iDMARC, status: StatusWarning,
			change: func(t *testing.T, z *testkit.Zone) { z.SetTXT("_dmarc.example.com") },
			advice: `publish TXT _dmarc.example.com "v=DMARC1; p=none; rua=mailto:dmarc-reports@example.com"; Gmail, Yahoo and Outlook.com require DMARC of bulk senders`},
		{name: "dmarc not dmarc", bulk: true, index: iDMARC, status: StatusMissing,
			change: func(t *testing.T, z *testkit.Zone) { z.SetTXT("_dmarc.example.com", "p=none; v=DMARC1") }},
		{name: "dmarc two records", index: iDMARC, status: StatusWrong,
			change: func(t *testing.T, z *testkit.Zone) {
				z.SetTXT("_dmarc.example.com", "v=DMARC1; p=none", "v=DMARC1; p=reject")
			}},
		{name: "dmarc timeout", index: iDMARC, status: StatusUnknown,
			change: func(t *testing.T, z *testkit.Zone) { z.Fail("_dmarc.example.com", dns.RcodeRefused) }, advice: "REFUSED"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			z := testkit.StartZone(t)
			cfg := testConfig(z, c, nil)
			if tc.noIPs {
				cfg.SourceIPs = nil
			}
			if tc.ips != nil {
				cfg.SourceIPs = tc.ips
			}
			cfg.BulkSender = tc.bulk
			publishAll(t, z, cfg, d)
			if tc.change != nil {
				tc.change(t, z)
			}
			checker, err := NewChecker(cfg)
			if err != nil {
				t.Fatal(err)
			}
			findings, err := checker.Check(context.Background(), d)
			if err != nil {
				t.Fatal(err)
			}
			if len(findings) != 5 {
				t.Fatalf("%d findings, want 5", len(findings))
			}
			f := findings[tc.index]
			if f.Status != tc.status {
				t.Errorf("%s %s: status %q, want %q (found %q, advice %q)", f.Type, f.Name, f.Status, tc.status, f.Found, f.Advice)
			}
			if tc.found != nil && strings.Join(f.Found, "|") != strings.Join(tc.found, "|") {
				t.Errorf("found %q, want %q", f.Found, tc.found)
			}
			if !strings.Contains(f.Advice, tc.advice) {
				t.Errorf("advice %q does not contain %q", f.Advice, tc.advice)
			}
			if f.Status != StatusOK && f.Advice == "" {
				t.Error("no advice for a record that is not ok")
			}
			// The other records stay as published.
			for i, o := range findings {
				if i != tc.index && o.Status != StatusOK && !(tc.index == iSPF && i == iBounceSPF && tc.noIPs) {
					t.Errorf("untouched record %s %s: %s (%s)", o.Type, o.Name, o.Status, o.Advice)
				}
			}
		})
	}
}

// An RSA key is longer than one character-string, and a name with much text
// needs TCP.
func TestCheckRSAOverTCP(t *testing.T) {
	c := testkit.NewClock(t)
	d := newDomain(t, "example.com", c.Now(), store.AlgRSA, store.AlgEd25519)
	z := testkit.StartZone(t)
	cfg := testConfig(z, c, nil)
	publishAll(t, z, cfg, d)
	rsa := dkimRecord(t, d, 0)
	if !strings.Contains(rsa.Value, "k=rsa") || len(rsa.Value) <= 255 {
		t.Fatalf("first key is not a long RSA key: %q", rsa.Value)
	}
	// Enough other text next to the key that the answer exceeds the UDP size.
	var filler []string
	for i := range 8 {
		filler = append(filler, strings.Repeat(string(rune('a'+i)), 200))
	}
	z.SetTXT(rsa.Name, append(filler, rsa.Value)...)

	checker, err := NewChecker(cfg)
	if err != nil {
		t.Fatal(err)
	}
	findings, err := checker.Check(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range findings[:2] {
		if !f.Required || f.Status != StatusOK {
			t.Errorf("DKIM %s: required %v status %s (%s)", f.Name, f.Required, f.Status, f.Advice)
		}
	}
	if z.TCPCount() == 0 {
		t.Error("the truncated answer was not asked again over TCP")
	}
}

func TestCheckTimeout(t *testing.T) {
	c := testkit.NewClock(t)
	d := newDomain(t, "example.com", c.Now(), store.AlgEd25519)
	z := testkit.StartZone(t)
	cfg := testConfig(z, c, nil)
	silent, _ := testkit.SilentDNS(t)
	cfg.DNSServers = []string{silent}
	cfg.DNSTimeout = 100 * time.Millisecond
	checker, err := NewChecker(cfg)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	findings, err := checker.Check(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("Check took %v with a 100ms timeout", el)
	}
	for _, f := range findings {
		if f.Status != StatusUnknown || !strings.Contains(f.Advice, "timeout") {
			t.Errorf("%s %s: %s (%s), want unknown after a timeout", f.Type, f.Name, f.Status, f.Advice)
		}
	}

	// A context that ends is an error, not a finding.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := checker.Check(ctx, d); err == nil {
		t.Error("Check with a cancelled context: no error")
	}
}

func TestNewChecker(t *testing.T) {
	for _, servers := range [][]string{{"127.0.0.1"}, {"dns.example:53"}} {
		if _, err := NewChecker(Config{Hostname: testHost, DNSServers: servers}); err == nil {
			t.Errorf("NewChecker with DNS servers %q: no error", servers)
		}
	}
}
