package netguard

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// RefuseFunc tells a refused client why before its connection is closed
// (an SMTP listener writes 421; a TLS or HTTP listener passes nil and the
// connection is just closed). It runs in the accept loop with a one-second
// write deadline set; reason is one of the Refused constants.
type RefuseFunc func(c net.Conn, reason string)

// Wrap returns l guarded by g: Accept returns only connections within the
// caps, as *Conn.
func (g *Guard) Wrap(l net.Listener, refuse RefuseFunc) net.Listener {
	return &listener{Listener: l, g: g, refuse: refuse, closed: make(chan struct{})}
}

type listener struct {
	net.Listener
	g      *Guard
	refuse RefuseFunc

	closeOnce sync.Once
	closed    chan struct{}
}

// Backoff after an accept error, as net/http and go-smtp do it.
const (
	minAcceptBackoff = 5 * time.Millisecond
	maxAcceptBackoff = time.Second
)

func (l *listener) Accept() (net.Conn, error) {
	var backoff time.Duration
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			if !retryable(err) {
				return nil, err
			}
			if l.g.acceptFailed(err, l.Listener) {
				continue // a descriptor was freed for the client waiting
			}
			backoff = min(max(2*backoff, minAcceptBackoff), maxAcceptBackoff)
			select {
			case <-time.After(backoff):
				continue
			case <-l.closed:
				return nil, net.ErrClosed
			}
		}
		backoff = 0
		g := l.g
		a := addrOf(nc)
		c := &Conn{Conn: nc, g: g, addr: a, network: Network(a)}
		c.lastRead.Store(g.since())
		shed, refused := g.admit(c)
		if refused != "" {
			g.cfg.Metrics.ConnRefused(g.cfg.Name, refused)
			if ok, skipped := g.refusedLog.allow(); ok {
				g.log.Warn("connection refused: too many connections", "listener", g.cfg.Name, "client", a.String(),
					"cap", refused, "left_out", skipped)
			}
			if l.refuse != nil {
				nc.SetWriteDeadline(time.Now().Add(time.Second))
				l.refuse(nc, refused)
			}
			nc.Close()
			continue
		}
		if shed != nil {
			g.shed(shed, "connection cap reached")
		}
		return c, nil
	}
}

func (l *listener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// retryable reports whether an accept error is a passing one (the
// process or the system out of descriptors or memory, a connection reset
// before it was accepted) rather than the listener's end.
func retryable(err error) bool {
	var t interface{ Temporary() bool }
	return !errors.Is(err, net.ErrClosed) && errors.As(err, &t) && t.Temporary()
}

// acceptFailed logs and counts an accept error. When the process is out of
// descriptors and a client waits in the listener's queue, it sheds the
// longest idle unauthenticated connection, so that the descriptor freed
// lets the client in, and reports true. (Out of descriptors, accept fails
// whether or not a client waits, so nobody is shed for nothing.)
func (g *Guard) acceptFailed(err error, l net.Listener) bool {
	g.cfg.Metrics.AcceptError(g.cfg.Name)
	outOfFiles := errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
	if ok, skipped := g.acceptLog.allow(); ok {
		hint := "retrying after a backoff"
		if outOfFiles {
			hint = "out of file descriptors: new connections wait in the kernel's queue; raise the open-file limit " +
				"(LimitNOFILE in the systemd unit, ulimit -n) or lower the connection caps (docs/operations.md)"
		}
		g.log.Error("accepting a connection failed", "listener", g.cfg.Name, "err", err, "hint", hint, "left_out", skipped)
	}
	return outOfFiles && waiting(l) && g.shedIdlest()
}

// waiting reports whether a connection waits in l's accept queue (false
// when l cannot tell).
func waiting(l net.Listener) bool {
	sc, ok := l.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	ready := false
	rc.Control(func(fd uintptr) {
		p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(p, 0)
		ready = err == nil && n > 0 && p[0].Revents&unix.POLLIN != 0
	})
	return ready
}

// Conn is a guarded connection. Its Close gives its slot back.
type Conn struct {
	net.Conn
	g       *Guard
	addr    netip.Addr
	network netip.Prefix

	// auth is written under g.mu; Read reads it to pick its timeout.
	auth atomic.Bool
	// lastRead is when a byte last arrived, in g.since() units; the
	// longest idle connection is shed first.
	lastRead atomic.Int64
	released bool // under g.mu
	closeErr error
	once     sync.Once
}

// Authenticated marks the client as having proved who it is: its
// connection no longer counts against the unauthenticated caps, is not shed
// to make room, and gets ReadTimeout rather than UnauthenticatedReadTimeout.
func (c *Conn) Authenticated() { c.g.authenticate(c) }

// IsAuthenticated reports whether Authenticated was called.
func (c *Conn) IsAuthenticated() bool { return c.auth.Load() }

// Addr is the client's IP address.
func (c *Conn) Addr() netip.Addr { return c.addr }

func (c *Conn) Read(p []byte) (int, error) {
	timeout := c.g.cfg.UnauthenticatedReadTimeout
	if c.auth.Load() {
		timeout = c.g.cfg.ReadTimeout
	}
	if timeout > 0 {
		c.Conn.SetReadDeadline(time.Now().Add(timeout))
	}
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.lastRead.Store(c.g.since())
	}
	return n, err
}

// Close closes the connection and gives its slot back.
func (c *Conn) Close() error {
	c.once.Do(func() {
		c.g.release(c)
		c.closeErr = c.Conn.Close()
	})
	return c.closeErr
}

// ConnOf returns the guarded connection under c, looking through wrappers
// that have a NetConn method (*tls.Conn has), or nil.
func ConnOf(c net.Conn) *Conn {
	for {
		switch v := c.(type) {
		case *Conn:
			return v
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return nil
		}
	}
}
