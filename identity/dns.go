package identity

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

const (
	// udpSize is the EDNS0 buffer size (RFC 6891 §6.2.5) of DNS Flag Day
	// 2020; larger answers, such as RSA DKIM keys with other TXT records,
	// come over TCP.
	udpSize = 1232
	// maxCNAMEHops bounds the CNAMEs followed by hand; a DKIM selector is
	// often a CNAME to a provider's zone.
	maxCNAMEHops = 8
	resolvConf   = "/etc/resolv.conf"
)

// lookupClient asks recursive DNS servers directly, without a cache: a check
// must see what the operator has just published, not what was there an hour
// ago.
type lookupClient struct {
	servers []string // "ip:port"
	timeout time.Duration
	udp     *dns.Client
	tcp     *dns.Client
}

func newLookupClient(servers []string, timeout time.Duration) (*lookupClient, error) {
	if len(servers) == 0 {
		cc, err := dns.ClientConfigFromFile(resolvConf)
		if err == nil && len(cc.Servers) == 0 {
			err = errors.New("no nameserver line")
		}
		if err != nil {
			return nil, fmt.Errorf("identity: reading DNS servers from %s: %w; set [relay] dns_servers", resolvConf, err)
		}
		for _, s := range cc.Servers {
			servers = append(servers, net.JoinHostPort(s, cc.Port))
		}
	}
	for _, s := range servers {
		if _, err := netip.ParseAddrPort(s); err != nil {
			return nil, fmt.Errorf("identity: DNS server %q: want ip:port: %w", s, err)
		}
	}
	return &lookupClient{
		servers: slices.Clone(servers),
		timeout: timeout,
		udp:     &dns.Client{Net: "udp", Timeout: timeout},
		tcp:     &dns.Client{Net: "tcp", Timeout: timeout},
	}, nil
}

// lookup returns the records of type qtype at name, following CNAMEs. No
// records, and no error, when the name does not exist or has none of that
// type. The error says why no server gave a usable answer (SERVFAIL,
// timeout, …): that is not an answer about the record.
func (c *lookupClient) lookup(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	qname := dns.CanonicalName(name)
	for hop := 0; ; hop++ {
		m, err := c.exchange(ctx, qname, qtype)
		if err != nil {
			return nil, fmt.Errorf("DNS lookup of %s %s: %w", name, dns.TypeToString[qtype], err)
		}
		// A recursive server follows CNAMEs itself and puts the records at
		// the end of the chain in the answer (RFC 1034 §4.3.2).
		var rrs []dns.RR
		for _, rr := range m.Answer {
			if h := rr.Header(); h.Rrtype == qtype && h.Class == dns.ClassINET {
				rrs = append(rrs, rr)
			}
		}
		if len(rrs) > 0 || m.Rcode != dns.RcodeSuccess {
			return rrs, nil
		}
		target := cnameTarget(m.Answer, qname)
		if target == qname {
			return nil, nil // NODATA
		}
		if hop == maxCNAMEHops {
			return nil, fmt.Errorf("DNS lookup of %s %s: more than %d CNAMEs", name, dns.TypeToString[qtype], maxCNAMEHops)
		}
		qname = target
	}
}

// cnameTarget follows the CNAME chain from name through answer and returns
// the name at its end.
func cnameTarget(answer []dns.RR, name string) string {
	for range answer { // one step per record at most, so a loop ends
		next := ""
		for _, rr := range answer {
			if c, ok := rr.(*dns.CNAME); ok && strings.EqualFold(c.Hdr.Name, name) {
				next = dns.CanonicalName(c.Target)
				break
			}
		}
		if next == "" {
			break
		}
		name = next
	}
	return name
}

// exchange asks each server in turn and returns the first NOERROR or
// NXDOMAIN reply.
func (c *lookupClient) exchange(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.RecursionDesired = true
	m.SetEdns0(udpSize, false)
	var reasons []string
	for _, server := range c.servers {
		in, err := c.ask(ctx, server, m)
		if err == nil {
			return in, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if reason := reasonOf(err); !slices.Contains(reasons, reason) {
			reasons = append(reasons, reason)
		}
	}
	return nil, errors.New(strings.Join(reasons, "; "))
}

// ask sends m to server over UDP, then over TCP if the reply is truncated
// (RFC 7766 §5).
func (c *lookupClient) ask(ctx context.Context, server string, m *dns.Msg) (*dns.Msg, error) {
	in, err := c.exchangeOver(ctx, c.udp, server, m)
	if err == nil && in.Truncated {
		in, err = c.exchangeOver(ctx, c.tcp, server, m)
	}
	if err != nil {
		return nil, err
	}
	// dns.Client matched the ID; the question must match too (RFC 5452 §9.1).
	if len(in.Question) != 1 || !strings.EqualFold(in.Question[0].Name, m.Question[0].Name) ||
		in.Question[0].Qtype != m.Question[0].Qtype {
		return nil, errors.New("reply to another question")
	}
	if in.Rcode != dns.RcodeSuccess && in.Rcode != dns.RcodeNameError {
		return nil, fmt.Errorf("server answered %s", dns.RcodeToString[in.Rcode])
	}
	return in, nil
}

func (c *lookupClient) exchangeOver(ctx context.Context, dc *dns.Client, server string, m *dns.Msg) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	co, err := dc.DialContext(ctx, server)
	if err != nil {
		return nil, err
	}
	defer co.Close()
	// dns.Client heeds only the deadline; closing the connection makes a
	// cancellation end the wait too.
	stop := context.AfterFunc(ctx, func() { co.Close() })
	defer stop()
	in, _, err := dc.ExchangeWithConnContext(ctx, m, co)
	if err != nil && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return in, err
}

// reasonOf says briefly why a server gave no answer.
func reasonOf(err error) string {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "timeout"
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err.Error()
	}
	return err.Error()
}
