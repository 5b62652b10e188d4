package identity

import (
	"context"
	"strings"
	"testing"

	"github.com/sesame-mail/sesame/store"
	"github.com/sesame-mail/sesame/testkit"
)

func TestCheckDMARCPolicy(t *testing.T) {
	c := testkit.NewClock(t)
	tests := []struct {
		name   string
		domain string
		dmarc  map[string]string // name → value; "" removes
		status string
		found  string
		advice string
	}{
		{name: "own record", domain: "news.example.com", dmarc: map[string]string{"_dmarc.news.example.com": "v=DMARC1; p=reject"},
			status: StatusOK, found: "v=DMARC1; p=reject"},
		{name: "organizational domain's record", domain: "news.example.com",
			dmarc:  map[string]string{"_dmarc.news.example.com": "", "_dmarc.example.com": "v=DMARC1; p=none; sp=quarantine"},
			status: StatusOK, found: "v=DMARC1; p=none; sp=quarantine",
			advice: "news.example.com has no DMARC record of its own; receivers apply the one of its organizational domain, _dmarc.example.com, with sp=quarantine"},
		{name: "policy none", domain: "example.com", dmarc: map[string]string{"_dmarc.example.com": "v=DMARC1; p=none"},
			status: StatusOK, advice: "policy none: receivers deliver mail that fails DMARC as before and only report it"},
		{name: "organizational domain's record, invalid sp", domain: "news.example.co.uk",
			dmarc:  map[string]string{"_dmarc.news.example.co.uk": "", "_dmarc.example.co.uk": "v=DMARC1; p=reject; sp=nope"},
			status: StatusWrong, advice: "the DMARC record at _dmarc.example.co.uk has sp=nope, not a policy"},
		{name: "none anywhere", domain: "news.example.com", dmarc: map[string]string{"_dmarc.news.example.com": ""},
			status: StatusMissing, advice: "publish TXT _dmarc.news.example.com"},
		{name: "no policy", domain: "example.com", dmarc: map[string]string{"_dmarc.example.com": "v=DMARC1; rua=mailto:r@example.com"},
			status: StatusWrong, advice: "has no p=, not a policy"},
		{name: "unknown policy", domain: "example.com", dmarc: map[string]string{"_dmarc.example.com": "v=DMARC1; p=monitor"},
			status: StatusWrong, advice: "has p=monitor"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := newDomain(t, tc.domain, c.Now(), store.AlgEd25519)
			z := testkit.StartZone(t)
			cfg := testConfig(z, c, nil)
			cfg.BulkSender = true
			publishAll(t, z, cfg, d)
			for name, v := range tc.dmarc {
				if v == "" {
					z.SetTXT(name)
				} else {
					z.SetTXT(name, v)
				}
			}
			checker, err := NewChecker(cfg)
			if err != nil {
				t.Fatal(err)
			}
			findings, err := checker.Check(context.Background(), d)
			if err != nil {
				t.Fatal(err)
			}
			f := findings[iDMARC]
			if f.Status != tc.status || strings.Join(f.Found, "|") != tc.found && tc.found != "" || !strings.Contains(f.Advice, tc.advice) {
				t.Errorf("DMARC of %s: %s, found %q, advice %q; want %s, %q, %q", tc.domain, f.Status, f.Found, f.Advice, tc.status, tc.found, tc.advice)
			}
		})
	}
}

func TestAuditAlignment(t *testing.T) {
	c := testkit.NewClock(t)
	d := newDomain(t, "example.com", c.Now(), store.AlgEd25519)
	tests := []struct {
		name      string
		dmarc     string
		signedRP  bool
		spfStatus string
		spfName   string
		advice    string
	}{
		{name: "relaxed, signed return path", dmarc: "v=DMARC1; p=reject", signedRP: true, spfStatus: StatusOK, spfName: "bounce.example.com"},
		{name: "strict, application's return path", dmarc: "v=DMARC1; p=reject; aspf=s", spfStatus: StatusOK, spfName: "example.com"},
		{name: "strict, signed return path", dmarc: "v=DMARC1; p=reject; aspf=s; adkim=s", signedRP: true, spfStatus: StatusWarning,
			spfName: "bounce.example.com",
			advice:  `the return path bounce.example.com never has, so DMARC passes on the DKIM signature alone and fails where a forwarder breaks it; drop aspf=s (relaxed is the default): "v=DMARC1; p=reject; adkim=s"`},
		{name: "no DMARC: relaxed", dmarc: "", signedRP: true, spfStatus: StatusOK, spfName: "bounce.example.com"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			z := testkit.StartZone(t)
			cfg := testConfig(z, c, nil)
			cfg.SignedReturnPath = tc.signedRP
			publishAll(t, z, cfg, d)
			if tc.dmarc == "" {
				z.SetTXT("_dmarc.example.com")
			} else {
				z.SetTXT("_dmarc.example.com", tc.dmarc)
			}
			checker, err := NewChecker(cfg)
			if err != nil {
				t.Fatal(err)
			}
			findings, err := checker.Audit(context.Background(), d)
			if err != nil {
				t.Fatal(err)
			}
			if len(findings) != 7 {
				t.Fatalf("%d findings, want the 5 records and 2 alignments", len(findings))
			}
			dk, sp := findings[5], findings[6]
			if dk.Type != "DKIM" || dk.Name != "example.com" || dk.Status != StatusOK {
				t.Errorf("DKIM alignment: %s %s %s (%s)", dk.Type, dk.Name, dk.Status, dk.Advice)
			}
			if sp.Type != "SPF" || sp.Name != tc.spfName || sp.Status != tc.spfStatus || !strings.Contains(sp.Advice, tc.advice) {
				t.Errorf("SPF alignment: %s %s %s (%s); want %s %s (%s)", sp.Type, sp.Name, sp.Status, sp.Advice, tc.spfName, tc.spfStatus, tc.advice)
			}
		})
	}
}

func TestAligned(t *testing.T) {
	for _, tc := range []struct {
		a, from, mode string
		want          bool
	}{
		{"bounce.example.com", "example.com", "r", true},
		{"bounce.example.com", "example.com", "s", false},
		{"Example.COM", "example.com", "s", true},
		{"bounce.example.co.uk", "news.example.co.uk", "r", true},
		{"example.co.uk", "other.co.uk", "r", false},
		{"mail.example.net", "example.com", "r", false},
	} {
		if got := aligned(tc.a, tc.from, tc.mode); got != tc.want {
			t.Errorf("aligned(%s, %s, %s) = %v", tc.a, tc.from, tc.mode, got)
		}
	}
}
