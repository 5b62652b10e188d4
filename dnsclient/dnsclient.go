// Package dnsclient asks DNS servers questions: the recursive servers given
// to it, or those of /etc/resolv.conf, over UDP and again over TCP when the
// reply was truncated (RFC 7766 §5), following the CNAMEs a server leaves to
// the client. It keeps no cache; a caller that wants one keeps its own.
//
// A reply is believed only if it answers the question asked (RFC 5452 §9.1)
// with NOERROR or NXDOMAIN, from a server that recurses. Otherwise the next
// server is asked. When none gives a usable reply, the error says briefly
// why, without server addresses: the text ends up in queues, bounces and the
// web interface.
package dnsclient

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

const (
	// udpSize is the EDNS0 buffer size (RFC 6891 §6.2.5) of DNS Flag Day
	// 2020: large enough for most answers, small enough not to fragment.
	// Larger answers, such as RSA DKIM keys beside other TXT records, come
	// over TCP.
	udpSize = 1232
	// maxCNAMEHops bounds the CNAMEs followed by hand for one question; a
	// DKIM selector is often a CNAME to a provider's zone.
	maxCNAMEHops = 8
	// defaultTimeout bounds one query to one server when New is given no
	// timeout; it is the resolv.conf default.
	defaultTimeout = 5 * time.Second

	// maxTTL is the largest TTL (RFC 2181 §8): the TTL of an answer that
	// rests on no record.
	maxTTL     = math.MaxInt32 * time.Second
	resolvConf = "/etc/resolv.conf"
)

// Client asks a list of recursive DNS servers. It is safe for concurrent
// use.
//
// The servers must be recursive: the client sets RD and follows the CNAMEs
// a server leaves to it, but never walks down from the root itself.
type Client struct {
	servers []string // "ip:port"
	timeout time.Duration
	udp     *dns.Client
	tcp     *dns.Client
	next    atomic.Uint64 // rotates the server asked first
}

// New returns a client asking servers ("ip:port"), or the nameservers of
// /etc/resolv.conf when servers is empty. timeout bounds one query to one
// server (5s when not positive).
func New(servers []string, timeout time.Duration) (*Client, error) {
	if len(servers) == 0 {
		var err error
		if servers, err = systemServers(resolvConf); err != nil {
			return nil, err
		}
	}
	for _, s := range servers {
		if _, err := netip.ParseAddrPort(s); err != nil {
			return nil, fmt.Errorf("DNS server %q: want ip:port: %w", s, err)
		}
	}
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	return &Client{
		servers: slices.Clone(servers),
		timeout: timeout,
		udp:     &dns.Client{Net: "udp", Timeout: timeout},
		tcp:     &dns.Client{Net: "tcp", Timeout: timeout},
	}, nil
}

// systemServers returns the nameservers of the resolv.conf file at path as
// "ip:port" strings.
func systemServers(path string) ([]string, error) {
	cc, err := dns.ClientConfigFromFile(path)
	if err == nil && len(cc.Servers) == 0 {
		err = errors.New("no nameserver line")
	}
	if err != nil {
		return nil, fmt.Errorf("reading DNS servers from %s: %w; set [relay] dns_servers", path, err)
	}
	servers := make([]string, len(cc.Servers))
	for i, s := range cc.Servers {
		servers[i] = net.JoinHostPort(s, cc.Port)
	}
	return servers, nil
}

// Answer is what DNS says about a question once CNAMEs are followed.
type Answer struct {
	// Records are the records of the asked type and class IN; none when
	// the answer is negative. A recursive server that followed a CNAME
	// chain gives the records at its end, owned by the chain's last name.
	Records []dns.RR
	// NXDomain tells, for a negative answer, whether the name at the end
	// of the CNAME chain does not exist at all (RCODE 3) or exists without
	// records of the asked type (NODATA).
	NXDomain bool
	// TTL is the least TTL of the records and of the CNAMEs followed by
	// hand to them; the largest TTL there is when the answer rests on
	// none.
	TTL time.Duration
	// SOA is, for a negative answer, the SOA record of the reply's
	// authority section, whose TTL and MINIMUM say how long the answer may
	// be cached (RFC 2308 §5); nil when there was none.
	SOA *dns.SOA
}

