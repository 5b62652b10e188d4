package main

import (
	"encoding/json"
	"net"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// zoneDNS is a DNS server on loopback that answers from records the test
// publishes, as a recursive resolver would: NXDOMAIN for a name it does not
// know, SERVFAIL for a name the test made fail.
type zoneDNS struct {
	addr string
	mu   sync.Mutex
	rrs  map[string][]dns.RR // lower-case FQDN → records
	fail map[string]bool
}

func startZoneDNS(t *testing.T) *zoneDNS {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	z := &zoneDNS{addr: pc.LocalAddr().String(), rrs: map[string][]dns.RR{}, fail: map[string]bool{}}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(z.serve)}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return z
}

func (z *zoneDNS) serve(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	m.RecursionAvailable = true
	q := r.Question[0]
	name := strings.ToLower(q.Name)
	z.mu.Lock()
	rrs, known := z.rrs[name]
	failing := z.fail[name]
	z.mu.Unlock()
	switch {
	case failing:
		m.Rcode = dns.RcodeServerFailure
	case !known:
		m.Rcode = dns.RcodeNameError
	}
	for _, rr := range rrs {
		if rr.Header().Rrtype == q.Qtype {
			m.Answer = append(m.Answer, rr)
		}
	}
	w.WriteMsg(m)
}

// publish adds a record in presentation format ("name. 300 IN TXT ...").
func (z *zoneDNS) publish(t *testing.T, text string) {
	t.Helper()
	rr, err := dns.NewRR(text)
	if err != nil {
		t.Fatalf("record %q: %v", text, err)
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	name := strings.ToLower(rr.Header().Name)
	z.rrs[name] = append(z.rrs[name], rr)
}

func (z *zoneDNS) publishTXT(t *testing.T, name, value string) {
	t.Helper()
	// One TXT record may hold several strings of up to 255 bytes: a DKIM
	// key is longer.
	var parts []string
	for len(value) > 255 {
		parts, value = append(parts, value[:255]), value[255:]
	}
	parts = append(parts, value)
	rr := &dns.TXT{Hdr: dns.RR_Header{Name: dns.Fqdn(name), Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 300}, Txt: parts}
	z.mu.Lock()
	defer z.mu.Unlock()
	key := strings.ToLower(dns.Fqdn(name))
	z.rrs[key] = append(z.rrs[key], rr)
}

func (z *zoneDNS) servfail(name string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.fail[strings.ToLower(dns.Fqdn(name))] = true
}

// doctorSetup writes a configuration whose outbound addresses are given by
// relay (TOML for [relay] and later sections), asking z, and adds
// example.com; it returns the configuration path and the DKIM records.
func doctorSetup(t *testing.T, z *zoneDNS, relay string) (string, []recordOutput) {
	t.Helper()
	cfgPath, _ := writeConfig(t, t.TempDir(), relay)
	text, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	text = regexp.MustCompile(`dns_servers = \[[^\]]*\]`).ReplaceAll(text, []byte(`dns_servers = ["`+z.addr+`"]`))
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
	var dkimRecords []recordOutput
	for _, r := range added.Records {
		if r.Required {
			dkimRecords = append(dkimRecords, r)
		}
	}
	if len(dkimRecords) == 0 {
		t.Fatalf("domain add listed no DKIM record: %s", out)
	}
	return cfgPath, dkimRecords
}

// publishZone publishes a zone for example.com that is right for an
// outbound address of 127.0.0.6, except that the SPF record of the domain
// is spf.
func publishZone(t *testing.T, z *zoneDNS, dkimRecords []recordOutput, spf string) {
	t.Helper()
	for _, r := range dkimRecords {
		z.publishTXT(t, r.Name, r.Value)
	}
	z.publishTXT(t, "example.com", spf)
	z.publishTXT(t, "bounce.example.com", "v=spf1 ip4:127.0.0.6 -all")
	z.publish(t, "bounce.example.com. 300 IN MX 10 sesame.test.")
	z.publishTXT(t, "_dmarc.example.com", "v=DMARC1; p=none")
}

// The doctor judges SPF against the outbound addresses as configured,
// loopback included, from relay.source_ips and from [[ip]] alike: a correct
// zone passes.
func TestDomainCheckCorrectZone(t *testing.T) {
	for _, tc := range []struct{ name, relay string }{
		{"source_ips", "[relay]\nsource_ips = [\"127.0.0.6\"]\n"},
		{"ip table", "[relay]\n[[ip]]\naddress = \"127.0.0.6\"\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			z := startZoneDNS(t)
			cfgPath, dkimRecords := doctorSetup(t, z, tc.relay)
			publishZone(t, z, dkimRecords, "v=spf1 ip4:127.0.0.6 -all")

			out, errOut, code := sesame(t, "domain", "check", "example.com", "--config", cfgPath)
			if code != 0 || !strings.Contains(out, "Every record of example.com is in place") || strings.Contains(out, "UNKNOWN") {
				t.Fatalf("domain check of a correct zone: exit %d\n%s%s", code, out, errOut)
			}
			out, errOut, code = sesame(t, "domain", "check", "example.com", "--config", cfgPath, "--json")
			var checked domainOutput
			if err := json.Unmarshal([]byte(out), &checked); code != 0 || err != nil {
				t.Fatalf("domain check --json: exit %d %v\n%s%s", code, err, out, errOut)
			}
			for _, r := range checked.Records {
				if r.Check != "ok" {
					t.Errorf("domain check --json: %s %s is %q (%s)", r.Type, r.Name, r.Check, r.Advice)
				}
			}
			// domain show suggests the record the check then accepts.
			out, _, _ = sesame(t, "domain", "show", "example.com", "--config", cfgPath)
			if !strings.Contains(out, "v=spf1 ip4:127.0.0.6 ~all") {
				t.Errorf("domain show does not suggest ip4:127.0.0.6:\n%s", out)
			}
		})
	}
}

