package relay

import (
	"cmp"
	"context"
	"errors"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"
	"github.com/sesame-mail/sesame/dnsclient"
)

const (
	// maxExchangers bounds the MX hosts considered for one domain, so a
	// domain publishing hundreds of MX records cannot make us resolve them
	// all (RFC 5321 §5.1 lets a client limit the addresses it tries).
	maxExchangers = 10
	// Positive answers are kept for their TTL, within these bounds.
	dnsMinTTL = time.Second
	dnsMaxTTL = time.Hour
	// Negative answers are kept for the SOA's minimum (RFC 2308 §5),
	// within these bounds, or dnsDefaultNegTTL when there is no SOA.
	dnsMaxNegTTL     = 15 * time.Minute
	dnsDefaultNegTTL = time.Minute
	// dnsCacheSize bounds the entries of the answer cache.
	dnsCacheSize = 10000
)

// resolver finds the mail exchangers of domains and the addresses of hosts
// with a dnsclient.Client, and caches answers by TTL. It is safe for
// concurrent use.
type resolver struct {
	dns *dnsclient.Client
	now func() time.Time
	// failFor is how long a question that timed out is answered with its
	// timeout again without asking (0: not remembered). A dead domain's
	// name servers then cost one timeout per failFor, not one per message.
	failFor time.Duration

	mu       sync.Mutex
	cache    map[dnsKey]dnsEntry
	cacheMax int
	asking   map[dnsKey]*dnsCall // questions on their way to the servers
	lanes    map[string]*lane    // queries in flight by lane (laneOf)
}

// maxQueriesPerLane bounds the questions on their way to the servers at
// once for one lane: one credential's mail. Thousands of deliveries
// starting together would otherwise send thousands of UDP queries in one
// burst, more than a resolver's socket buffer holds, and the ones it drops
// come back as timeouts. A lane per credential keeps one sender's dead
// domains, each holding a slot for a whole timeout, from making another's
// lookups wait.
const maxQueriesPerLane = 256

// lane counts the queries in flight of one lane.
type lane struct {
	slots chan struct{}
	users int // callers holding or waiting for a slot
}

// laneKey is the context key of a lookup's lane.
type laneKey struct{}

// withLane names the lane of the lookups made with ctx.
func withLane(ctx context.Context, name string) context.Context {
	return context.WithValue(ctx, laneKey{}, name)
}

// enter waits for a slot in ctx's lane; leave gives it back.
func (r *resolver) enter(ctx context.Context) (leave func(), err error) {
	name, _ := ctx.Value(laneKey{}).(string)
	r.mu.Lock()
	l := r.lanes[name]
	if l == nil {
		l = &lane{slots: make(chan struct{}, maxQueriesPerLane)}
		r.lanes[name] = l
	}
	l.users++
	r.mu.Unlock()
	done := func() {
		r.mu.Lock()
		if l.users--; l.users == 0 {
			delete(r.lanes, name)
		}
		r.mu.Unlock()
	}
	select {
	case l.slots <- struct{}{}:
		return func() { <-l.slots; done() }, nil
	case <-ctx.Done():
		done()
		return nil, ctx.Err()
	}
}

// dnsCall is one question on its way; everyone who asks it meanwhile waits
// for the same answer (a burst of mail to one domain asks once).
type dnsCall struct {
	done chan struct{} // closed when ans and err are set
	ans  dnsAnswer
	err  error
}

// sharedLookupTimeout bounds one question asked on behalf of several
// callers, each of whom may stop waiting sooner.
const sharedLookupTimeout = 30 * time.Second

// dnsKey is a question: a lower-case, fully qualified name and a type.
type dnsKey struct {
	name  string
	qtype uint16
}

// dnsAnswer is what DNS says about one question once CNAMEs are followed:
// the records of the asked type, or none; nxdomain tells whether the name
// does not exist at all (RCODE 3) or exists without such records (NODATA).
// Its records are shared with the cache and must not be modified.
type dnsAnswer struct {
	rrs      []dns.RR
	nxdomain bool
}

type dnsEntry struct {
	ans     dnsAnswer
	err     error // a remembered timeout
	expires time.Time
}

// newResolver returns a resolver asking servers ("ip:port"), or the
// nameservers of /etc/resolv.conf when servers is empty. timeout bounds one
// query to one server (default 5s); now is the clock for cache expiry
// (default time.Now).
func newResolver(servers []string, timeout time.Duration, now func() time.Time) (*resolver, error) {
	c, err := dnsclient.New(servers, timeout)
	if err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	return &resolver{
		dns:      c,
		now:      now,
		cache:    make(map[dnsKey]dnsEntry),
		cacheMax: dnsCacheSize,
		asking:   make(map[dnsKey]*dnsCall),
		lanes:    make(map[string]*lane),
	}, nil
}

// exchanger is one mail exchanger of a destination, in the order to try.
type exchanger struct {
	host  string       // the MX target without the trailing dot ("mx1.example.net"), or the domain itself for an implicit MX
	pref  uint16       // the MX preference; 0 for an implicit MX
	addrs []netip.Addr // IPv4 first, then IPv6; unmapped
}

