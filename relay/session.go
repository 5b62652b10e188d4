package relay

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/textproto"
	"strconv"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sesame-mail/sesame/smtpio"
	"github.com/sesame-mail/sesame/store"
)

// quitTimeout bounds QUIT, so closing an idle connection to a server that
// stopped answering does not hold a worker for a whole CommandTimeout.
const quitTimeout = 10 * time.Second

// session is an open SMTP connection to one server, greeted and (when the
// server offers it) encrypted, reused for the next message to the same
// server.
type session struct {
	name      string         // the server's host name (TLS server name, Remote-MTA)
	addr      netip.AddrPort // the address connected to
	key       string         // identifies the server in the pool
	client    *smtp.Client   // greeting, EHLO and STARTTLS; nil once the session is open
	ext       extensions     // what the server offered in its last EHLO reply
	wire      *wire          // the mail transactions (wire.go)
	raw       net.Conn       // the TCP connection under any TLS; closing it aborts a stuck command
	reused    bool           // taken from the pool: the next transaction starts with RSET
	tls       string         // negotiated TLS version, "" when the connection is not encrypted
	resumed   bool           // the TLS session of an earlier connection was resumed
	opened    time.Time
	idleSince time.Time
	messages  int // transactions completed, for providers' per-connection caps

	release func() // gives back the connection's room in its server's window
	closed  sync.Once
}

// sessionKey identifies a server in the pool: the same address under
// another name is another TLS server name, and a connection from another
// source address is another IP's reputation. src is invalid when the
// source is not chosen by the shaper.
func sessionKey(src netip.Addr, name string, addr netip.AddrPort) string {
	return src.String() + " " + name + " " + addr.String()
}

// relayName is the server for logs, as Postfix writes it: name[ip]:port.
func (s *session) relayName() string {
	return s.name + "[" + s.addr.Addr().String() + "]:" + strconv.Itoa(int(s.addr.Port()))
}

// localIP is the source address of the connection.
func (s *session) localIP() string {
	if a, ok := s.raw.LocalAddr().(*net.TCPAddr); ok {
		return a.IP.String()
	}
	return ""
}

// tlsName is the TLS version for logs.
func (s *session) tlsName() string {
	if s.tls == "" {
		return "none"
	}
	return s.tls
}

// abort closes the connection under a command in progress.
func (s *session) abort() { s.raw.Close() }

// quit says goodbye and closes the connection. The server has read the
// QUIT (or stopped answering) before the room in its window is given back,
// so the next connection never finds the last one still open there.
func (s *session) quit() {
	s.wire.quit(quitTimeout)
	s.done()
}

// close closes the connection without a word, after an error.
func (s *session) close() {
	s.wire.conn.Close()
	s.done()
}

func (s *session) done() {
	s.closed.Do(func() {
		if s.release != nil {
			s.release()
		}
	})
}

// transact runs d's transaction for rcpts (see session.send) on a connection
// from src (when valid) to name at addr: an idle one from the pool when
// there is one, else a new one once the server's window has room for it. A
// pooled connection the server closed while it was idle is not the mail's
// fault: it is closed and the next one tried. It returns the session, to be
// pooled or closed, or the error of the window or the dial.
func (r *Relay) transact(ctx context.Context, src netip.Addr, name string, addr netip.AddrPort,
	d store.Delivery, from string, rcpts []store.DueRecipient) (s *session, res []result, keep bool, err error) {
	key := sessionKey(src, name, addr)
	for {
		s, err := r.windows.acquire(ctx, addr, key)
		if err != nil {
			return nil, nil, false, err
		}
		if s == nil {
			break // room for a new connection
		}
		s.reused = true
		stop := context.AfterFunc(ctx, s.abort)
		res, keep, stale := s.send(d, from, rcpts)
		stop()
		if !stale {
			return s, res, keep, nil
		}
		r.log.Debug("relay: open connection failed RSET, trying another", "relay", s.relayName())
		s.close()
	}
	s, err = r.dialAddr(ctx, src, name, addr)
	if err != nil {
		// The window shrinks before the room is given back, or the
		// deliveries waiting for it would each try in turn.
		if ctx.Err() == nil {
			r.windows.failed(addr.Addr())
		}
		r.windows.release(addr.Addr())
		return nil, nil, false, err
	}
	s.release = func() { r.windows.release(addr.Addr()) }
	stop := context.AfterFunc(ctx, s.abort)
	res, keep, _ = s.send(d, from, rcpts)
	stop()
	return s, res, keep, nil
}

