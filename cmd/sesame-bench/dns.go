package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// dnsConfig configures the dns subcommand.
type dnsConfig struct {
	Listen string
	MX     string // the address every mail exchanger resolves to
}

// benchZone answers, for any domain D: MX 10 mx.D, and for mx.D an A (or
// AAAA) record with the --mx address. Everything else is NODATA. It lets a
// benchmark take Sesame's real MX path (lookup, cache, delivery) to a sink
// on loopback.
type benchZone struct{ mx netip.Addr }

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
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: z.mx.AsSlice()})
		case q.Qtype == dns.TypeAAAA && strings.HasPrefix(name, "mx.") && z.mx.Is6():
			hdr.Rrtype = dns.TypeAAAA
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: z.mx.AsSlice()})
		}
	}
	w.WriteMsg(m)
}

func dnsMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cfg dnsConfig
	fs := flag.NewFlagSet("dns", flag.ContinueOnError)
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:25353", "host:port to answer DNS on, UDP and TCP (loopback only)")
	fs.StringVar(&cfg.MX, "mx", "127.0.0.2", "the address every domain's mail exchanger resolves to (loopback only)")
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
	zone := benchZone{mx: mx}
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
	fmt.Fprintf(stderr, "sesame-bench dns: answering on %s, every MX resolves to %s\n", listen, mx)
	<-ctx.Done()
	udp.Shutdown()
	tcp.Shutdown()
	return 0
}