// exchangers returns the hosts to deliver mail for domain (a lower-case
// A-label) to, following RFC 5321 §5.1: the MX hosts by preference, lowest
// first and shuffled among equals, each with its addresses; or the domain
// itself when it has no MX records. Hosts without an address are left out,
// and at most maxExchangers are considered.
//
// Errors are *failure: permanent when DNS says mail cannot be delivered
// (no such domain, null MX, no address anywhere), temporary when a lookup
// failed and a later one may succeed.
func (r *resolver) exchangers(ctx context.Context, domain string) ([]exchanger, error) {
	domain = strings.TrimSuffix(domain, ".")
	if _, ok := dns.IsDomainName(domain); !ok || domain == "" {
		return nil, permanentFailure(smtp.EnhancedCode{5, 1, 2}, "domain %q is not a valid DNS name", domain)
	}
	ans, err := r.lookup(ctx, domain, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	if ans.nxdomain {
		return nil, permanentFailure(smtp.EnhancedCode{5, 1, 2}, "domain %s does not exist", domain)
	}
	if len(ans.rrs) == 0 {
		// RFC 5321 §5.1: without MX records the domain is its own
		// exchanger, with preference 0.
		addrs, err := r.hostAddrs(ctx, domain)
		if err != nil {
			return nil, err
		}
		if len(addrs) == 0 {
			return nil, permanentFailure(smtp.EnhancedCode{5, 4, 4}, "domain %s has no MX and no address record", domain)
		}
		return []exchanger{{host: domain, addrs: addrs}}, nil
	}

	// A copy: the cached records keep their order for other callers.
	mxs := make([]*dns.MX, 0, len(ans.rrs))
	for _, rr := range ans.rrs {
		mx, ok := rr.(*dns.MX)
		if !ok {
			continue
		}
		if mx.Mx == "." {
			// RFC 7505 §3: a null MX says the domain accepts no mail;
			// RFC 7505 §4.1: fail without trying any host, with 5.1.10.
			return nil, permanentFailure(smtp.EnhancedCode{5, 1, 10}, "domain %s accepts no mail (null MX)", domain)
		}
		mxs = append(mxs, mx)
	}
	// RFC 5321 §5.1: lowest preference first, randomized among equal ones
	// to spread the load.
	rand.Shuffle(len(mxs), func(i, j int) { mxs[i], mxs[j] = mxs[j], mxs[i] })
	slices.SortStableFunc(mxs, func(a, b *dns.MX) int { return cmp.Compare(a.Preference, b.Preference) })

	var xs []exchanger
	seen := make(map[string]bool)
	for _, mx := range mxs {
		host := strings.ToLower(strings.TrimSuffix(mx.Mx, "."))
		if seen[host] {
			continue // listed twice: its best preference counts
		}
		seen[host] = true
		xs = append(xs, exchanger{host: host, pref: mx.Preference})
		if len(xs) == maxExchangers {
			break
		}
	}

	// Concurrently, so that slow servers of one host's zone do not add up.
	errs := make([]error, len(xs))
	var wg sync.WaitGroup
	for i := range xs {
		// MX targets are names (RFC 5321 §5.1): an IP literal in one is
		// looked up as a name, not used as an address.
		wg.Go(func() { xs[i].addrs, errs[i] = r.hostAddrs(ctx, xs[i].host) })
	}
	wg.Wait()
	var tempErr error
	found := xs[:0]
	for i, x := range xs {
		switch {
		case errs[i] != nil:
			tempErr = cmp.Or(tempErr, errs[i])
		case len(x.addrs) > 0:
			found = append(found, x)
		}
	}
	if len(found) > 0 {
		return found, nil
	}
	if tempErr != nil {
		return nil, tempErr
	}
	return nil, permanentFailure(smtp.EnhancedCode{5, 4, 4}, "no address for the mail exchangers of %s", domain)
}

// lookupHost returns the A then AAAA addresses of host, or the IP itself if
// host is an IP literal. Errors are *failure: permanent 5.4.4 when host has
// no address, temporary 4.4.3 when the lookup failed.
func (r *resolver) lookupHost(ctx context.Context, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{ip.Unmap()}, nil
	}
	addrs, err := r.hostAddrs(ctx, strings.TrimSuffix(host, "."))
	if err != nil {
		return nil, err
	}
	if len(addrs) == 0 {
		return nil, permanentFailure(smtp.EnhancedCode{5, 4, 4}, "host %s has no address record", host)
	}
	return addrs, nil
}