// sourceFor picks the next configured source address of ip's family; nil
// lets the OS choose.
func (r *Relay) sourceFor(ip netip.Addr) (*net.TCPAddr, error) {
	if len(r.sources) == 0 {
		return nil, nil
	}
	var same []netip.Addr
	for _, s := range r.sources {
		if s.Is4() == ip.Is4() {
			same = append(same, s)
		}
	}
	if len(same) == 0 {
		// Never fall back to an address the operator did not list: its
		// reputation is not the one they built.
		return nil, fmt.Errorf("no source IP of the family of %s", ip)
	}
	src := same[(r.nextSource.Add(1)-1)%uint64(len(same))]
	return net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), nil
}

// dialAddr connects to addr and opens a session on the connection. When the
// TLS handshake fails it connects once more and goes on without STARTTLS:
// opportunistic TLS (RFC 7435) must not make mail undeliverable.
func (r *Relay) dialAddr(ctx context.Context, src netip.Addr, name string, addr netip.AddrPort) (s *session, err error) {
	// In a goroutine of its own: the TLS handshake's deep calls would grow
	// the stack of the delivery's goroutine, which then waits on the
	// server with a stack four times the size it needs; with thousands of
	// connections open that is most of their memory.
	// A panic there is the delivery's, as if it had happened here.
	done := make(chan struct{})
	var panicked any
	go func() {
		defer close(done)
		defer func() { panicked = recover() }()
		s, err = r.dialTLSOrNot(ctx, src, name, addr)
	}()
	<-done
	if panicked != nil {
		panic(panicked)
	}
	return s, err
}

func (r *Relay) dialTLSOrNot(ctx context.Context, src netip.Addr, name string, addr netip.AddrPort) (*session, error) {
	s, err := r.dialOnce(ctx, src, name, addr, true)
	var tlsErr *tlsFailure
	if errors.As(err, &tlsErr) {
		r.log.Warn("relay: STARTTLS failed; retrying without TLS", "relay", name, "addr", addr.String(), "err", err)
		s, err = r.dialOnce(ctx, src, name, addr, false)
	}
	return s, err
}

// tlsFailure is a failed STARTTLS handshake.
type tlsFailure struct{ err error }

func (e *tlsFailure) Error() string { return e.err.Error() }
func (e *tlsFailure) Unwrap() error { return e.err }

func (r *Relay) dialOnce(ctx context.Context, src netip.Addr, name string, addr netip.AddrPort, tryTLS bool) (s *session, err error) {
	local := net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
	if !src.IsValid() {
		if local, err = r.sourceFor(addr.Addr()); err != nil {
			return nil, err
		}
	}
	d := net.Dialer{Timeout: r.cfg.ConnectTimeout, LocalAddr: local}
	conn, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return nil, fmt.Errorf("connect to %s[%s]: %w", name, addr, err)
	}
	defer func() {
		if s == nil { // an error, or a panic on the way
			conn.Close()
		}
	}()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	s, err = r.open(ctx, conn, src, name, addr, tryTLS)
	if err != nil {
		return nil, fmt.Errorf("%s[%s]: %w", name, addr, err)
	}
	return s, nil
}

