package identity

import (
	"strings"
	"testing"

	"github.com/sesame-mail/sesame/store"
	"github.com/sesame-mail/sesame/testkit"
)

func TestRecords(t *testing.T) {
	c := testkit.NewClock(t)
	d := newDomain(t, "example.com", c.Now(), store.AlgEd25519)
	dk := dkimRecord(t, d, 0)

	cfg := Config{Hostname: "Relay.Example.NET.", SourceIPs: []string{"203.0.113.5", "10.0.0.7", "2001:db8::5", "127.0.0.1", "100.64.1.1"}}
	recs, err := cfg.Records(d)
	if err != nil {
		t.Fatal(err)
	}
	want := []Record{
		{Type: "TXT", Name: dk.Name, Value: dk.Value, Required: true},
		{Type: "TXT", Name: "example.com", Value: "v=spf1 ip4:203.0.113.5 ip4:10.0.0.7 ip6:2001:db8::5 ip4:127.0.0.1 ip4:100.64.1.1 ~all"},
		{Type: "MX", Name: "bounce.example.com", Value: "10 relay.example.net"},
		{Type: "TXT", Name: "bounce.example.com", Value: "v=spf1 ip4:203.0.113.5 ip4:10.0.0.7 ip6:2001:db8::5 ip4:127.0.0.1 ip4:100.64.1.1 ~all"},
		{Type: "TXT", Name: "_dmarc.example.com", Value: "v=DMARC1; p=none; rua=mailto:dmarc-reports@example.com"},
	}
	if len(recs) != len(want) {
		t.Fatalf("got %d records, want %d: %+v", len(recs), len(want), recs)
	}
	for i, r := range recs {
		w := want[i]
		if r.Type != w.Type || r.Name != w.Name || r.Value != w.Value || r.Required != w.Required {
			t.Errorf("record %d = %s %s %q required=%v, want %s %s %q required=%v", i, r.Type, r.Name, r.Value, r.Required, w.Type, w.Name, w.Value, w.Required)
		}
		if r.Purpose == "" {
			t.Errorf("record %d has no purpose", i)
		}
	}
	if !strings.Contains(recs[0].Purpose, "RFC 6376") || !strings.Contains(recs[1].Purpose, "RFC 7208") || !strings.Contains(recs[4].Purpose, "RFC 7489") {
		t.Errorf("purposes do not cite their RFCs: %q, %q, %q", recs[0].Purpose, recs[1].Purpose, recs[4].Purpose)
	}

	// No source IP: the host name stands for Sesame; a custom subdomain
	// and report address in another domain.
	cfg = Config{Hostname: "relay.example.net", MailFromSubdomain: "mail", DMARCReportAddress: "reports@example.org"}
	recs, err = cfg.Records(d)
	if err != nil {
		t.Fatal(err)
	}
	if got := recs[1].Value; got != "v=spf1 a:relay.example.net ~all" {
		t.Errorf("SPF without source IPs = %q", got)
	}
	if recs[2].Name != "mail.example.com" || recs[3].Name != "mail.example.com" {
		t.Errorf("MAIL FROM records at %s and %s, want mail.example.com", recs[2].Name, recs[3].Name)
	}
	if got := recs[4].Value; got != "v=DMARC1; p=none; rua=mailto:reports@example.org" {
		t.Errorf("DMARC = %q", got)
	}
	if !strings.Contains(recs[4].Purpose, "example.com._report._dmarc.example.org") {
		t.Errorf("DMARC purpose does not explain the external report authorization: %q", recs[4].Purpose)
	}

	// Two keys: two required records, RSA first as the store keeps them.
	d2 := newDomain(t, "example.com", c.Now(), store.AlgEd25519, store.AlgEd25519)
	d2.Keys[1].Selector = "other"
	recs, err = cfg.Records(d2)
	if err != nil {
		t.Fatal(err)
	}
	if !recs[0].Required || !recs[1].Required || recs[2].Required || recs[1].Name != "other._domainkey.example.com" {
		t.Errorf("records of two keys: %+v", recs[:3])
	}

	for _, bad := range []Config{
		{},
		{Hostname: "relay.example.net", SourceIPs: []string{"not-an-ip"}},
	} {
		if _, err := bad.Records(d); err == nil {
			t.Errorf("Records with %+v: no error", bad)
		}
	}
	broken := d
	broken.Keys = []store.DKIMKey{{Selector: "x", Algorithm: store.AlgRSA, PrivateKey: []byte("junk")}}
	if _, err := cfg.Records(broken); err == nil {
		t.Error("Records with a damaged key: no error")
	}
}
