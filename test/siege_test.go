package test

// Every listener is a public door. These tests lay siege to all of them at
// once (the submission ports, the inbound port, the HTTP listener) with
// serve's open-file limit lowered, and check that the strangers are cut off
// within the configured timeouts, that accept errors (EMFILE) are logged and
// counted, and that real clients are served throughout; and that slots are
// kept for clients that logged in.

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

const (
	// siegeFiles is serve's open-file limit during the siege: far fewer
	// than the attacking connections.
	siegeFiles = 256
	// siegePerSource is how many connections of each kind each source
	// address opens.
	siegePerSource = 20
	// siegeTimeout is the test config's read and idle timeouts for
	// clients that have not logged in.
	siegeTimeout = 2 * time.Second
)

// siegeSources are the attackers' addresses.
var siegeSources = []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"}

// attack is one kind of attacking connection: where it connects and what it
// sends before falling silent.
type attack struct {
	name, addr, send string
}

// attacker is one attacking connection.
type attacker struct {
	kind string
	conn net.Conn
}

// TestSiege opens 500 silent or stalled connections to every listener of a
// serve whose open-file limit is 256: idle connections to the STARTTLS and
// implicit-TLS submission ports and to the inbound port, idle keep-alive
// HTTP connections, and POSTs that declare a 100000-byte body and send 3
// bytes of it. Then:
//   - /healthz answers during the siege;
//   - serve closes every attacking connection within the 2 s timeouts
//     (plus the time to get through the queue of those waiting);
//   - accepting failed for lack of descriptors, which serve logged at ERROR
//     and counted in sesame_listener_accept_errors_total;
//   - a client that logged in before the siege is still connected (it
//     waits read_timeout, 1 minute, not 2 s) and sends;
//   - afterwards /healthz answers 200, swaks submits on both submission
//     ports and to the inbound listener, and a body over
//     http.max_body_bytes is refused with 413.
func TestSiege(t *testing.T) {
	needE2E(t)
	curl := requireTool(t, "curl")
	swaks := requireTool(t, "swaks")
	raiseNofile(t, 4096)
	inst := newInstance(t)
	inboundAddr := freeAddr(t, "127.0.0.1")
	inst.nofile = siegeFiles
	inst.configure(map[string]any{
		"inbound.listen":                          []string{inboundAddr},
		"inbound.feedback_addresses":              []string{"fbl@example.com"},
		"inbound.read_timeout":                    siegeTimeout.String(),
		"submission.unauthenticated_read_timeout": siegeTimeout.String(),
		"submission.read_timeout":                 "1m",
		"http.read_timeout":                       siegeTimeout.String(),
		"http.idle_timeout":                       siegeTimeout.String(),
	})
	user := inst.standard(senderDomain, "siege")
	loggedIn := dialLoggedIn(t, inst, user)

	start := time.Now()
	attackers := siege(t, []attack{
		{"submission (STARTTLS)", inst.smtpAddr, ""},
		{"submission (implicit TLS)", inst.tlsAddr, ""},
		{"inbound", inboundAddr, ""},
		{"HTTP keep-alive", inst.httpAddr, "GET /healthz HTTP/1.1\r\nHost: sesame.test\r\n\r\n"},
		{"HTTP slow body", inst.httpAddr, "POST /verify/siege HTTP/1.1\r\nHost: sesame.test\r\n" +
			"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000\r\n\r\nabc"},
	})
	t.Logf("%d attacking connections open in %s", len(attackers), time.Since(start).Round(time.Millisecond))

	// During the siege: /healthz answers (any status: the store itself
	// may be short of descriptors for a moment).
	out, err := run(t, nil, "", curl, "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "30",
		"http://"+inst.httpAddr+"/healthz")
	if err != nil || !regexp.MustCompile(`^[1-5][0-9][0-9]$`).MatchString(out) {
		t.Errorf("/healthz during the siege: %q, %v; want an answer", out, err)
	}
	t.Logf("/healthz during the siege: %s after %s", out, time.Since(start).Round(time.Millisecond))

	// Every attacking connection is closed. Those that waited in the
	// kernel's queue for a descriptor start their 2 s later, hence the
	// margin; without the timeouts they would stay open for good.
	if open := stillOpenAfter(attackers, start.Add(siegeTimeout+30*time.Second)); len(open) > 0 {
		t.Errorf("attacking connections still open %s after the siege began (timeouts %s): %v",
			time.Since(start).Round(time.Second), siegeTimeout, open)
	}
	t.Logf("serve closed every attacking connection within %s", time.Since(start).Round(time.Millisecond))

	log := inst.serveLg.String()
	if !regexp.MustCompile(`level=ERROR msg="accepting a connection failed".*too many open files`).MatchString(log) {
		t.Errorf("no accept error (EMFILE) logged at ERROR; serve's log:\n%s", tail(log, 8<<10))
	}
	if !strings.Contains(log, "the connection caps add up to more open files than the process may have") {
		t.Error("serve did not warn at start that its connection caps exceed its open-file limit")
	}
	metrics := scrape(t, inst)
	if n := metricSum(metrics, "sesame_listener_accept_errors_total"); n < 1 {
		t.Errorf("sesame_listener_accept_errors_total is %v after accepts failed with EMFILE", n)
	}
	if n := metricSum(metrics, `sesame_listener_open_connections{listener="submission",state="authenticated"}`); n != 1 {
		t.Errorf("open authenticated submission connections: %v, want 1 (the client logged in before the siege)", n)
	}

	// The client that logged in before the siege is still there.
	if err := loggedIn.Noop(); err != nil {
		t.Fatalf("the client logged in before the siege was cut off: %v", err)
	}
	tok := newToken()
	if err := loggedIn.SendMail(sender, []string{recipient}, strings.NewReader(tokenMessage(tok))); err != nil {
		t.Fatalf("the client logged in before the siege cannot send: %v", err)
	}
	inst.expectDelivered(t, tok, senderDomain)

	// Real clients on every listener.
	out, err = run(t, nil, "", curl, "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "30",
		"http://"+inst.httpAddr+"/healthz")
	if err != nil || out != "200" {
		t.Errorf("/healthz after the siege: %q, %v; want 200", out, err)
	}
	big := strings.Repeat("x", 2<<20)
	out, err = run(t, []byte(big), "", curl, "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "30",
		"-H", "Content-Type: application/x-www-form-urlencoded", "--data-binary", "@-", "http://"+inst.httpAddr+"/verify/siege")
	if err != nil || out != "413" {
		t.Errorf("a 2 MiB POST (http.max_body_bytes 1 MiB): %q, %v; want 413", out, err)
	}
	tok = newToken()
	if out, err := swaksFrom(t, inst, user, tok, ""); err != nil || !queuedRE.MatchString(out) {
		t.Fatalf("swaks (STARTTLS) after the siege: %v\n%s", err, out)
	}
	inst.expectDelivered(t, tok, senderDomain)
	host, port, _ := net.SplitHostPort(inst.tlsAddr)
	out, err = run(t, nil, "", swaks, "--server", host, "--port", port, "--tls-on-connect", "--auth", "PLAIN",
		"--auth-user", user.Username, "--auth-password", user.Password, "--from", sender, "--to", recipient, "--timeout", "30")
	if err != nil || !queuedRE.MatchString(out) {
		t.Errorf("swaks (implicit TLS) after the siege: %v\n%s", err, out)
	}
	host, port, _ = net.SplitHostPort(inboundAddr)
	out, err = run(t, nil, "", swaks, "--server", host, "--port", port, "--helo", "mx.provider.test",
		"--from", "postmaster@provider.test", "--to", "fbl@example.com", "--timeout", "30")
	if err != nil || !regexp.MustCompile(`(?m)^<[-~] +250 .*queued`).MatchString(out) {
		t.Errorf("swaks to the inbound listener after the siege: %v\n%s", err, out)
	}
}

