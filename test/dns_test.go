package test

import (
	"net"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// testZone is an authoritative DNS server run by the test on 127.0.0.1, UDP
// and TCP on the same port. Every instance has one ([relay] dns_servers):
// Sesame looks up the DKIM records of its domains there to verify them, and
// in the MX tests the mail exchangers of recipient domains. Unknown names
// get NXDOMAIN, known names without records of the asked type NODATA, both
// with an SOA. Records can be added and removed while Sesame runs.
type testZone struct {
	addr string
	soa  dns.RR

	mu      sync.Mutex
	rrs     map[string]map[uint16][]dns.RR // by lower-case FQDN, then type
	broken  map[string]bool                // names answered with SERVFAIL
	queries []string                       // "name TYPE", in order
}

func startZone(t *testing.T, records ...string) *testZone {
	t.Helper()
	soa, err := dns.NewRR("test. 60 IN SOA ns.test. hostmaster.test. 1 60 60 60 1")
	if err != nil {
		t.Fatal(err)
	}
	z := &testZone{soa: soa, rrs: map[string]map[uint16][]dns.RR{}, broken: map[string]bool{}}
	z.add(t, records...)

	var pc net.PacketConn
	var ln net.Listener
	for attempt := 0; ; attempt++ {
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
		if attempt == 20 {
			t.Fatalf("DNS: no port free for both UDP and TCP: %v", err)
		}
	}
	z.addr = pc.LocalAddr().String()
	for _, srv := range []*dns.Server{
		{PacketConn: pc, Handler: dns.HandlerFunc(z.serve)},
		{Listener: ln, Handler: dns.HandlerFunc(z.serve)},
	} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go srv.ActivateAndServe()
		<-started
		t.Cleanup(func() { srv.Shutdown() })
	}
	return z
}

// add puts records in zone-file syntax into the zone.
func (z *testZone) add(t *testing.T, records ...string) {
	t.Helper()
	for _, s := range records {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatalf("zone record %q: %v", s, err)
		}
		z.addRR(rr)
	}
}

func (z *testZone) addRR(rr dns.RR) {
	h := rr.Header()
	name := strings.ToLower(dns.Fqdn(h.Name))
	h.Name = name
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.rrs[name] == nil {
		z.rrs[name] = map[uint16][]dns.RR{}
	}
	z.rrs[name][h.Rrtype] = append(z.rrs[name][h.Rrtype], rr)
}

// setTXT replaces the TXT records at name with one record per value. A
// value longer than one character-string (255 bytes, RFC 1035 §3.3) is
// split into several strings of one record, as an operator publishes a
// 2048-bit DKIM key; readers join them (RFC 6376 §3.6.2.2).
func (z *testZone) setTXT(name string, values ...string) {
	z.remove(name, dns.TypeTXT)
	for _, v := range values {
		var parts []string
		for len(v) > 255 {
			parts = append(parts, v[:255])
			v = v[255:]
		}
		parts = append(parts, v)
		z.addRR(&dns.TXT{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: parts})
	}
}

// remove deletes the records of type qtype at name; a name left without
// records gets NXDOMAIN from then on.
func (z *testZone) remove(name string, qtype uint16) {
	name = strings.ToLower(dns.Fqdn(name))
	z.mu.Lock()
	defer z.mu.Unlock()
	delete(z.rrs[name], qtype)
	if len(z.rrs[name]) == 0 {
		delete(z.rrs, name)
	}
}

// setBroken makes the server answer SERVFAIL for name (a resolver that
// cannot reach the domain's servers), or answer again.
func (z *testZone) setBroken(name string, broken bool) {
	name = strings.ToLower(dns.Fqdn(name))
	z.mu.Lock()
	defer z.mu.Unlock()
	if broken {
		z.broken[name] = true
	} else {
		delete(z.broken, name)
	}
}

func (z *testZone) serve(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	m.RecursionAvailable = true
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	z.mu.Lock()
	z.queries = append(z.queries, name+" "+dns.TypeToString[q.Qtype])
	byType, exists := z.rrs[name]
	for _, rr := range byType[q.Qtype] {
		m.Answer = append(m.Answer, dns.Copy(rr))
	}
	broken := z.broken[name]
	z.mu.Unlock()
	switch {
	case broken:
		m.Answer = nil
		m.Rcode = dns.RcodeServerFailure
	case len(m.Answer) > 0:
	case exists:
		m.Ns = []dns.RR{dns.Copy(z.soa)}
	default:
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{dns.Copy(z.soa)}
	}
	// Over UDP, an answer larger than the client's buffer (512 bytes
	// without EDNS0) is truncated, so the client retries over TCP.
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
			m.SetEdns0(opt.UDPSize(), false)
		}
		m.Truncate(size)
	}
	w.WriteMsg(m)
}

func (z *testZone) asked(question string) bool {
	z.mu.Lock()
	defer z.mu.Unlock()
	return slices.Contains(z.queries, question)
}

// askedCount returns how many times question ("name. TYPE") was asked.
func (z *testZone) askedCount(question string) int {
	z.mu.Lock()
	defer z.mu.Unlock()
	n := 0
	for _, q := range z.queries {
		if q == question {
			n++
		}
	}
	return n
}
