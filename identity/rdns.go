package identity

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/miekg/dns"
)

// CheckIPs looks up what receivers look up of an address before they read
// its mail: the PTR record of each of ips (the configured outbound
// addresses when ips is empty), whether that name resolves back to the
// address (forward-confirmed reverse DNS), and whether it is the host name
// Sesame gives in EHLO. One finding per address, in order. Without
// configured addresses the host name's own addresses are checked, as the
// ones mail most likely leaves from.
func (c *Checker) CheckIPs(ctx context.Context, ips []netip.Addr) ([]Finding, error) {
	if len(ips) == 0 {
		ips, _ = c.cfg.sourceIPs() // checked by NewChecker
	}
	if len(ips) == 0 {
		var f Finding
		if ips, f = c.hostAddrs(ctx); len(ips) == 0 {
			return []Finding{f}, nil
		}
	}
	findings := make([]Finding, len(ips))
	var wg sync.WaitGroup
	for i, ip := range ips {
		wg.Go(func() { findings[i] = c.checkIP(ctx, ip) })
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("identity: check outbound addresses: %w", err)
	}
	return findings, nil
}

// hostAddrs returns the addresses of the host name, or a finding that says
// why there are none to check.
func (c *Checker) hostAddrs(ctx context.Context) ([]netip.Addr, Finding) {
	f := Finding{Record: Record{Type: "A", Name: c.cfg.Hostname, Value: "ADDRESS",
		Purpose: "the addresses of hostname, which mail leaves from when relay.source_ips and [[ip]] name none"}}
	var out []netip.Addr
	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
		ans, err := c.dns.Lookup(ctx, c.cfg.Hostname, qtype)
		if err != nil {
			f.Status, f.LookupErr = StatusUnknown, err
			f.Advice = fmt.Sprintf("DNS lookup of %s %s: %v; check [relay] dns_servers and try again", c.cfg.Hostname, dns.TypeToString[qtype], err)
			return nil, f
		}
		out = append(out, rrAddrs(ans.Records)...)
	}
	if len(out) == 0 {
		f.Status = StatusMissing
		f.Advice = fmt.Sprintf("%s (hostname, the name Sesame gives in EHLO) has no A or AAAA record: publish one with the address mail leaves from, "+
			"or name that address in relay.source_ips so Sesame can check it", c.cfg.Hostname)
	}
	return out, f
}

// checkIP judges the reverse DNS of one outbound address.
func (c *Checker) checkIP(ctx context.Context, ip netip.Addr) Finding {
	host := c.cfg.Hostname
	rev, _ := dns.ReverseAddr(ip.String()) // a valid address always has one
	rev = strings.TrimSuffix(rev, ".")
	f := Finding{Record: Record{Type: "PTR", Name: rev, Value: host,
		Purpose: fmt.Sprintf("reverse DNS of outbound address %s: receivers refuse or junk mail from an address whose PTR name "+
			"does not resolve back to it, and compare that name with the one given in EHLO (%s)", ip, host)}}
	unknown := func(name string, qtype uint16, err error) Finding {
		f.Status, f.LookupErr = StatusUnknown, err
		f.Advice = fmt.Sprintf("DNS lookup of %s %s: %v; check [relay] dns_servers and try again", name, dns.TypeToString[qtype], err)
		return f
	}
	setPTR := fmt.Sprintf("ask whoever runs the network of %s (your provider's \"reverse DNS\" setting) to set its PTR record to %s, "+
		"and publish %s %s %s", ip, host, addrType(ip), host, ip)

	ans, err := c.dns.Lookup(ctx, rev, dns.TypePTR)
	if err != nil {
		return unknown(rev, dns.TypePTR, err)
	}
	var names []string
	for _, rr := range ans.Records {
		if p, ok := rr.(*dns.PTR); ok {
			names = append(names, strings.ToLower(strings.TrimSuffix(p.Ptr, ".")))
		}
	}
	f.Found = names
	if len(names) == 0 {
		f.Status = StatusMissing
		f.Advice = fmt.Sprintf("%s has no PTR record; %s", ip, setPTR)
		return f
	}
	// Forward-confirm each name: it must resolve back to the address.
	var confirmed []string
	var elsewhere []string
	for _, n := range names {
		addrs, qtype, err := c.addrsOf(ctx, n, ip)
		if err != nil {
			return unknown(n, qtype, err)
		}
		if slices.Contains(addrs, ip) {
			confirmed = append(confirmed, n)
			continue
		}
		to := "no " + addrType(ip) + " record"
		if len(addrs) > 0 {
			to = joinAddrs(addrs)
		}
		elsewhere = append(elsewhere, n+" ("+to+")")
	}
	switch {
	case len(confirmed) == 0:
		f.Status = StatusWrong
		f.Advice = fmt.Sprintf("the PTR record of %s names %s, which does not resolve back to %s, so receivers see no valid reverse DNS (FCrDNS); "+
			"publish %s %s %s, or %s", ip, strings.Join(elsewhere, ", "), ip, addrType(ip), names[0], ip, setPTR)
	case slices.Contains(confirmed, host):
		f.Status = StatusOK
	default:
		// The reverse DNS is valid, but Sesame introduces itself as
		// another name: does that one at least hold the address?
		addrs, qtype, err := c.addrsOf(ctx, host, ip)
		if err != nil {
			return unknown(host, qtype, err)
		}
		fix := fmt.Sprintf(`set hostname = %q in the configuration, or have the PTR record of %s changed to %s`, confirmed[0], ip, host)
		if slices.Contains(addrs, ip) {
			f.Status = StatusWarning
			f.Advice = fmt.Sprintf("Sesame says EHLO %s, but the PTR record of %s names %s; receivers that compare them score the mail down: %s",
				host, ip, confirmed[0], fix)
		} else {
			f.Status = StatusWrong
			f.Advice = fmt.Sprintf("Sesame says EHLO %s, which neither is the PTR name of %s (%s) nor resolves to it: %s",
				host, ip, confirmed[0], fix)
		}
	}
	return f
}

// addrsOf looks up the addresses of name in ip's family.
func (c *Checker) addrsOf(ctx context.Context, name string, ip netip.Addr) ([]netip.Addr, uint16, error) {
	qtype := dns.TypeA
	if ip.Is6() {
		qtype = dns.TypeAAAA
	}
	ans, err := c.dns.Lookup(ctx, name, qtype)
	if err != nil {
		return nil, qtype, err
	}
	return rrAddrs(ans.Records), qtype, nil
}

func addrType(ip netip.Addr) string {
	if ip.Is6() {
		return "AAAA"
	}
	return "A"
}

func joinAddrs(addrs []netip.Addr) string {
	var s []string
	for _, a := range addrs {
		s = append(s, a.String())
	}
	return strings.Join(s, ", ")
}
