package testkit

import (
	"net"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// DefaultSOA is the SOA a Zone puts in the authority section of its
// negative answers until SetSOA changes it: negative caching lasts
// min(TTL 3600, MINIMUM 30) = 30 s (RFC 2308 §5).
const DefaultSOA = "test. 3600 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 30"

// txtTTL is the TTL of the records SetTXT makes: short, so that a resolver
// with a cache sees a change soon.
const txtTTL = 60

// Zone is a DNS server shaped like the recursive resolver Sesame is pointed
// at: miekg/dns on one loopback port, UDP and TCP, answering from records the
// test sets and may change while it runs. For a question it answers the
// records of that name and type; else a CNAME at the name, alone, for the
// client to follow (as an authoritative server does); else NODATA for a name
// that has other records, or NXDOMAIN, both with an SOA (DefaultSOA). Every
// reply has RA set; a query without RD, or without exactly one question,
// gets FORMERR. Over UDP an answer larger than the client's buffer (512
// bytes, or its EDNS0 size) is truncated, so the client retries over TCP as
// on the Internet (RFC 1035 §4.2.1, RFC 6891 §6.2.5). Names are compared
// without case. It counts the queries, by name and type.
type Zone struct {
	Addr string // "127.0.0.1:port", for UDP and TCP

	mu      sync.Mutex
	rrs     map[question][]dns.RR // the answer section, by question
	rcode   map[string]int        // name ("*": any name) → rcode to answer instead
	soa     dns.RR                // in negative answers; nil: none
	rewrite func(req, reply *dns.Msg, overTCP bool) *dns.Msg
	queries []asked
}

// question is a lower-case, fully qualified name and a type.
type question struct {
	name  string
	qtype uint16
}

type asked struct {
	question
	tcp bool
}

// StartZone serves records (zone file syntax, "example.com. 300 IN MX 10
// mx.example.com.") until the test ends.
func StartZone(t testing.TB, records ...string) *Zone {
	t.Helper()
	z := &Zone{rrs: make(map[question][]dns.RR), rcode: make(map[string]int)}
	z.SetSOA(t, DefaultSOA)
	z.Add(t, records...)
	z.Addr = ServeDNS(t, dns.HandlerFunc(z.serve))
	return z
}

// Add adds records (zone file syntax), each to the answer for its own name
// and type.
func (z *Zone) Add(t testing.TB, records ...string) {
	t.Helper()
	rrs := parseRRs(t, records)
	z.mu.Lock()
	defer z.mu.Unlock()
	for _, rr := range rrs {
		h := rr.Header()
		q := question{dns.CanonicalName(h.Name), h.Rrtype}
		z.rrs[q] = append(z.rrs[q], rr)
	}
}

// Set replaces the answer to the question (name, qtype) with records (zone
// file syntax), taken as they are: the answer of a recursive server that
// followed a CNAME chain holds records of other names. No records removes
// the answer.
func (z *Zone) Set(t testing.TB, name string, qtype uint16, records ...string) {
	t.Helper()
	z.SetRRs(name, qtype, parseRRs(t, records)...)
}

// SetRRs is Set with records already parsed.
func (z *Zone) SetRRs(name string, qtype uint16, rrs ...dns.RR) {
	z.mu.Lock()
	defer z.mu.Unlock()
	q := question{dns.CanonicalName(name), qtype}
	if len(rrs) == 0 {
		delete(z.rrs, q)
		return
	}
	z.rrs[q] = rrs
}

// SetTXT replaces the TXT records of name with one record per value. A value
// longer than one character-string (255 bytes, RFC 1035 §3.3) is split into
// several strings of one record, as an operator publishes a 2048-bit DKIM
// key; readers join them (RFC 6376 §3.6.2.2). No values removes them.
func (z *Zone) SetTXT(name string, values ...string) {
	var rrs []dns.RR
	for _, v := range values {
		var parts []string
		for len(v) > 255 {
			parts, v = append(parts, v[:255]), v[255:]
		}
		rrs = append(rrs, TXT(name, append(parts, v)...))
	}
	z.SetRRs(name, dns.TypeTXT, rrs...)
}

// TXT returns a TXT record of name made of the character-strings parts, as
// they are.
func TXT(name string, parts ...string) *dns.TXT {
	return &dns.TXT{Hdr: dns.RR_Header{Name: dns.Fqdn(name), Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: txtTTL}, Txt: parts}
}

// Remove removes the records of name and type; a name left without records
// gets NXDOMAIN.
func (z *Zone) Remove(name string, qtype uint16) { z.SetRRs(name, qtype) }

// Fail makes questions about name answer rcode (dns.RcodeServerFailure: a
// resolver that cannot reach the domain's servers), with no records; "*"
// stands for every name. dns.RcodeSuccess answers again.
func (z *Zone) Fail(name string, rcode int) {
	if name != "*" {
		name = dns.CanonicalName(name)
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	if rcode == dns.RcodeSuccess {
		delete(z.rcode, name)
		return
	}
	z.rcode[name] = rcode
}

// SetSOA sets the SOA record (zone file syntax) of negative answers; ""
// leaves it out.
func (z *Zone) SetSOA(t testing.TB, record string) {
	t.Helper()
	var soa dns.RR
	if record != "" {
		soa = parseRRs(t, []string{record})[0]
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	z.soa = soa
}

// Rewrite has f turn the zone's reply to every query from now on into the
// message sent (a spoofed, lame or truncated reply, say); a nil message
// sends nothing, as a server that drops the query. f runs outside the
// zone's lock; nil undoes it.
func (z *Zone) Rewrite(f func(req, reply *dns.Msg, overTCP bool) *dns.Msg) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.rewrite = f
}

// Count returns how many queries for name, of any type, arrived.
func (z *Zone) Count(name string) int {
	return z.count(func(a asked) bool { return a.name == dns.CanonicalName(name) })
}

// CountType returns how many queries for name and qtype arrived.
func (z *Zone) CountType(name string, qtype uint16) int {
	return z.count(func(a asked) bool { return a.question == question{dns.CanonicalName(name), qtype} })
}

// Total returns how many queries arrived.
func (z *Zone) Total() int { return z.count(func(asked) bool { return true }) }

// TCPCount returns how many queries arrived over TCP.
func (z *Zone) TCPCount() int { return z.count(func(a asked) bool { return a.tcp }) }

func (z *Zone) count(match func(asked) bool) int {
	z.mu.Lock()
	defer z.mu.Unlock()
	n := 0
	for _, a := range z.queries {
		if match(a) {
			n++
		}
	}
	return n
}

func (z *Zone) serve(w dns.ResponseWriter, req *dns.Msg) {
	_, overUDP := w.RemoteAddr().(*net.UDPAddr)
	m := new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = true
	z.mu.Lock()
	if len(req.Question) != 1 || !req.RecursionDesired {
		m.Rcode = dns.RcodeFormatError
	} else {
		z.answer(m, req.Question[0], !overUDP)
	}
	rewrite := z.rewrite
	z.mu.Unlock()
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(opt.UDPSize(), false)
	}
	if overUDP {
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		m.Truncate(size)
	}
	if rewrite != nil {
		if m = rewrite(req, m, !overUDP); m == nil {
			return
		}
	}
	w.WriteMsg(m)
}

// answer fills m with the answer to q; z.mu is held.
func (z *Zone) answer(m *dns.Msg, q dns.Question, overTCP bool) {
	name := dns.CanonicalName(q.Name)
	z.queries = append(z.queries, asked{question{name, q.Qtype}, overTCP})
	rcode, failing := z.rcode[name]
	if !failing {
		rcode, failing = z.rcode["*"]
	}
	switch {
	case failing:
		m.Rcode = rcode
	case len(z.rrs[question{name, q.Qtype}]) > 0:
		m.Answer = copyRRs(z.rrs[question{name, q.Qtype}])
	case len(z.rrs[question{name, dns.TypeCNAME}]) > 0:
		m.Answer = copyRRs(z.rrs[question{name, dns.TypeCNAME}])
	default:
		if !z.exists(name) {
			m.Rcode = dns.RcodeNameError
		}
		if z.soa != nil {
			m.Ns = []dns.RR{dns.Copy(z.soa)}
		}
	}
}

// exists says whether name has records of any type; z.mu is held.
func (z *Zone) exists(name string) bool {
	for q := range z.rrs {
		if q.name == name {
			return true
		}
	}
	return false
}

// copyRRs copies records, so that replies being packed never share one
// with the zone, which the test may change meanwhile.
func copyRRs(rrs []dns.RR) []dns.RR {
	out := make([]dns.RR, len(rrs))
	for i, rr := range rrs {
		out[i] = dns.Copy(rr)
	}
	return out
}

func parseRRs(t testing.TB, records []string) []dns.RR {
	t.Helper()
	var rrs []dns.RR
	for _, s := range records {
		rr, err := dns.NewRR(s)
		if err != nil || rr == nil {
			t.Fatalf("DNS record %q: %v", s, err)
		}
		rrs = append(rrs, rr)
	}
	return rrs
}

// ServeDNS serves h on UDP and TCP of one free port of 127.0.0.1 until the
// test ends, and returns the address.
func ServeDNS(t testing.TB, h dns.Handler) string {
	t.Helper()
	// UDP on a free port, then TCP on the same one; another process may
	// hold that TCP port, so try again with another.
	var pc net.PacketConn
	var ln net.Listener
	for attempt := 0; ; attempt++ {
		var err error
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatalf("DNS server: %v", err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
		if attempt == 20 {
			t.Fatalf("DNS server: no port free for both UDP and TCP: %v", err)
		}
	}
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		failed := make(chan error, 1)
		go func() { failed <- srv.ActivateAndServe() }()
		select {
		case <-started:
		case err := <-failed:
			t.Fatalf("DNS server: %v", err)
		}
		t.Cleanup(func() { srv.Shutdown() })
	}
	return pc.LocalAddr().String()
}

// SilentDNS returns a loopback UDP address that reads queries and never
// answers, for timeouts; asked receives a value for each query (dropped
// when 100 are unread).
func SilentDNS(t testing.TB) (addr string, asked <-chan struct{}) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("silent DNS server: %v", err)
	}
	t.Cleanup(func() { pc.Close() })
	ch := make(chan struct{}, 100)
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}()
	return pc.LocalAddr().String(), ch
}

// ClosedUDPPort returns a loopback address where nothing listens: queries
// to it fail at once with "connection refused".
func ClosedUDPPort(t testing.TB) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}
