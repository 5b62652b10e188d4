// Package netguard guards Sesame's public listeners: the submission ports,
// the inbound port and the HTTP listener (and, to come, the SES-compatible
// API and the console). Every listener is a door anyone can knock on, so
// each one is wrapped here, in one place, rather than each package growing
// its own caps.
//
// A Guard wraps one or more net.Listeners (Wrap) that share its caps:
//
//   - open connections in total (MaxConns) and per client network
//     (MaxPerIP), where a network is an IPv4 address or an IPv6 /64: one
//     host usually owns a whole /64, so counting single IPv6 addresses
//     would give it 2^64 slots;
//   - lower caps for connections that have not authenticated yet, in total
//     (MaxUnauthenticated) and per network (MaxUnauthenticatedPerIP). A
//     connection starts unauthenticated; the protocol calls
//     Conn.Authenticated once the client has proved who it is (SMTP AUTH),
//     and from then on it counts only against the first caps. Slots beyond
//     the unauthenticated cap are thus kept for clients that logged in.
//
// A network over its cap is refused at once: its connection is closed
// (after the refuse callback given to Wrap, e.g. an SMTP 421). When the
// total or the unauthenticated total is full, the unauthenticated
// connection that has been idle longest (no byte received for the longest
// time) is closed to make room: strangers are shed before anyone who
// logged in, and a new client, which always starts unauthenticated, still
// gets in. Only when every slot belongs to an authenticated connection is a
// new one refused.
//
// Accept errors such as EMFILE (the process is out of file descriptors)
// are logged at ERROR, counted, and retried with a backoff (5 ms doubling
// to 1 s) instead of being handed to the server, which would log them
// quietly or spin. Out of descriptors with a client waiting in the accept
// queue, the longest idle unauthenticated connection is shed as well, so
// the descriptor it frees lets that client in.
//
// A Conn can also carry the read timeout: each Read sets a deadline
// ReadTimeout ahead (UnauthenticatedReadTimeout before Authenticated), so an
// idle client is cut off but a slow upload that keeps sending is not. HTTP
// servers set their own deadlines and leave both at zero (HTTPServer sets
// the HTTP timeouts).
package netguard

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Metrics counts what a guard does. listener is Config.Name; reason is one
// of the Refused constants, so label values stay bounded.
type Metrics interface {
	ConnRefused(listener, reason string)
	ConnShed(listener string)
	AcceptError(listener string)
}

// Reasons a connection is refused at accept (Metrics.ConnRefused and the
// refuse callback of Wrap).
const (
	RefusedPerIP                = "per_ip"
	RefusedUnauthenticatedPerIP = "unauthenticated_per_ip"
	RefusedTotal                = "total"
)

// Config sets a guard's caps. A zero cap is no cap.
type Config struct {
	// Name names the listener in logs and metrics ("submission",
	// "inbound", "http").
	Name                    string
	MaxConns                int
	MaxPerIP                int
	MaxUnauthenticated      int
	MaxUnauthenticatedPerIP int
	// ReadTimeout, when set, is the deadline each Read of an
	// authenticated connection gets; UnauthenticatedReadTimeout that of
	// one not (yet) authenticated (0: ReadTimeout).
	ReadTimeout                time.Duration
	UnauthenticatedReadTimeout time.Duration
	Logger                     *slog.Logger
	Metrics                    Metrics // nil: none
}

// Stats is a guard's open connections, for the metrics.
type Stats struct {
	Listener        string
	Authenticated   int
	Unauthenticated int
}

// Guard counts the connections of the listeners it wraps. Safe for
// concurrent use.
type Guard struct {
	cfg   Config
	log   *slog.Logger
	epoch time.Time // Conn.lastRead counts from here (monotonic)

	// Log lines about refusals, sheds and accept errors: at most one a
	// second each, with how many were left out, so a flood does not flood
	// the log too.
	refusedLog, shedLog, acceptLog throttle

	mu     sync.Mutex
	total  int
	unauth int
	perNet map[netip.Prefix]*counts
	open   map[*Conn]struct{}
}

type counts struct{ all, unauth int }

type noMetrics struct{}

func (noMetrics) ConnRefused(string, string) {}
func (noMetrics) ConnShed(string)            {}
func (noMetrics) AcceptError(string)         {}

// New returns a guard with cfg's caps.
func New(cfg Config) *Guard {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = noMetrics{}
	}
	if cfg.UnauthenticatedReadTimeout <= 0 {
		cfg.UnauthenticatedReadTimeout = cfg.ReadTimeout
	}
	return &Guard{cfg: cfg, log: cfg.Logger, epoch: time.Now(), perNet: map[netip.Prefix]*counts{}, open: map[*Conn]struct{}{}}
}

