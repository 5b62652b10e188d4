package smtpd

import (
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sesame-mail/sesame/netguard"
)

// The connection caps, the shedding of unauthenticated connections and the
// read deadlines (ReadTimeout after AUTH, the shorter
// UnauthenticatedReadTimeout before) are netguard's, shared with every other
// listener. go-smtp creates a session only at EHLO, so what is left here
// lives in a net.Listener wrapper above netguard's that sees every
// connection as it is accepted: the refusal of networks blocked for
// password guessing, and the state a shutdown and the session need.

// newConnGuard returns the guard of the submission listeners.
func newConnGuard(cfg Config, m netguard.Metrics, log *slog.Logger) *netguard.Guard {
	return netguard.New(netguard.Config{
		Name:                       "submission",
		MaxConns:                   cfg.MaxConnections,
		MaxPerIP:                   cfg.MaxConnectionsPerIP,
		MaxUnauthenticated:         cfg.MaxUnauthenticatedConnections,
		MaxUnauthenticatedPerIP:    cfg.MaxUnauthenticatedConnectionsPerIP,
		ReadTimeout:                cfg.ReadTimeout,
		UnauthenticatedReadTimeout: cfg.UnauthenticatedReadTimeout,
		Logger:                     log,
		Metrics:                    m,
	})
}

// refuse421 tells a client refused at connect why, on the plain-text
// listeners (on an implicit-TLS one nothing can be said before the
// handshake).
func refuse421(hostname string) netguard.RefuseFunc {
	return func(c net.Conn, reason string) {
		text := "Too many connections from your network, try again later"
		if reason == netguard.RefusedTotal {
			text = "Too many connections, try again later"
		}
		io.WriteString(c, "421 4.7.0 "+hostname+" "+text+"\r\n")
	}
}

// openConns keeps the open connections, so a shutdown can close the idle
// ones.
type openConns struct {
	mu   sync.Mutex
	open map[*limitedConn]struct{}
}

func newOpenConns() *openConns { return &openConns{open: map[*limitedConn]struct{}{}} }

// closeIdle closes the connections not in the middle of a mail
// transaction (all of them when all is set) and reports how many are left.
func (o *openConns) closeIdle(all bool) int {
	o.mu.Lock()
	var idle []*limitedConn
	for c := range o.open {
		if all || c.state.CompareAndSwap(connIdle, connClosing) {
			idle = append(idle, c)
		}
	}
	left := len(o.open) - len(idle)
	o.mu.Unlock()
	for _, c := range idle {
		c.Close()
	}
	return left
}

func (o *openConns) add(c *limitedConn) {
	o.mu.Lock()
	o.open[c] = struct{}{}
	o.mu.Unlock()
}

func (o *openConns) remove(c *limitedConn) {
	o.mu.Lock()
	delete(o.open, c)
	o.mu.Unlock()
}

// limitedListener refuses networks blocked for password guessing and keeps
// each connection's state, on top of a netguard listener.
type limitedListener struct {
	net.Listener // netguard's
	open         *openConns
	guard        *authGuard
	greet        bool // plain-text listener: tell a refused client why
	hostname     string
	log          *slog.Logger
	accepted     func() // counts an accepted connection
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
		l.accepted()
		lc := &limitedConn{Conn: c, open: l.open}
		if gc, ok := c.(*netguard.Conn); ok {
			lc.guarded = gc
		}
		l.open.add(lc)
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
	guarded *netguard.Conn // the same connection, for its authentication
	open    *openConns
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
	n, err := c.Conn.Read(p)
	if err != nil {
		c.ended.Store(true)
	}
	return n, err
}

// authenticated moves the connection out of the unauthenticated caps and
// onto the longer read timeout.
func (c *limitedConn) authenticated() {
	if c.guarded != nil {
		c.guarded.Authenticated()
	}
}

func (c *limitedConn) Close() error {
	c.once.Do(func() { c.open.remove(c) })
	return c.Conn.Close()
}
