package main

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/miekg/dns"
	"github.com/sesame-mail/sesame/testkit"
)

// The doctor against a test zone: what receivers check of bulk senders
// (issue 19 item 4). Sesame's outbound address is 127.0.0.6, its hostname
// sesame.test.

// compliantSetup writes a configuration asking a new zone, with extra TOML
// for [relay] and later sections (source_ips = 127.0.0.6 is added), adds
// example.com and publishes a zone that is right for it and for the
// address; it returns the configuration path and the zone.
func compliantSetup(t *testing.T, extra string) (string, *testkit.Zone) {
	t.Helper()
	z := testkit.StartZone(t)
	cfgPath, _ := writeConfig(t, t.TempDir(), "[relay]\nsource_ips = [\"127.0.0.6\"]\n"+strings.TrimPrefix(extra, "[relay]\n"))
	text, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	text = regexp.MustCompile(`dns_servers = \[[^\]]*\]`).ReplaceAll(text, []byte(`dns_servers = ["`+z.Addr+`"]`))
	if err := os.WriteFile(cfgPath, text, 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := sesame(t, "domain", "add", "example.com", "--config", cfgPath, "--json")
	if code != 0 {
		t.Fatalf("domain add: %s", errOut)
	}
	var added domainOutput
	if err := json.Unmarshal([]byte(out), &added); err != nil {
		t.Fatal(err)
	}
	for _, r := range added.Records {
		if r.Required {
			z.SetTXT(r.Name, r.Value)
		}
	}
	z.SetTXT("example.com", "v=spf1 ip4:127.0.0.6 -all")
	z.SetTXT("bounce.example.com", "v=spf1 ip4:127.0.0.6 -all")
	z.Add(t, "bounce.example.com. 300 IN MX 10 sesame.test.",
		"6.0.0.127.in-addr.arpa. 300 IN PTR sesame.test.", "sesame.test. 300 IN A 127.0.0.6")
	z.SetTXT("_dmarc.example.com", "v=DMARC1; p=none; rua=mailto:dmarc-reports@example.com")
	return cfgPath, z
}

// finding matches the doctor's line for a finding with its mark, type and
// name, followed by its fix.
func finding(mark, typ, name, fix string) *regexp.Regexp {
	return regexp.MustCompile(`(?m)^` + mark + ` +` + regexp.QuoteMeta(typ+" "+name) + ` \(.*\n(?: +found: .*\n)? +fix: +.*` + regexp.QuoteMeta(fix))
}

func TestDoctorCompliantZone(t *testing.T) {
	cfgPath, _ := compliantSetup(t, "[inbound]\nlisten = [\""+freePort(t, "127.0.0.1")+"\"]\n")
	out, errOut, code := sesame(t, "domain", "check", "example.com", "--config", cfgPath)
	if code != 0 || !strings.Contains(out, "Every record of example.com is in place") || regexp.MustCompile(`(?m)^(WARN|UNKNOWN|WRONG|MISSING)`).MatchString(out) {
		t.Fatalf("domain check of a compliant zone: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"OK       DKIM example.com (alignment", "note:  policy none: receivers deliver mail that fails DMARC as before", "OK       SPF bounce.example.com (alignment: mail from example.com leaves with the return path b+TOKEN@bounce.example.com"} {
		if !strings.Contains(out, want) {
			t.Errorf("domain check does not report %q:\n%s", want, out)
		}
	}
	out, errOut, code = sesame(t, "ip", "check", "--config", cfgPath)
	if code != 0 || !regexp.MustCompile(`(?m)^OK +PTR 6\.0\.0\.127\.in-addr\.arpa \(reverse DNS of outbound address 127\.0\.0\.6`).MatchString(out) ||
		!strings.Contains(out, "The reverse DNS of every outbound address is right.") {
		t.Fatalf("ip check of a compliant zone: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = sesame(t, "ip", "check", "--config", cfgPath, "--json")
	var got struct{ Records []recordOutput }
	if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil || len(got.Records) != 1 || got.Records[0].Check != "ok" ||
		got.Records[0].Value != "sesame.test" {
		t.Fatalf("ip check --json: exit %d %v\n%s%s", code, err, out, errOut)
	}
}

func TestDoctorMissingDMARC(t *testing.T) {
	fix := `publish TXT _dmarc.example.com "v=DMARC1; p=none; rua=mailto:dmarc-reports@example.com"`
	t.Run("bulk sender", func(t *testing.T) {
		cfgPath, z := compliantSetup(t, "")
		z.SetTXT("_dmarc.example.com")
		out, errOut, code := sesame(t, "domain", "check", "example.com", "--config", cfgPath)
		if code != 1 || !finding("MISSING", "TXT", "_dmarc.example.com", fix+"; Gmail, Yahoo and Outlook.com refuse or junk bulk mail").MatchString(out) ||
			!strings.Contains(errOut, "example.com: 1 record(s) missing or wrong") {
			t.Fatalf("domain check without DMARC: exit %d, want 1 naming the record to publish\n%s%s", code, out, errOut)
		}
	})
	t.Run("not a bulk sender", func(t *testing.T) {
		cfgPath, z := compliantSetup(t, "[identity]\nbulk_sender = false\n")
		z.SetTXT("_dmarc.example.com")
		out, errOut, code := sesame(t, "domain", "check", "example.com", "--config", cfgPath)
		if code != 0 || !finding("WARN", "TXT", "_dmarc.example.com", fix).MatchString(out) ||
			!strings.Contains(out, "Nothing of example.com is missing or wrong; 1 warning(s) marked WARN are worth fixing.") {
			t.Fatalf("domain check without DMARC, bulk_sender = false: exit %d, want 0 with a warning\n%s%s", code, out, errOut)
		}
	})
}

// With the inbound listener on, mail leaves with a return path in
// bounce.example.com, which aspf=s never aligns.
func TestDoctorMisalignedMailFrom(t *testing.T) {
	cfgPath, z := compliantSetup(t, "[inbound]\nlisten = [\""+freePort(t, "127.0.0.1")+"\"]\n")
	z.SetTXT("_dmarc.example.com", "v=DMARC1; p=quarantine; aspf=s")
	out, errOut, code := sesame(t, "domain", "check", "example.com", "--config", cfgPath)
	if code != 0 || !finding("WARN", "SPF", "bounce.example.com",
		`the return path bounce.example.com never has, so DMARC passes on the DKIM signature alone and fails where a forwarder breaks it; drop aspf=s (relaxed is the default): "v=DMARC1; p=quarantine"`).MatchString(out) {
		t.Fatalf("domain check with aspf=s: exit %d, want 0 with the return path's misalignment and its fix\n%s%s", code, out, errOut)
	}
}

func TestDoctorSPFOverLookupLimit(t *testing.T) {
	cfgPath, z := compliantSetup(t, "")
	spf := "v=spf1"
	for i := range 11 {
		z.SetTXT(fmt.Sprintf("_s%d.example.net", i), "v=spf1 ip4:192.0.2.1 -all")
		spf += fmt.Sprintf(" include:_s%d.example.net", i)
	}
	z.SetTXT("example.com", spf+" ip4:127.0.0.6 -all")
	out, errOut, code := sesame(t, "domain", "check", "example.com", "--config", cfgPath)
	if code != 1 || !finding("WRONG", "TXT", "example.com", "needs more than 10 DNS lookups").MatchString(out) ||
		!strings.Contains(out, `putting Sesame's terms first lets receivers match Sesame before any lookup: "v=spf1 ip4:127.0.0.6 include:_s0.example.net`) {
		t.Fatalf("domain check with an SPF record over 10 lookups: exit %d\n%s%s", code, out, errOut)
	}
}

func TestDoctorPTRNotResolvingBack(t *testing.T) {
	cfgPath, z := compliantSetup(t, "")
	z.Set(t, "6.0.0.127.in-addr.arpa.", dns.TypePTR, "6.0.0.127.in-addr.arpa. 300 IN PTR host-6.provider.test.")
	out, errOut, code := sesame(t, "ip", "check", "--config", cfgPath)
	if code != 1 || !finding("WRONG", "PTR", "6.0.0.127.in-addr.arpa",
		"names host-6.provider.test (no A record), which does not resolve back to 127.0.0.6, so receivers see no valid reverse DNS (FCrDNS); publish A host-6.provider.test 127.0.0.6, or ask").MatchString(out) ||
		!strings.Contains(errOut, "the outbound addresses: 1 address(es) missing or wrong") {
		t.Fatalf("ip check with a PTR that does not resolve back: exit %d\n%s%s", code, out, errOut)
	}
	// The PTR removed: missing, with what to ask for.
	z.Remove("6.0.0.127.in-addr.arpa.", dns.TypePTR)
	out, errOut, code = sesame(t, "ip", "check", "127.0.0.6", "--config", cfgPath)
	if code != 1 || !finding("MISSING", "PTR", "6.0.0.127.in-addr.arpa", "127.0.0.6 has no PTR record; ask whoever runs the network").MatchString(out) {
		t.Fatalf("ip check 127.0.0.6 without a PTR: exit %d\n%s%s", code, out, errOut)
	}
	// A lookup that fails is not a verdict, but nothing was checked.
	z.Fail("6.0.0.127.in-addr.arpa.", dns.RcodeServerFailure)
	out, errOut, code = sesame(t, "ip", "check", "--config", cfgPath)
	if code != 1 || !strings.Contains(errOut, "1 address(es) could not be looked up") || !regexp.MustCompile(`(?m)^UNKNOWN +PTR`).MatchString(out) {
		t.Fatalf("ip check with a SERVFAIL: exit %d\n%s%s", code, out, errOut)
	}
}

// address add refuses an address whose domain publishes DMARC p=reject or
// p=quarantine unless --force, and records the choice (issue 19 item 5).
func TestAddressAddDMARCProtected(t *testing.T) {
	cfgPath, z := compliantSetup(t, "")
	z.SetTXT("_dmarc.gmail.test", "v=DMARC1; p=reject")
	z.SetTXT("_dmarc.lax.test", "v=DMARC1; p=none")

	out, errOut, code := sesame(t, "address", "add", "me@gmail.test", "--config", cfgPath)
	if code != 1 || !strings.Contains(errOut, "me@gmail.test was not added: gmail.test publishes DMARC p=reject: every receiver that checks DMARC rejects mail From: me@gmail.test") ||
		!strings.Contains(errOut, "verify a domain of your own with sesame domain add and send from it, or allow me@gmail.test anyway with sesame address add me@gmail.test --force") {
		t.Fatalf("address add of a p=reject domain's address: exit %d, want 1 saying why and what to do\n%s%s", code, out, errOut)
	}
	out, _, _ = sesame(t, "address", "list", "--config", cfgPath)
	if strings.Contains(out, "me@gmail.test") {
		t.Fatalf("the refused address is listed:\n%s", out)
	}

	out, errOut, code = sesame(t, "address", "add", "me@gmail.test", "--force", "--config", cfgPath)
	if code != 0 || !strings.Contains(out, "Warning: gmail.test publishes DMARC p=reject, so receivers that check DMARC refuse or junk mail from me@gmail.test") ||
		!strings.Contains(out, "A verification link was queued to me@gmail.test") {
		t.Fatalf("address add --force: exit %d\n%s%s", code, out, errOut)
	}
	if _, errOut, code := sesame(t, "address", "add", "ok@lax.test", "--config", cfgPath); code != 0 {
		t.Fatalf("address add of a p=none domain's address: exit %d\n%s", code, errOut)
	}
	out, _, _ = sesame(t, "address", "list", "--config", cfgPath)
	if !regexp.MustCompile(`(?m)^me@gmail\.test +pending .* p=reject: allowed \(--force\)$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^ok@lax\.test +pending .* p=none$`).MatchString(out) {
		t.Errorf("address list does not show the policies:\n%s", out)
	}
	out, _, _ = sesame(t, "address", "list", "--config", cfgPath, "--json")
	var list []struct {
		Address     string
		DMARCPolicy string `json:"dmarc_policy"`
		Forced      bool
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) != 2 || list[0].DMARCPolicy != "reject" || !list[0].Forced {
		t.Errorf("address list --json: %v\n%s", err, out)
	}
}
