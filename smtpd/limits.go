package smtpd

import (
	"log/slog"
	"net"
	"sync"
	"time"
)

// connLimits counts open connections in total and per client IP. go-smtp
// creates a session only at EHLO, so the caps live in a net.Listener wrapper
// that sees every connection as it is accepted.
type connLimits struct {
	max, maxPerIP int

	mu    sync.Mutex
	total int
	perIP map[string]int
}

func newConnLimits(max, maxPerIP int) *connLimits {
	return &connLimits{max: max, maxPerIP: maxPerIP, perIP: map[string]int{}}
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

func (l *connLimits) release(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
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
		return &limitedConn{Conn: c, ip: ip, limits: l.limits, timeout: l.timeout}, nil
	}
}

type limitedConn struct {
	net.Conn
	ip      string
	limits  *connLimits
	timeout time.Duration
	once    sync.Once
}

func (c *limitedConn) Read(p []byte) (int, error) {
	if c.timeout > 0 {
		c.Conn.SetReadDeadline(time.Now().Add(c.timeout))
	}
	return c.Conn.Read(p)
}

func (c *limitedConn) Close() error {
	c.once.Do(func() { c.limits.release(c.ip) })
	return c.Conn.Close()
}
