package smtpd

import (
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// connLimits counts open connections in total and per client IP, and keeps
// them, so a shutdown can close the idle ones. go-smtp creates a session
// only at EHLO, so this lives in a net.Listener wrapper that sees every
// connection as it is accepted.
type connLimits struct {
	max, maxPerIP int

	mu    sync.Mutex
	total int
	perIP map[string]int
	open  map[*limitedConn]struct{}
}

func newConnLimits(max, maxPerIP int) *connLimits {
	return &connLimits{max: max, maxPerIP: maxPerIP, perIP: map[string]int{}, open: map[*limitedConn]struct{}{}}
}

// closeIdle closes the connections not in the middle of a mail
// transaction (all of them when all is set) and reports how many are left.
func (l *connLimits) closeIdle(all bool) int {
	l.mu.Lock()
	var idle []*limitedConn
	for c := range l.open {
		if all || c.state.CompareAndSwap(connIdle, connClosing) {
			idle = append(idle, c)
		}
	}
	left := len(l.open) - len(idle)
	l.mu.Unlock()
	for _, c := range idle {
		c.Close()
	}
	return left
}

// acquire reserves a slot for ip, reporting false when a cap is reached.
func (l *connLimits) acquire(ip string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if (l.max > 0 && l.total >= l.max) || (l.maxPerIP > 0 && l.perIP[ip] >= l.maxPerIP) {
		return false
	}
	l.total++
	l.perIP[ip]++
	return true
}

func (l *connLimits) release(c *limitedConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.open, c)
	ip := c.ip
	l.total--
	if l.perIP[ip]--; l.perIP[ip] <= 0 {
		delete(l.perIP, ip)
	}
}

// limitedListener enforces connLimits and gives each connection a read
// deadline that moves forward with every read. go-smtp sets a deadline per
// command only, which would cut off a slow but live upload of a large
// message; here an upload lasts as long as bytes keep coming.
type limitedListener struct {
	net.Listener
	limits   *connLimits
	guard    *authGuard
	timeout  time.Duration
	greet    bool // plain-text listener: tell a refused client why
	hostname string
	log      *slog.Logger
	accepted func() // counts an accepted connection
}

func (l *limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c.RemoteAddr())
		if l.guard.networkBlocked(ip) {
			l.log.Warn("connection refused: too many failed logins from this network", "client", ip)
			if l.greet {
				c.SetWriteDeadline(time.Now().Add(time.Second))
				c.Write([]byte("421 4.7.0 " + l.hostname + " Too many failed logins from your network; try again later\r\n"))
			}
			c.Close()
			continue
		}
		if !l.limits.acquire(ip) {
			l.log.Warn("connection refused: too many connections", "client", ip)
			if l.greet {
				c.SetWriteDeadline(time.Now().Add(time.Second))
				c.Write([]byte("421 4.7.0 " + l.hostname + " Too many connections, try again later\r\n"))
			}
			c.Close()
			continue
		}
		l.accepted()
		lc := &limitedConn{Conn: c, ip: ip, limits: l.limits, timeout: l.timeout}
		l.limits.mu.Lock()
		l.limits.open[lc] = struct{}{}
		l.limits.mu.Unlock()
		return lc, nil
	}
}

// Connection states (limitedConn.state).
const (
	connIdle int32 = iota
	connInTransaction
	connClosing
)

type limitedConn struct {
	net.Conn
	ip      string
	limits  *connLimits
	timeout time.Duration
	once    sync.Once
	// state is connIdle, connInTransaction (from MAIL to the end of DATA:
	// a shutdown lets it finish) or connClosing (a shutdown is closing it:
	// no transaction may start). Changed only by compare-and-swap, so a
	// shutdown never closes a connection whose transaction just began.
	state atomic.Int32
	// authFailures counts failed logins on this connection; hangUp makes
	// the next read end it (after the refusal has been written).
	authFailures atomic.Int32
	hangUp       atomic.Bool
	// ended is set once a read failed (the client closed, or timed out):
	// whatever was being received is incomplete. go-smtp takes a BDAT
	// chunk cut short by the end of the connection for a whole one, so
	// Data checks this before queueing.
	ended atomic.Bool
}

func (c *limitedConn) Read(p []byte) (int, error) {
	if c.hangUp.Load() {
		return 0, io.EOF
	}
	if c.timeout > 0 {
		c.Conn.SetReadDeadline(time.Now().Add(c.timeout))
	}
	n, err := c.Conn.Read(p)
	if err != nil {
		c.ended.Store(true)
	}
	return n, err
}

func (c *limitedConn) Close() error {
	c.once.Do(func() { c.limits.release(c) })
	return c.Conn.Close()
}