// TestUnauthenticatedSlots fills the cap on connections that have not
// logged in (12, at most 4 per address) from three addresses, beside a
// client that logged in first. A fifth connection from one of them is
// refused with 421 4.7.0; swaks from a fourth address still connects (the
// stranger silent longest is closed to make room, and only it), logs in
// and sends; the client that logged in first still sends too.
func TestUnauthenticatedSlots(t *testing.T) {
	needE2E(t)
	inst := newInstance(t)
	inst.configure(map[string]any{
		"submission.max_connections":                        40,
		"submission.max_connections_per_ip":                 20,
		"submission.max_unauthenticated_connections":        12,
		"submission.max_unauthenticated_connections_per_ip": 4,
		"submission.unauthenticated_read_timeout":           "5m", // nothing here may depend on timing
		"submission.read_timeout":                           "5m",
	})
	user := inst.standard(senderDomain, "slots")
	loggedIn := dialLoggedIn(t, inst, user)

	var idle []net.Conn
	for _, src := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
		idle = append(idle, openIdle(t, inst.smtpAddr, src, 4)...)
	}
	if line := greeting(t, inst.smtpAddr, "127.0.0.2"); !strings.HasPrefix(line, "421 4.7.0 ") {
		t.Fatalf("a 5th connection from 127.0.0.2 (4 per address before AUTH): %q, want 421 4.7.0", line)
	}

	tok := newToken()
	out, err := swaksFrom(t, inst, user, tok, "127.0.0.5")
	if err != nil || !queuedRE.MatchString(out) {
		t.Fatalf("swaks with the unauthenticated cap full: %v\n%s", err, out)
	}
	inst.expectDelivered(t, tok, senderDomain)
	idle[0].SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, idle[0]); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Error("the stranger silent longest was not closed to make room")
	}
	stillOpen(t, idle[1:])

	tok = newToken()
	if err := loggedIn.SendMail(sender, []string{recipient}, strings.NewReader(tokenMessage(tok))); err != nil {
		t.Fatalf("the client that logged in first cannot send: %v", err)
	}
	inst.expectDelivered(t, tok, senderDomain)

	metrics := scrape(t, inst)
	for metric, want := range map[string]float64{
		`sesame_listener_shed_connections_total{listener="submission"}`:                                    1,
		`sesame_listener_refused_connections_total{listener="submission",reason="unauthenticated_per_ip"}`: 1,
		`sesame_listener_open_connections{listener="submission",state="unauthenticated"}`:                  11,
		`sesame_listener_open_connections{listener="submission",state="authenticated"}`:                    1,
	} {
		if got := metricSum(metrics, metric); got != want {
			t.Errorf("%s = %v, want %v", metric, got, want)
		}
	}
}