// Stats returns the open connections, authenticated and not.
func (g *Guard) Stats() Stats {
	g.mu.Lock()
	defer g.mu.Unlock()
	return Stats{Listener: g.cfg.Name, Authenticated: g.total - g.unauth, Unauthenticated: g.unauth}
}

// Network is the client network a per-IP cap counts: the address itself
// for IPv4 (and IPv4-mapped IPv6), its /64 for IPv6.
func Network(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	if a.Is4() {
		return netip.PrefixFrom(a, 32)
	}
	p, _ := a.Prefix(64)
	return p
}

// NetworkOf is Network of an address written as text; text that is not an
// address is its own network.
func NetworkOf(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	p := Network(a)
	if p.Bits() == 32 {
		return p.Addr().String()
	}
	return p.String()
}

// addrOf is the client address of a connection (the zero Addr when the
// connection is not TCP: every such connection shares one network).
func addrOf(c net.Conn) netip.Addr {
	if tcp, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		if a, ok := netip.AddrFromSlice(tcp.IP); ok {
			return a.Unmap()
		}
	}
	return netip.Addr{}
}

// admit counts c in, or returns why not. To make room it may release the
// longest idle unauthenticated connection, which the caller then closes.
func (g *Guard) admit(c *Conn) (shed *Conn, refused string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := g.perNet[c.network]
	if n == nil {
		n = &counts{}
	}
	switch {
	case g.cfg.MaxPerIP > 0 && n.all >= g.cfg.MaxPerIP:
		return nil, RefusedPerIP
	case g.cfg.MaxUnauthenticatedPerIP > 0 && n.unauth >= g.cfg.MaxUnauthenticatedPerIP:
		return nil, RefusedUnauthenticatedPerIP
	}
	if (g.cfg.MaxConns > 0 && g.total >= g.cfg.MaxConns) ||
		(g.cfg.MaxUnauthenticated > 0 && g.unauth >= g.cfg.MaxUnauthenticated) {
		if shed = g.idlestLocked(); shed == nil {
			return nil, RefusedTotal // every slot is an authenticated client's
		}
		g.releaseLocked(shed)
	}
	g.perNet[c.network] = n
	n.all++
	n.unauth++
	g.total++
	g.unauth++
	g.open[c] = struct{}{}
	return shed, ""
}

// idlestLocked returns the unauthenticated connection that has received
// nothing for the longest time, or nil.
func (g *Guard) idlestLocked() *Conn {
	var idlest *Conn
	var oldest int64
	for c := range g.open {
		if c.auth.Load() {
			continue
		}
		if t := c.lastRead.Load(); idlest == nil || t < oldest {
			idlest, oldest = c, t
		}
	}
	return idlest
}

// shedIdlest releases and closes the longest idle unauthenticated
// connection, reporting whether there was one.
func (g *Guard) shedIdlest() bool {
	g.mu.Lock()
	c := g.idlestLocked()
	if c != nil {
		g.releaseLocked(c)
	}
	g.mu.Unlock()
	if c == nil {
		return false
	}
	g.shed(c, "out of file descriptors")
	return true
}

// shed closes a connection released to make room.
func (g *Guard) shed(c *Conn, why string) {
	g.cfg.Metrics.ConnShed(g.cfg.Name)
	if ok, skipped := g.shedLog.allow(); ok {
		g.log.Warn("closed the longest idle unauthenticated connection to make room", "listener", g.cfg.Name,
			"client", c.addr.String(), "why", why, "idle", time.Duration(g.since()-c.lastRead.Load()).Round(time.Millisecond),
			"left_out", skipped)
	}
	c.Close()
}

// authenticate moves c from the unauthenticated counts.
func (g *Guard) authenticate(c *Conn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if c.auth.Load() || c.released {
		return
	}
	c.auth.Store(true)
	g.unauth--
	g.perNet[c.network].unauth--
}

// releaseLocked gives c's slot back, once.
func (g *Guard) releaseLocked(c *Conn) {
	if c.released {
		return
	}
	c.released = true
	delete(g.open, c)
	n := g.perNet[c.network]
	n.all--
	g.total--
	if !c.auth.Load() {
		n.unauth--
		g.unauth--
	}
	if n.all <= 0 {
		delete(g.perNet, c.network)
	}
}

func (g *Guard) release(c *Conn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.releaseLocked(c)
}

// since is the monotonic time since the guard was made.
func (g *Guard) since() int64 { return int64(time.Since(g.epoch)) }

// throttle lets one event through a second, counting the others.
type throttle struct {
	mu      sync.Mutex
	next    time.Time
	skipped int
}

func (t *throttle) allow() (ok bool, skipped int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	if now.Before(t.next) {
		t.skipped++
		return false, 0
	}
	t.next = now.Add(time.Second)
	skipped, t.skipped = t.skipped, 0
	return true, skipped
}
