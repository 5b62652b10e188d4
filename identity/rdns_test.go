package identity

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"
	"github.com/sesame-mail/sesame/testkit"
)

func TestCheckIPs(t *testing.T) {
	c := testkit.NewClock(t)
	const rev4 = "5.113.0.203.in-addr.arpa."
	const rev6 = "5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."
	tests := []struct {
		name   string
		ips    []string
		zone   []string
		fail   string // a name answering SERVFAIL
		want   []string
		advice string // a substring of the first finding's advice
	}{
		{name: "fcrdns and ehlo match", ips: []string{"203.0.113.5", "2001:db8::5"},
			zone: []string{rev4 + " 300 IN PTR relay.example.net.", rev6 + " 300 IN PTR relay.example.net.",
				"relay.example.net. 300 IN A 203.0.113.5", "relay.example.net. 300 IN AAAA 2001:db8::5"},
			want: []string{StatusOK, StatusOK}},
		{name: "no PTR", ips: []string{"203.0.113.5"}, want: []string{StatusMissing},
			advice: `203.0.113.5 has no PTR record; ask whoever runs the network of 203.0.113.5 (your provider's "reverse DNS" setting) to set its PTR record to relay.example.net, and publish A relay.example.net 203.0.113.5`},
		{name: "PTR that does not resolve back", ips: []string{"203.0.113.5"},
			zone: []string{rev4 + " 300 IN PTR host-5.provider.example.", "host-5.provider.example. 300 IN A 198.51.100.9"},
			want: []string{StatusWrong},
			advice: "names host-5.provider.example (198.51.100.9), which does not resolve back to 203.0.113.5, so receivers see no valid reverse DNS (FCrDNS); " +
				"publish A host-5.provider.example 203.0.113.5, or ask"},
		{name: "PTR name without an address", ips: []string{"203.0.113.5"},
			zone: []string{rev4 + " 300 IN PTR gone.example."}, want: []string{StatusWrong}, advice: "gone.example (no A record)"},
		{name: "valid rDNS, another EHLO name that holds the address", ips: []string{"203.0.113.5"},
			zone: []string{rev4 + " 300 IN PTR mail.example.net.", "mail.example.net. 300 IN A 203.0.113.5", "relay.example.net. 300 IN A 203.0.113.5"},
			want: []string{StatusWarning}, advice: `set hostname = "mail.example.net" in the configuration`},
		{name: "valid rDNS, EHLO name elsewhere", ips: []string{"203.0.113.5"},
			zone: []string{rev4 + " 300 IN PTR mail.example.net.", "mail.example.net. 300 IN A 203.0.113.5"},
			want: []string{StatusWrong}, advice: "Sesame says EHLO relay.example.net, which neither is the PTR name of 203.0.113.5 (mail.example.net) nor resolves to it"},
		{name: "lookup fails", ips: []string{"203.0.113.5"}, fail: rev4, want: []string{StatusUnknown}, advice: "SERVFAIL"},
		{name: "no source IPs: the host name's addresses", zone: []string{"relay.example.net. 300 IN A 203.0.113.5", rev4 + " 300 IN PTR relay.example.net."},
			want: []string{StatusOK}},
		{name: "no source IPs, no address", want: []string{StatusMissing}, advice: "has no A or AAAA record"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			z := testkit.StartZone(t, tc.zone...)
			if tc.fail != "" {
				z.Fail(tc.fail, dns.RcodeServerFailure)
			}
			cfg := testConfig(z, c, nil)
			cfg.SourceIPs = tc.ips
			checker, err := NewChecker(cfg)
			if err != nil {
				t.Fatal(err)
			}
			findings, err := checker.CheckIPs(context.Background(), nil)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, f := range findings {
				got = append(got, f.Status)
				if f.Status != StatusOK && f.Advice == "" {
					t.Errorf("%s %s: %s without advice", f.Type, f.Name, f.Status)
				}
			}
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Errorf("statuses %v, want %v (%+v)", got, tc.want, findings)
			}
			if !strings.Contains(findings[0].Advice, tc.advice) {
				t.Errorf("advice %q does not contain %q", findings[0].Advice, tc.advice)
			}
			if tc.fail != "" && findings[0].LookupErr == nil {
				t.Error("a failed lookup without LookupErr")
			}
		})
	}
	// An address given explicitly is checked whatever is configured.
	z := testkit.StartZone(t, "9.2.0.192.in-addr.arpa. 300 IN PTR relay.example.net.", "relay.example.net. 300 IN A 192.0.2.9")
	checker, err := NewChecker(testConfig(z, c, nil))
	if err != nil {
		t.Fatal(err)
	}
	findings, err := checker.CheckIPs(context.Background(), []netip.Addr{netip.MustParseAddr("192.0.2.9")})
	if err != nil || len(findings) != 1 || findings[0].Status != StatusOK || findings[0].Name != "9.2.0.192.in-addr.arpa" {
		t.Errorf("CheckIPs(192.0.2.9): %+v, %v", findings, err)
	}
}
