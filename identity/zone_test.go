package identity

import (
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// zone is a recursive-looking DNS server on one loopback port, UDP and TCP,
// answering from records the test sets and may change at any time.
type zone struct {
	addr string

	mu      sync.Mutex
	rrs     map[zoneKey][]dns.RR
	rcode   map[string]int // name → rcode to answer instead (SERVFAIL, …)
	queries map[string]int // name → queries
	tcp     int            // queries over TCP
}

type zoneKey struct {
	name  string // lower case, fully qualified
	qtype uint16
}

func startZone(t *testing.T) *zone {
	t.Helper()
	z := &zone{rrs: make(map[zoneKey][]dns.RR), rcode: make(map[string]int), queries: make(map[string]int)}
	var pc net.PacketConn
	var ln net.Listener
	for attempt := 0; ; attempt++ {
		var err error
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
		if attempt == 20 {
			t.Fatalf("no port free for both UDP and TCP: %v", err)
		}
	}
	z.addr = pc.LocalAddr().String()
	for _, srv := range []*dns.Server{
		{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, m *dns.Msg) { z.serve(w, m, false) })},
		{Listener: ln, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, m *dns.Msg) { z.serve(w, m, true) })},
	} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go srv.ActivateAndServe()
		<-started
		t.Cleanup(func() { srv.Shutdown() })
	}
	return z
}

// set replaces the records of a name and type with records in zone file
// syntax ("example.com. 300 IN TXT \"v=spf1 -all\""); none removes them.
func (z *zone) set(t *testing.T, name string, qtype uint16, records ...string) {
	t.Helper()
	var rrs []dns.RR
	for _, s := range records {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatalf("record %q: %v", s, err)
		}
		rrs = append(rrs, rr)
	}
	z.setRRs(name, qtype, rrs...)
}

// setTXT replaces the TXT records of name, one per value, each value split
// into character-strings of at most 255 bytes as a zone must.
func (z *zone) setTXT(name string, values ...string) {
	var rrs []dns.RR
	for _, v := range values {
		rrs = append(rrs, txtRR(name, splitTXT(v, 255)...))
	}
	z.setRRs(name, dns.TypeTXT, rrs...)
}

func txtRR(name string, parts ...string) *dns.TXT {
	return &dns.TXT{Hdr: dns.RR_Header{Name: dns.Fqdn(name), Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 300}, Txt: parts}
}

func splitTXT(v string, n int) []string {
	var parts []string
	for len(v) > n {
		parts = append(parts, v[:n])
		v = v[n:]
	}
	return append(parts, v)
}

func (z *zone) setRRs(name string, qtype uint16, rrs ...dns.RR) {
	z.mu.Lock()
	defer z.mu.Unlock()
	key := zoneKey{dns.CanonicalName(name), qtype}
	if len(rrs) == 0 {
		delete(z.rrs, key)
		return
	}
	z.rrs[key] = rrs
}

// fail makes questions about name answer rcode; dns.RcodeSuccess undoes it.
func (z *zone) fail(name string, rcode int) {
	z.mu.Lock()
	defer z.mu.Unlock()
	if rcode == dns.RcodeSuccess {
		delete(z.rcode, dns.CanonicalName(name))
		return
	}
	z.rcode[dns.CanonicalName(name)] = rcode
}

func (z *zone) count(name string) int {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.queries[dns.CanonicalName(name)]
}

func (z *zone) tcpCount() int {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.tcp
}

func (z *zone) serve(w dns.ResponseWriter, req *dns.Msg, overTCP bool) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = true
	z.mu.Lock()
	defer z.mu.Unlock()
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	z.queries[name]++
	if overTCP {
		z.tcp++
	}
	exists := false
	for k := range z.rrs {
		exists = exists || k.name == name
	}
	if rc, ok := z.rcode[name]; ok {
		m.Rcode = rc
	} else if rrs := z.rrs[zoneKey{name, q.Qtype}]; rrs != nil {
		m.Answer = rrs
	} else if rrs := z.rrs[zoneKey{name, dns.TypeCNAME}]; rrs != nil {
		m.Answer = rrs // the CNAME alone, as an authoritative server gives it
	} else if !exists {
		m.Rcode = dns.RcodeNameError
	}
	if !overTCP {
		// Truncate to what the client can take, so that big answers need
		// TCP as on the Internet (RFC 6891 §6.2.5, RFC 1035 §4.2.1).
		size := dns.MinMsgSize
		if o := req.IsEdns0(); o != nil {
			size = int(o.UDPSize())
		}
		m.Truncate(size)
	}
	w.WriteMsg(m)
}

// silentServer returns a loopback UDP address that reads queries and never
// answers.
func silentServer(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	return pc.LocalAddr().String()
}