// open greets the server on conn and upgrades to TLS when it offers
// STARTTLS and tryTLS is set.
func (r *Relay) open(ctx context.Context, conn net.Conn, src netip.Addr, name string, addr netip.AddrPort, tryTLS bool) (*session, error) {
	s := &session{name: name, addr: addr, key: sessionKey(src, name, addr), raw: conn, client: r.newClient(conn), opened: r.now()}
	if err := s.client.Hello(r.cfg.Hostname); err != nil {
		return nil, fmt.Errorf("greeting or EHLO: %w", err)
	}
	attrs := []any{"relay", s.relayName(), "local", conn.LocalAddr().String()}
	if ok, _ := s.client.Extension("STARTTLS"); ok && tryTLS {
		tc, verifyErr, err := r.startTLS(ctx, conn, name)
		var refused *smtp.SMTPError
		if errors.As(err, &refused) && refused.Code != 421 {
			// The server offered STARTTLS, then refused it (454, 5xx): as
			// Postfix at security level "may", carry on in plain text on
			// the same connection rather than defer the mail (RFC 3207 §4
			// leaves it to local policy; opportunistic TLS, RFC 7435).
			r.log.Warn("relay: STARTTLS refused; continuing without TLS", append(attrs, "reply", describe(refused))...)
			r.log.Info("relay: connected", append(attrs, "tls", s.tlsName())...)
			r.cfg.Metrics.OutboundConnection(s.tlsName())
			s.attach(conn, r.cfg.CommandTimeout)
			return s, nil
		}
		if err != nil {
			return nil, err
		}
		cs := tc.ConnectionState()
		s.tls, s.resumed = tls.VersionName(cs.Version), cs.DidResume
		attrs = append(attrs, "cert_verified", verifyErr == nil, "tls_resumed", cs.DidResume)
		if verifyErr != nil {
			attrs = append(attrs, "cert_error", verifyErr.Error())
		}
		// go-smtp reads a greeting before its first command, and only its
		// own Dial functions can start TLS: hand it the one the server sent
		// before STARTTLS, so it carries on with EHLO over TLS.
		s.client = r.newClient(&smtpio.GreetedConn{Conn: tc, Pending: []byte("220 TLS started\r\n")})
		if err := s.client.Hello(r.cfg.Hostname); err != nil {
			return nil, fmt.Errorf("EHLO after STARTTLS: %w", err)
		}
		conn = tc
	}
	r.log.Info("relay: connected", append(attrs, "tls", s.tlsName())...)
	r.cfg.Metrics.OutboundConnection(s.tlsName())
	s.attach(conn, r.cfg.CommandTimeout)
	return s, nil
}

// extensions are the EHLO keywords the transactions use.
type extensions struct {
	pipelining, smtputf8, eightBitMIME, size bool
}

// attach hands conn, greeted and past EHLO (and TLS), to the wire that runs
// the transactions, keeping what the server offered. go-smtp's client is
// done with then: dropping it frees its buffers, 8 KiB a connection, which
// matters with thousands of connections open.
func (s *session) attach(conn net.Conn, timeout time.Duration) {
	has := func(name string) bool {
		ok, _ := s.client.Extension(name)
		return ok
	}
	s.ext = extensions{pipelining: has("PIPELINING"), smtputf8: has("SMTPUTF8"), eightBitMIME: has("8BITMIME"), size: has("SIZE")}
	s.client = nil
	s.wire = newWire(conn, timeout, s.ext.pipelining)
}

func (r *Relay) newClient(conn net.Conn) *smtp.Client {
	c := smtp.NewClient(conn)
	c.CommandTimeout = r.cfg.CommandTimeout
	c.SubmissionTimeout = r.cfg.CommandTimeout
	return c
}

// startTLS sends STARTTLS on conn, whose greeting and EHLO are done, and
// runs the handshake. Any certificate is accepted, because encryption
// without authentication still beats plain text (RFC 7435); verifyErr says
// whether the certificate would have verified against the system roots.
func (r *Relay) startTLS(ctx context.Context, conn net.Conn, host string) (tc *tls.Conn, verifyErr, err error) {
	conn.SetDeadline(time.Now().Add(r.cfg.CommandTimeout))
	if _, err := io.WriteString(conn, "STARTTLS\r\n"); err != nil {
		return nil, nil, fmt.Errorf("STARTTLS: %w", err)
	}
	// Whatever the server sends after its reply stays in this reader and is
	// thrown away, so nothing injected before the handshake (CVE-2011-0411)
	// is read as coming over TLS.
	code, msg, err := textproto.NewReader(bufio.NewReader(conn)).ReadResponse(220)
	if err != nil {
		var perr *textproto.Error
		if errors.As(err, &perr) {
			err = replyError(code, msg)
		}
		return nil, nil, fmt.Errorf("STARTTLS: %w", err)
	}
	conn.SetDeadline(time.Time{})

	cfg := &tls.Config{
		ServerName: host,
		// A server seen before resumes the session: no certificate to
		// send and check, and with TLS 1.2 a round trip less.
		ClientSessionCache: r.tlsSessions,
		InsecureSkipVerify: true, // opportunistic; verified below for the log only
		VerifyConnection: func(cs tls.ConnectionState) error {
			verifyErr = verifyChain(cs, host)
			return nil
		},
	}
	tc = tls.Client(conn, cfg)
	hctx, cancel := context.WithTimeout(ctx, r.cfg.CommandTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		return nil, nil, &tlsFailure{fmt.Errorf("TLS handshake: %w", err)}
	}
	return tc, verifyErr, nil
}

// verifyChain checks the server's certificate against the system roots and
// host.
func verifyChain(cs tls.ConnectionState, host string) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{DNSName: host, Intermediates: inter})
	return err
}