// siege opens siegePerSource connections of each kind from each source
// address, all at once, and sends each kind's bytes.
func siege(t *testing.T, attacks []attack) []attacker {
	t.Helper()
	var (
		mu   sync.Mutex
		out  []attacker
		errs []error
		wg   sync.WaitGroup
	)
	t.Cleanup(func() {
		for _, a := range out {
			a.conn.Close()
		}
	})
	for _, a := range attacks {
		for _, src := range siegeSources {
			wg.Go(func() {
				d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
				for range siegePerSource {
					c, err := d.Dial("tcp", a.addr)
					if err == nil && a.send != "" {
						_, err = io.WriteString(c, a.send)
					}
					mu.Lock()
					if c != nil {
						out = append(out, attacker{a.name, c})
					}
					if err != nil {
						errs = append(errs, fmt.Errorf("%s from %s: %w", a.name, src, err))
					}
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("opening the attacking connections: %v", errors.Join(errs...))
	}
	return out
}

// stillOpenAfter reads each connection to its end; it returns, per kind, how
// many had not ended by deadline.
func stillOpenAfter(conns []attacker, deadline time.Time) map[string]int {
	var mu sync.Mutex
	open := map[string]int{}
	var wg sync.WaitGroup
	for _, a := range conns {
		wg.Go(func() {
			a.conn.SetReadDeadline(deadline)
			if _, err := io.Copy(io.Discard, a.conn); errors.Is(err, os.ErrDeadlineExceeded) {
				mu.Lock()
				open[a.kind]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return open
}

// dialLoggedIn connects to the STARTTLS port and logs in.
func dialLoggedIn(t *testing.T, inst *instance, user creds) *smtp.Client {
	t.Helper()
	c, err := smtp.DialStartTLS(inst.smtpAddr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Auth(sasl.NewPlainClient("", user.Username, user.Password)); err != nil {
		t.Fatalf("AUTH: %v", err)
	}
	return c
}

// tokenMessage is a message from sender to recipient carrying token.
func tokenMessage(token string) string {
	return "From: " + sender + "\r\nTo: " + recipient + "\r\nSubject: " + token + "\r\n\r\nToken: " + token + "\r\n"
}

// metricSum adds up the samples of /metrics whose line starts with name
// (a metric name, or a name with its labels).
func metricSum(page, name string) float64 {
	var sum float64
	for _, line := range strings.Split(page, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(fields[len(fields)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}