func TestDomainCheckSPFWithoutTheAddress(t *testing.T) {
	z := startZoneDNS(t)
	cfgPath, dkimRecords := doctorSetup(t, z, "[relay]\nsource_ips = [\"127.0.0.6\"]\n")
	publishZone(t, z, dkimRecords, "v=spf1 ip4:127.0.0.7 -all")

	out, errOut, code := sesame(t, "domain", "check", "example.com", "--config", cfgPath)
	if code != 1 || !strings.Contains(errOut, "example.com: 1 record(s) missing or wrong") {
		t.Fatalf("domain check with an SPF record without 127.0.0.6: exit %d\n%s%s", code, out, errOut)
	}
	if !regexp.MustCompile(`(?m)^WRONG +TXT example\.com \(SPF`).MatchString(out) ||
		!strings.Contains(out, `does not allow Sesame's ip4:127.0.0.6; change it to "v=spf1 ip4:127.0.0.6 ip4:127.0.0.7 -all"`) {
		t.Errorf("domain check does not say which record is wrong and how to fix it:\n%s", out)
	}
}

// A record Sesame cannot judge is shown, but not counted as missing or
// wrong; a lookup that failed is not counted as missing or wrong either,
// but fails the check, since nothing was checked.
func TestDomainCheckUnknown(t *testing.T) {
	t.Run("cannot judge", func(t *testing.T) {
		z := startZoneDNS(t)
		cfgPath, dkimRecords := doctorSetup(t, z, "[relay]\nsource_ips = [\"127.0.0.6\"]\n")
		// Sesame does not expand SPF macros.
		publishZone(t, z, dkimRecords, "v=spf1 include:%{i}._spf.example.net -all")

		out, errOut, code := sesame(t, "domain", "check", "example.com", "--config", cfgPath)
		if code != 0 || !regexp.MustCompile(`(?m)^UNKNOWN +TXT example\.com `).MatchString(out) ||
			!strings.Contains(out, "Sesame cannot judge 1 record(s) marked UNKNOWN") {
			t.Fatalf("domain check with an SPF include with a macro: exit %d, want 0 with the record UNKNOWN\n%s%s", code, out, errOut)
		}
	})
	t.Run("lookup failed", func(t *testing.T) {
		z := startZoneDNS(t)
		cfgPath, dkimRecords := doctorSetup(t, z, "[relay]\nsource_ips = [\"127.0.0.6\"]\n")
		publishZone(t, z, dkimRecords, "v=spf1 ip4:127.0.0.6 -all")
		z.servfail("_dmarc.example.com")

		out, errOut, code := sesame(t, "domain", "check", "example.com", "--config", cfgPath)
		if code != 1 || strings.Contains(errOut, "missing or wrong") || !strings.Contains(errOut, "1 record(s) could not be looked up") ||
			!strings.Contains(out, "SERVFAIL") {
			t.Fatalf("domain check with a SERVFAIL: exit %d, want 1 saying the lookup failed\n%s%s", code, out, errOut)
		}
	})
}