// Lookup asks for the records of type qtype at name, following at most 8
// CNAMEs. Each question goes to the servers in turn, starting with a
// different one each time.
//
// A name that does not exist, or has no such records, is a negative Answer
// and no error. The error is ctx's when ctx ended; otherwise it says why no
// server gave a usable reply ("timeout", "server answered SERVFAIL", the
// distinct reasons joined by "; "; ErrTimeout when every server timed out),
// or that the CNAME chain was too long.
// It is not an answer about the name, and names no server.
func (c *Client) Lookup(ctx context.Context, name string, qtype uint16) (Answer, error) {
	qname := dns.CanonicalName(name)
	ttl := maxTTL
	for hop := 0; ; hop++ {
		m, err := c.exchange(ctx, qname, qtype)
		if err != nil {
			return Answer{}, err
		}
		// A recursive server follows the CNAME chain and puts the records
		// found at its end in the answer (RFC 1034 §4.3.2), so they count
		// whatever their owner name.
		var ans Answer
		for _, rr := range m.Answer {
			if h := rr.Header(); h.Rrtype == qtype && h.Class == dns.ClassINET {
				ans.Records = append(ans.Records, rr)
				ttl = min(ttl, time.Duration(h.Ttl)*time.Second)
			}
		}
		if len(ans.Records) > 0 {
			ans.TTL = ttl
			return ans, nil
		}
		target, cnameTTL := cnameTarget(m.Answer, qname)
		ttl = min(ttl, cnameTTL)
		if m.Rcode == dns.RcodeSuccess && target != qname {
			// The chain stops at a name whose records the server did not
			// give: ask for them ourselves.
			if hop == maxCNAMEHops {
				return Answer{}, fmt.Errorf("more than %d CNAMEs", maxCNAMEHops)
			}
			qname = target
			continue
		}
		// NXDOMAIN or NODATA, about the name at the end of the chain.
		ans.NXDomain = m.Rcode == dns.RcodeNameError
		ans.TTL = ttl
		for _, rr := range m.Ns {
			if soa, ok := rr.(*dns.SOA); ok {
				ans.SOA = soa
				break
			}
		}
		return ans, nil
	}
}

// cnameTarget follows the CNAME chain that starts at name through answer and
// returns the name at its end (name itself without a CNAME) and the least
// TTL of the CNAMEs on the way.
func cnameTarget(answer []dns.RR, name string) (string, time.Duration) {
	ttl := maxTTL
	for range answer { // at most one step per record, so a loop ends
		var next *dns.CNAME
		for _, rr := range answer {
			if c, ok := rr.(*dns.CNAME); ok && strings.EqualFold(c.Hdr.Name, name) {
				next = c
				break
			}
		}
		if next == nil {
			break
		}
		name = dns.CanonicalName(next.Target)
		ttl = min(ttl, time.Duration(next.Hdr.Ttl)*time.Second)
	}
	return name, ttl
}

// exchange asks the servers the question in turn, starting with a different
// one each time, and returns the first usable reply: NOERROR or NXDOMAIN.
func (c *Client) exchange(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.RecursionDesired = true // we do not iterate (RFC 1035 §4.1.1)
	m.SetEdns0(udpSize, false)

	start := c.next.Add(1) - 1
	var reasons []string
	for i := range c.servers {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		server := c.servers[(start+uint64(i))%uint64(len(c.servers))]
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
	if len(reasons) == 1 && reasons[0] == "timeout" {
		return nil, ErrTimeout
	}
	return nil, errors.New(strings.Join(reasons, "; "))
}

// ErrTimeout is Lookup's error when no server answered in time: a caller
// may remember it, since asking again at once would only wait as long again.
var ErrTimeout = errors.New("timeout")

// ask sends m to one server over UDP, and over TCP when the UDP reply is
// truncated (RFC 7766 §5), and checks that the reply is usable.
func (c *Client) ask(ctx context.Context, server string, m *dns.Msg) (*dns.Msg, error) {
	in, err := c.exchangeOver(ctx, c.udp, server, m)
	if err == nil && in.Truncated {
		in, err = c.exchangeOver(ctx, c.tcp, server, m)
	}
	if err != nil {
		return nil, err
	}
	// dns.Client matched the ID; also match the question (RFC 5452 §9.1).
	if len(in.Question) != 1 || !strings.EqualFold(in.Question[0].Name, m.Question[0].Name) ||
		in.Question[0].Qtype != m.Question[0].Qtype {
		return nil, errors.New("reply to another question")
	}
	switch in.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
	default:
		return nil, fmt.Errorf("server answered %s", dns.RcodeToString[in.Rcode])
	}
	// A server that does not recurse answers a name outside its zones with
	// a referral: NOERROR, no answer, no SOA. Taken as NODATA it would
	// bounce mail or call a published record missing, so it counts as a
	// failure of that server.
	if in.Rcode == dns.RcodeSuccess && len(in.Answer) == 0 && !in.Authoritative && !in.RecursionAvailable &&
		!slices.ContainsFunc(in.Ns, func(rr dns.RR) bool { return rr.Header().Rrtype == dns.TypeSOA }) {
		return nil, errors.New("server does not recurse")
	}
	return in, nil
}

// exchangeOver sends m to server with dc and waits for the reply, for at
// most c.timeout and until ctx ends.
func (c *Client) exchangeOver(ctx context.Context, dc *dns.Client, server string, m *dns.Msg) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	co, err := dc.DialContext(ctx, server)
	if err != nil {
		return nil, err
	}
	defer co.Close()
	// dns.Client heeds only the context's deadline; closing the connection
	// makes a cancellation end the wait too.
	stop := context.AfterFunc(ctx, func() { co.Close() })
	defer stop()
	in, _, err := dc.ExchangeWithConnContext(ctx, m, co)
	if err != nil && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return in, err
}

// reasonOf says briefly why a server failed, without its address.
func reasonOf(err error) string {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) {
		return "timeout"
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err.Error()
	}
	return err.Error()
}
