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
	"time"

	"github.com/emersion/go-smtp"
)

// quitTimeout bounds QUIT, so closing an idle connection to a server that
// stopped answering does not hold a worker for a whole CommandTimeout.
const quitTimeout = 10 * time.Second

// session is an open SMTP connection to one hop, greeted and (when the
// server offers it) encrypted, reused for the next message to the same hop.
type session struct {
	hop    hop
	client *smtp.Client
	raw    net.Conn // the TCP connection under any TLS; closing it aborts a stuck command
	tls    string   // negotiated TLS version, "" when the connection is not encrypted
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

// quit says goodbye and closes the connection.
func (s *session) quit() {
	s.client.CommandTimeout = quitTimeout
	if err := s.client.Quit(); err != nil {
		s.client.Close()
	}
}

// dial opens a session to h, trying each of its addresses in turn.
func (r *Relay) dial(ctx context.Context, h hop) (*session, error) {
	port, err := strconv.ParseUint(h.port, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("port of %s: %w", h, err)
	}
	ips, err := r.lookup(ctx, h.host)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, ip := range ips {
		s, err := r.dialAddr(ctx, h, netip.AddrPortFrom(ip, uint16(port)))
		if err == nil {
			return s, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// lookup returns the addresses of host, an IP literal or a DNS name.
func (r *Relay) lookup(ctx context.Context, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{ip.Unmap()}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.ConnectTimeout)
	defer cancel()
	ips, err := r.resolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", host, err)
	}
	for i := range ips {
		ips[i] = ips[i].Unmap()
	}
	return ips, nil
}

// newResolver returns the resolver for hop names: the system's, or Go's own
// asking only the configured servers (tests point it at a loopback server).
func (r *Relay) newResolver() *net.Resolver {
	servers := r.cfg.DNSServers
	if len(servers) == 0 {
		return net.DefaultResolver
	}
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			server := servers[(r.nextDNS.Add(1)-1)%uint64(len(servers))]
			return d.DialContext(ctx, network, server)
		},
	}
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

// dialAddr connects to addr and opens a session on the connection.
func (r *Relay) dialAddr(ctx context.Context, h hop, addr netip.AddrPort) (s *session, err error) {
	local, err := r.sourceFor(addr.Addr())
	if err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: r.cfg.ConnectTimeout, LocalAddr: local}
	conn, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	defer func() {
		if s == nil { // an error, or a panic on the way
			conn.Close()
		}
	}()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	s, err = r.open(ctx, conn, h)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", addr, err)
	}
	return s, nil
}

// open greets the server on conn and upgrades to TLS when it offers
// STARTTLS.
func (r *Relay) open(ctx context.Context, conn net.Conn, h hop) (*session, error) {
	s := &session{hop: h, raw: conn, client: r.newClient(conn)}
	if err := s.client.Hello(r.cfg.Hostname); err != nil {
		return nil, fmt.Errorf("greeting or EHLO: %w", err)
	}
	attrs := []any{"relay", h.String(), "remote", conn.RemoteAddr().String(), "local", conn.LocalAddr().String()}
	if ok, _ := s.client.Extension("STARTTLS"); ok {
		tc, verifyErr, err := r.startTLS(ctx, conn, h.host)
		if err != nil {
			return nil, err
		}
		s.tls = tls.VersionName(tc.ConnectionState().Version)
		attrs = append(attrs, "cert_verified", verifyErr == nil)
		if verifyErr != nil {
			attrs = append(attrs, "cert_error", verifyErr.Error())
		}
		// go-smtp reads a greeting before its first command, and only its
		// own Dial functions can start TLS: hand it the one the server sent
		// before STARTTLS, so it carries on with EHLO over TLS.
		s.client = r.newClient(&greetedConn{Conn: tc, pending: []byte("220 TLS started\r\n")})
		if err := s.client.Hello(r.cfg.Hostname); err != nil {
			return nil, fmt.Errorf("EHLO after STARTTLS: %w", err)
		}
	}
	r.log.Info("relay: connected", append(attrs, "tls", s.tlsName())...)
	return s, nil
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
		ServerName:         host,
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
		return nil, nil, fmt.Errorf("TLS handshake: %w", err)
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

// greetedConn returns pending before the bytes of Conn.
type greetedConn struct {
	net.Conn
	pending []byte
}

func (c *greetedConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