// hostAddrs returns the IPv4 then IPv6 addresses of host; none, and no
// error, when DNS says it has none. Like Go's resolver it is content with
// one family when the other's lookup failed: a server that fails AAAA
// queries must not hold up delivery over IPv4.
func (r *resolver) hostAddrs(ctx context.Context, host string) ([]netip.Addr, error) {
	var v6 dnsAnswer
	var err6 error
	var wg sync.WaitGroup
	wg.Go(func() { v6, err6 = r.lookup(ctx, host, dns.TypeAAAA) })
	v4, err4 := r.lookup(ctx, host, dns.TypeA)
	wg.Wait()

	var addrs []netip.Addr
	for _, rr := range v4.rrs {
		if a, ok := rr.(*dns.A); ok {
			if ip, ok := netip.AddrFromSlice(a.A); ok {
				addrs = append(addrs, ip.Unmap())
			}
		}
	}
	for _, rr := range v6.rrs {
		if a, ok := rr.(*dns.AAAA); ok {
			if ip, ok := netip.AddrFromSlice(a.AAAA); ok {
				addrs = append(addrs, ip.Unmap())
			}
		}
	}
	if len(addrs) == 0 {
		if err := cmp.Or(err4, err6); err != nil {
			return nil, err
		}
	}
	return addrs, nil
}

// lookup answers the question (name, qtype) from the cache or the servers,
// following CNAMEs. Callers asking the same question at the same time share
// one query. Its error is a temporary *failure; a timeout is remembered for
// failFor, other errors are not cached.
func (r *resolver) lookup(ctx context.Context, name string, qtype uint16) (dnsAnswer, error) {
	key := dnsKey{dns.CanonicalName(name), qtype}
	now := r.now()
	r.mu.Lock()
	if e, ok := r.cache[key]; ok && now.Before(e.expires) {
		r.mu.Unlock()
		return e.ans, e.err
	}
	c, ok := r.asking[key]
	if !ok && ctx.Err() != nil {
		r.mu.Unlock()
		return dnsAnswer{}, temporaryFailure(smtp.EnhancedCode{4, 4, 3}, "DNS lookup of %s %s did not finish in time",
			strings.TrimSuffix(key.name, "."), dns.TypeToString[key.qtype])
	}
	if !ok {
		c = &dnsCall{done: make(chan struct{})}
		r.asking[key] = c
		// The query is not the first caller's alone: it runs to its own
		// end, so a caller that gives up does not fail the others.
		go r.ask(context.WithoutCancel(ctx), key, c)
	}
	r.mu.Unlock()
	select {
	case <-c.done:
		return c.ans, c.err
	case <-ctx.Done():
		return dnsAnswer{}, temporaryFailure(smtp.EnhancedCode{4, 4, 3}, "DNS lookup of %s %s did not finish in time",
			strings.TrimSuffix(key.name, "."), dns.TypeToString[key.qtype])
	}
}

// ask puts key's question to the servers for c and caches the answer.
func (r *resolver) ask(ctx context.Context, key dnsKey, c *dnsCall) {
	defer func() {
		r.mu.Lock()
		delete(r.asking, key)
		r.mu.Unlock()
		close(c.done)
	}()
	ctx, cancel := context.WithTimeout(ctx, sharedLookupTimeout)
	defer cancel()
	var a dnsclient.Answer
	leave, err := r.enter(ctx)
	if err == nil {
		a, err = r.dns.Lookup(ctx, key.name, key.qtype)
		leave()
	}
	if err != nil {
		c.err = temporaryFailure(smtp.EnhancedCode{4, 4, 3}, "DNS lookup of %s %s failed: %v",
			strings.TrimSuffix(key.name, "."), dns.TypeToString[key.qtype], err)
		if r.failFor > 0 && (errors.Is(err, dnsclient.ErrTimeout) || errors.Is(err, context.DeadlineExceeded)) {
			r.remember(key, dnsEntry{err: c.err}, r.failFor)
		}
		return
	}
	c.ans = dnsAnswer{rrs: a.Records, nxdomain: a.NXDomain}
	ttl := min(a.TTL, dnsMaxTTL) // the least TTL of the records the answer rests on
	if len(c.ans.rrs) == 0 {
		ttl = min(ttl, negativeTTL(a.SOA))
	}
	r.remember(key, dnsEntry{ans: c.ans}, max(ttl, dnsMinTTL))
}

// negativeTTL is how long to cache a negative answer: the SOA record's
// MINIMUM field or its TTL, whichever is less (RFC 2308 §5), capped;
// dnsDefaultNegTTL without an SOA.
func negativeTTL(soa *dns.SOA) time.Duration {
	if soa == nil {
		return dnsDefaultNegTTL
	}
	return min(time.Duration(min(soa.Hdr.Ttl, soa.Minttl))*time.Second, dnsMaxNegTTL)
}

// remember caches e for ttl. A full cache first drops its expired
// entries, then arbitrary ones down to 90%, so a full cache of live entries
// is not scanned on every insert.
func (r *resolver) remember(key dnsKey, e dnsEntry, ttl time.Duration) {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.cache[key]; !ok && len(r.cache) >= r.cacheMax {
		for k, e := range r.cache {
			if !now.Before(e.expires) {
				delete(r.cache, k)
			}
		}
		if len(r.cache) >= r.cacheMax {
			for k := range r.cache {
				if len(r.cache) < r.cacheMax-r.cacheMax/10 {
					break
				}
				delete(r.cache, k)
			}
		}
	}
	e.expires = now.Add(ttl)
	r.cache[key] = e
}
