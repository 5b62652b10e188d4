package test

import (
	"bufio"
	"errors"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// idleConns is how many connections the idle tests open and leave silent:
// a slowloris attack on the submission port, or a pool of clients that
// connect and then hang.
const idleConns = 500

// TestIdleConnections opens idleConns connections to the STARTTLS listener,
// reads each greeting (so serve has accepted them all) and sends nothing.
// A real client must still get its message through, promptly: the silent
// connections may cost memory, but must not starve the accept loop or the
// sessions of others.
func TestIdleConnections(t *testing.T) {
	needE2E(t)
	raiseNofile(t, 4*idleConns)
	inst := newInstance(t)
	inst.configure(map[string]any{
		"submission.max_connections":                        idleConns + 100,
		"submission.max_connections_per_ip":                 idleConns + 100,
		"submission.max_unauthenticated_connections":        idleConns + 100,
		"submission.max_unauthenticated_connections_per_ip": idleConns + 100,
		"submission.unauthenticated_read_timeout":           "5m",
	})
	user := inst.standard(senderDomain, "idle")

	idle := openIdle(t, inst.smtpAddr, "127.0.0.1", idleConns)
	tok := newToken()
	start := time.Now()
	out, err := swaksFrom(t, inst, user, tok, "")
	took := time.Since(start)
	if err != nil {
		t.Fatalf("swaks beside %d idle connections: %v\n%s", idleConns, err, out)
	}
	if !queuedRE.MatchString(out) {
		t.Fatalf("swaks beside %d idle connections got no 250:\n%s", idleConns, out)
	}
	// swaks alone takes well under a second here.
	if took > 10*time.Second {
		t.Errorf("swaks took %s beside %d idle connections", took, idleConns)
	}
	t.Logf("swaks got its 250 in %s beside %d idle connections", took.Round(time.Millisecond), idleConns)
	inst.expectDelivered(t, tok, senderDomain)
	stillOpen(t, idle)
}

// TestIdleConnectionsPerIPCap fills the per-IP cap with idle connections
// from 127.0.0.1: one more from there is refused with 421 4.7.0, and a
// client from another address (127.0.0.2; all of 127.0.0.0/8 reaches the
// listener on 127.0.0.1) still sends.
func TestIdleConnectionsPerIPCap(t *testing.T) {
	needE2E(t)
	raiseNofile(t, 4*idleConns)
	inst := newInstance(t)
	inst.configure(map[string]any{
		"submission.max_connections":                        idleConns + 100,
		"submission.max_connections_per_ip":                 idleConns,
		"submission.max_unauthenticated_connections":        idleConns + 100,
		"submission.max_unauthenticated_connections_per_ip": idleConns,
		"submission.unauthenticated_read_timeout":           "5m",
	})
	user := inst.standard(senderDomain, "capped")

	idle := openIdle(t, inst.smtpAddr, "127.0.0.1", idleConns)
	if line := greeting(t, inst.smtpAddr, "127.0.0.1"); !strings.HasPrefix(line, "421 4.7.0 ") {
		t.Fatalf("connection %d from 127.0.0.1 (per-IP cap %d) got %q, want 421 4.7.0", idleConns+1, idleConns, line)
	}
	tok := newToken()
	out, err := swaksFrom(t, inst, user, tok, "127.0.0.2")
	if err != nil {
		t.Fatalf("swaks from 127.0.0.2 with 127.0.0.1 at its cap: %v\n%s", err, out)
	}
	if !queuedRE.MatchString(out) {
		t.Fatalf("swaks from 127.0.0.2 got no 250:\n%s", out)
	}
	msg := inst.expectDelivered(t, tok, senderDomain)
	if !strings.Contains(string(msg.Data), "([127.0.0.2])") {
		t.Errorf("the Received field does not name 127.0.0.2 as the client:\n%s", msg.Data)
	}
	stillOpen(t, idle)
}

// raiseNofile makes sure this process may open n files, raising the soft
// limit towards the hard one if needed. serve inherits the limit (and, a
// Go program, raises its own soft limit to the hard one anyway).
func raiseNofile(t *testing.T, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur >= n {
		return
	}
	if lim.Max < n {
		t.Skipf("RLIMIT_NOFILE hard limit is %d; this test needs %d open files (raise it with ulimit -Hn)", lim.Max, n)
	}
	lim.Cur = n
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("raising RLIMIT_NOFILE to %d: %v", n, err)
	}
}

// openIdle opens n connections from source and reads each one's greeting,
// so each has been accepted and counted; then they stay silent until the
// test ends.
func openIdle(t *testing.T, addr, source string, n int) []net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}}
	conns := make([]net.Conn, 0, n)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for i := range n {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("idle connection %d: %v", i+1, err)
		}
		conns = append(conns, c)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "220 ") {
			t.Fatalf("idle connection %d: greeting %q, %v", i+1, line, err)
		}
	}
	return conns
}

// greeting connects from source and returns the first line serve writes.
func greeting(t *testing.T, addr, source string) string {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil && line == "" {
		t.Fatalf("no greeting from %s: %v", addr, err)
	}
	return strings.TrimRight(line, "\r\n")
}

// stillOpen checks that serve has not dropped the idle connections: a
// read must time out rather than see the end of the stream. (The tests set
// unauthenticated_read_timeout to 5 minutes.)
func stillOpen(t *testing.T, conns []net.Conn) {
	t.Helper()
	closed := 0
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
			closed++
		}
	}
	if closed > 0 {
		t.Errorf("%d of %d idle connections were closed or written to by serve", closed, len(conns))
	}
}

// swaksFrom sends one message carrying token with swaks over STARTTLS and
// AUTH PLAIN, from the local address source ("" lets the system choose).
func swaksFrom(t *testing.T, inst *instance, user creds, token, source string) (string, error) {
	t.Helper()
	swaks := requireTool(t, "swaks")
	host, port, _ := net.SplitHostPort(inst.smtpAddr)
	args := []string{"--server", host, "--port", port, "--tls", "--helo", "swaks.client.test",
		"--auth", "PLAIN", "--auth-user", user.Username, "--auth-password", user.Password,
		"--from", sender, "--to", recipient,
		"--header", "Subject: " + token,
		"--body", "Sent by swaks.\nToken: " + token,
		"--timeout", "30"}
	if source != "" {
		args = append(args, "--local-interface", source)
	}
	return run(t, nil, "", swaks, args...)
}
