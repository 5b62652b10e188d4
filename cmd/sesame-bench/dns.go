package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/miekg/dns"
)

// dnsConfig configures the dns subcommand.
type dnsConfig struct {
	Listen  string
	MX      string // the address every mail exchanger resolves to, or the first of MXCount
	MXCount int    // mail exchangers spread over this many consecutive addresses from MX
	Records string // JSON from "sesame domain add --json": TXT records to serve
}

// benchZone answers, for any domain D: MX 10 mx.D, and for mx.D an A (or
// AAAA) record with the --mx address; and the TXT records it was given (a
// domain's DKIM keys, so "sesame domain verify" works). Everything else is
// NODATA. It lets a benchmark take Sesame's real MX path (lookup, cache,
// delivery) to a sink on loopback.
//
// With --mx-count N the mail exchangers are spread over N consecutive
// addresses from --mx, as shared hosting puts many domains' MX hosts on
// one server: mx.dK.example.net (the domains of "sesame-bench send
// --domains") resolves to the (K mod N)th, so each address serves the same
// number of domains; any other name to one chosen by a hash of it.
type benchZone struct {
	mx    netip.Addr
	count int               // addresses from mx; 0 or 1: just mx
	txt   map[string]string // lower-case FQDN → value
}

// mxAddr is the address of the mail exchanger mx.<domain>.
func (z benchZone) mxAddr(domain string) netip.Addr {
	if z.count <= 1 {
		return z.mx
	}
	label, _, _ := strings.Cut(domain, ".")
	var i uint64
	if n, err := strconv.ParseUint(strings.TrimPrefix(label, "d"), 10, 64); err == nil && strings.HasPrefix(label, "d") {
		i = n
	} else {
		h := fnv.New64a()
		h.Write([]byte(domain))
		i = h.Sum64()
	}
	return nthAddr(z.mx, int(i%uint64(z.count)))
}

// nthAddr is the address n after a.
func nthAddr(a netip.Addr, n int) netip.Addr {
	for range n {
		a = a.Next()
	}
	return a
}

func (z benchZone) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if len(req.Question) == 1 {
		q := req.Question[0]
		name := strings.ToLower(q.Name)
		hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: 300}
		switch {
		case q.Qtype == dns.TypeMX && !strings.HasPrefix(name, "mx."):
			hdr.Rrtype = dns.TypeMX
			m.Answer = append(m.Answer, &dns.MX{Hdr: hdr, Preference: 10, Mx: "mx." + name})
		case q.Qtype == dns.TypeA && strings.HasPrefix(name, "mx.") && z.mx.Is4():
			hdr.Rrtype = dns.TypeA
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: z.mxAddr(strings.TrimPrefix(name, "mx.")).AsSlice()})
		case q.Qtype == dns.TypeAAAA && strings.HasPrefix(name, "mx.") && z.mx.Is6():
			hdr.Rrtype = dns.TypeAAAA
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: z.mxAddr(strings.TrimPrefix(name, "mx.")).AsSlice()})
		case q.Qtype == dns.TypeTXT && z.txt[name] != "":
			hdr.Rrtype = dns.TypeTXT
			m.Answer = append(m.Answer, &dns.TXT{Hdr: hdr, Txt: splitTXT(z.txt[name])})
		}
	}
	w.WriteMsg(m)
}

// splitTXT cuts a TXT value into the 255-byte strings DNS carries.
func splitTXT(v string) []string {
	var out []string
	for len(v) > 255 {
		out, v = append(out, v[:255]), v[255:]
	}
	return append(out, v)
}

// loadRecords reads the TXT records of "sesame domain add --json" output.
func loadRecords(path string) (map[string]string, error) {
	txt := map[string]string{}
	if path == "" {
		return txt, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out struct {
		Records []struct{ Type, Name, Value string }
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("%s: %w (want the output of sesame domain add --json)", path, err)
	}
	for _, r := range out.Records {
		if r.Type == "TXT" {
			txt[strings.ToLower(dns.Fqdn(r.Name))] = r.Value
		}
	}
	return txt, nil
}

func dnsMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cfg dnsConfig
	fs := flag.NewFlagSet("dns", flag.ContinueOnError)
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:25353", "host:port to answer DNS on, UDP and TCP (loopback only)")
	fs.StringVar(&cfg.MX, "mx", "127.0.0.2", "the address every domain's mail exchanger resolves to (loopback only)")
	fs.IntVar(&cfg.MXCount, "mx-count", 1, "spread the mail exchangers over this many consecutive addresses from --mx (mx.dK.* gets the (K mod N)th)")
	fs.StringVar(&cfg.Records, "records", "", "a file with the output of \"sesame domain add --json\": its TXT records are served too")
	setUsage(fs, `sesame-bench dns: a DNS server for benchmarks. For any domain D it answers
MX 10 mx.D, and mx.D resolves to --mx, so Sesame's MX delivery reaches a sink.
`)
	if done, code := parseFlags(fs, args, stdout, stderr); done {
		return code
	}
	listen, err := checkLoopback(cfg.Listen, false)
	if err != nil {
		fmt.Fprintln(stderr, "sesame-bench dns:", err)
		return 2
	}
	mx, err := netip.ParseAddr(cfg.MX)
	if err != nil || !mx.IsLoopback() {
		fmt.Fprintf(stderr, "sesame-bench dns: --mx %q must be a loopback IP address\n", cfg.MX)
		return 2
	}
	if last := nthAddr(mx, max(cfg.MXCount, 1)-1); cfg.MXCount < 1 || cfg.MXCount > maxSinkAddrs || !last.IsValid() || !last.IsLoopback() {
		fmt.Fprintf(stderr, "sesame-bench dns: --mx-count %d from %s: want 1 to %d addresses, all loopback\n", cfg.MXCount, mx, maxSinkAddrs)
		return 2
	}
	txt, err := loadRecords(cfg.Records)
	if err != nil {
		fmt.Fprintln(stderr, "sesame-bench dns:", err)
		return 2
	}
	zone := benchZone{mx: mx, count: cfg.MXCount, txt: txt}
	pc, err := net.ListenPacket("udp", listen)
	if err != nil {
		fmt.Fprintln(stderr, "sesame-bench dns:", err)
		return 1
	}
	l, err := net.Listen("tcp", listen)
	if err != nil {
		pc.Close()
		fmt.Fprintln(stderr, "sesame-bench dns:", err)
		return 1
	}
	udp := &dns.Server{PacketConn: pc, Handler: zone}
	tcp := &dns.Server{Listener: l, Handler: zone}
	go udp.ActivateAndServe()
	go tcp.ActivateAndServe()
	fmt.Fprintf(stderr, "sesame-bench dns: answering on %s, MX hosts on %d address(es) from %s\n", listen, max(cfg.MXCount, 1), mx)
	<-ctx.Done()
	udp.Shutdown()
	tcp.Shutdown()
	return 0
}
