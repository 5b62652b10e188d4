package test

// MX delivery end to end: no smarthost. Sesame looks the recipient domains
// up in the instance's DNS server (testkit.Zone: miekg/dns on 127.0.0.1, UDP
// and TCP) and delivers to sinks standing in for the domains' mail exchangers, all on
// one port of different loopback addresses (relay.mx_port):
//
//	127.0.0.2  mx1.example.net   MX 10 of example.net
//	127.0.0.3  mx2.example.net   MX 20 of example.net
//	127.0.0.4  mx.example.com    MX of the sending domain, where DSNs arrive
//	           nomail.example.org has a null MX (RFC 7505)
//
// Outbound connections come from relay.source_ips = 127.0.0.9.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/mail"
	"net/textproto"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"

	"github.com/sesame-mail/sesame/testkit"
)

const (
	mxSourceIP = "127.0.0.9"
	// mxWait bounds every wait for mail or a queue state.
	mxWait = 20 * time.Second
)

// mxZone is what the test's DNS server answers.
var mxZone = []string{
	"example.net. 60 IN MX 10 mx1.example.net.",
	"example.net. 60 IN MX 20 mx2.example.net.",
	"mx1.example.net. 60 IN A 127.0.0.2",
	"mx2.example.net. 60 IN A 127.0.0.3",
	"example.com. 60 IN MX 10 mx.example.com.",
	"mx.example.com. 60 IN A 127.0.0.4",
	"nomail.example.org. 60 IN MX 0 .",
	"nomail.example.org. 60 IN A 127.0.0.2", // must not be used: the null MX wins
}

// queuedIDRE extracts the queue id from Sesame's final reply.
var queuedIDRE = regexp.MustCompile(`250[ -]2\.0\.0 Ok: queued as (\S+)`)

// ---------------------------------------------------------------- sinks

// mxSink is one mail exchanger: a sink offering STARTTLS (with a
// self-signed certificate for mx.test), and the host name the test's DNS
// gives it. What it answers to RCPT can be changed while it runs
// (SetRcptPolicy); the change applies to connections already open (Sesame
// reuses them).
type mxSink struct {
	*testkit.Sink
	name string
}

// startMXSinks starts one sink on each of hosts, all on the same free port,
// and returns the port.
func startMXSinks(t *testing.T, hosts ...string) (int, []*mxSink) {
	t.Helper()
	port, lns := testkit.ReservePort(t, hosts...)
	tlsConfig := testkit.SelfSigned(t, "mx.test")
	var sinks []*mxSink
	for _, h := range hosts {
		sinks = append(sinks, &mxSink{Sink: testkit.StartSink(t, testkit.SinkOptions{Listener: lns[h], Domain: "mx.test", TLS: tlsConfig})})
	}
	return port, sinks
}

// carrying matches a message (not a DSN) that contains token.
func carrying(token string) func(*testkit.Message) bool {
	return func(m *testkit.Message) bool { return m.From != "" && bytes.Contains(m.Data, []byte(token)) }
}

// dsnFor matches a message from the null sender that contains token: a DSN
// returning the header of the message that carried it.
func dsnFor(token string) func(*testkit.Message) bool {
	return func(m *testkit.Message) bool { return m.From == "" && bytes.Contains(m.Data, []byte(token)) }
}

// tempFail answers every RCPT 451 4.3.0.
func tempFail(string) error {
	return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Try again later"}
}

// ---------------------------------------------------------------- setup

// mxOptions are the [relay] settings a test varies.
type mxOptions struct {
	retryFirst string // default "200ms"
	retryMax   string // default "500ms"
}

// mxEnv is one Sesame installation delivering by MX, with its DNS server
// (the instance's, holding mxZone) and sinks. The harness's smarthost sink
// exists too but is not configured.
type mxEnv struct {
	inst     *instance
	zone     *testkit.Zone
	mxPort   int
	mx1      *mxSink // 127.0.0.2, MX 10 of example.net
	mx2      *mxSink // 127.0.0.3, MX 20 of example.net
	senderMX *mxSink // 127.0.0.4, MX of example.com: DSNs to the sender
	opts     mxOptions
	user     creds
}

// newMXEnv sets up an installation with senderDomain (verified) and one
// user; serve is not started.
func newMXEnv(t *testing.T, opts mxOptions) *mxEnv {
	t.Helper()
	e := newMXEnvNoDomain(t, opts)
	e.inst.addDomain(t, senderDomain)
	e.user = e.inst.createUser(t, "mx")
	return e
}

// newMXEnvNoDomain sets up an installation delivering by MX, without
// domains or users.
func newMXEnvNoDomain(t *testing.T, opts mxOptions) *mxEnv {
	t.Helper()
	needE2E(t)
	if opts.retryFirst == "" {
		opts.retryFirst = "200ms"
	}
	if opts.retryMax == "" {
		opts.retryMax = "500ms"
	}
	// Created before the instance, so they are cleaned up after serve stops.
	e := &mxEnv{opts: opts}
	var sinks []*mxSink
	e.mxPort, sinks = startMXSinks(t, "127.0.0.2", "127.0.0.3", "127.0.0.4")
	e.mx1, e.mx2, e.senderMX = sinks[0], sinks[1], sinks[2]
	e.mx1.name, e.mx2.name, e.senderMX.name = "mx1.example.net", "mx2.example.net", "mx.example.com"
	e.inst = newInstance(t)
	e.zone = e.inst.zone
	e.zone.Add(t, mxZone...)
	e.inst.configure(map[string]any{
		"log_level":                        "debug",
		"relay.smarthost":                  nil,
		"relay.mx_port":                    e.mxPort,
		"relay.allow_private_destinations": true,
		"relay.source_ips":                 []string{mxSourceIP},
		"relay.retry_first":                e.opts.retryFirst,
		"relay.retry_max":                  e.opts.retryMax,
		"relay.connect_timeout":            "5s",
		"relay.command_timeout":            "15s",
		"submission.max_message_bytes":     nil,
		"submission.max_recipients":        nil,
	})
	return e
}

// start runs serve with the MX configuration.
func (e *mxEnv) start(t *testing.T) {
	t.Helper()
	e.inst.start()
}

// stopGracefully sends SIGTERM and checks that serve exited cleanly.
func (e *mxEnv) stopGracefully(t *testing.T) {
	t.Helper()
	e.inst.stop()
	lg := e.inst.serveLg.String()
	const mark = "serve exited: "
	i := strings.LastIndex(lg, mark)
	if i < 0 {
		t.Fatalf("serve's exit was not recorded")
	}
	status, _, _ := strings.Cut(lg[i+len(mark):], "\n")
	if status != "<nil>" {
		t.Errorf("after SIGTERM serve exited with %s, want status 0", status)
	}
	if strings.Contains(lg, "abandoned") {
		t.Errorf("serve abandoned deliveries at a graceful stop")
	}
}

// send submits a message with swaks (STARTTLS, AUTH PLAIN) from sender to
// rcpts and returns its queue id. The token is the Subject and in the body.
func (e *mxEnv) send(t *testing.T, token string, rcpts ...string) string {
	t.Helper()
	swaks := requireTool(t, "swaks")
	host, port, _ := net.SplitHostPort(e.inst.smtpAddr)
	out, err := run(t, nil, "", swaks, "--server", host, "--port", port, "--tls",
		"--helo", "swaks.client.test",
		"--auth", "PLAIN", "--auth-user", e.user.Username, "--auth-password", e.user.Password,
		"--from", sender, "--to", strings.Join(rcpts, ","),
		"--header", "Subject: "+token,
		"--body", "Sent by swaks for MX delivery.\nToken: "+token,
		"--timeout", "30")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	m := queuedIDRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("swaks output has no \"250 2.0.0 Ok: queued as ID\":\n%s", out)
	}
	return m[1]
}

// mxQueueEntry is one message of `sesame queue list --json`.
type mxQueueEntry struct {
	ID         string `json:"id"`
	Sender     string `json:"sender"`
	Recipients []struct {
		Address     string    `json:"address"`
		State       string    `json:"state"`
		Attempts    int       `json:"attempts"`
		NextAttempt time.Time `json:"next_attempt"`
		LastReply   string    `json:"last_reply"`
	} `json:"recipients"`
}

func (e *mxEnv) queue(t *testing.T) []mxQueueEntry {
	t.Helper()
	out := e.inst.mustAdmin(t, "queue", "list", "--json")
	var list []mxQueueEntry
	if err := json.Unmarshal(out, &list); err != nil {
		t.Fatalf("sesame queue list --json printed %q: %v", out, err)
	}
	return list
}

func findEntry(list []mxQueueEntry, id string) *mxQueueEntry {
	for i := range list {
		if list[i].ID == id {
			return &list[i]
		}
	}
	return nil
}

// waitQueue polls `sesame queue list --json` until cond holds.
func (e *mxEnv) waitQueue(t *testing.T, what string, cond func([]mxQueueEntry) bool) []mxQueueEntry {
	t.Helper()
	deadline := time.Now().Add(mxWait)
	for {
		list := e.queue(t)
		if cond(list) {
			return list
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue: %s not seen within %s; queue list --json:\n%s", what, mxWait, e.inst.mustAdmin(t, "queue", "list", "--json"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitDeferred waits until every recipient of message id is deferred with a
// last reply starting with reply, and returns the entry.
func (e *mxEnv) waitDeferred(t *testing.T, id, reply string) mxQueueEntry {
	t.Helper()
	var entry mxQueueEntry
	e.waitQueue(t, fmt.Sprintf("message %s deferred with %q", id, reply), func(list []mxQueueEntry) bool {
		m := findEntry(list, id)
		if m == nil || len(m.Recipients) == 0 {
			return false
		}
		for _, r := range m.Recipients {
			if r.State != "deferred" || !strings.HasPrefix(r.LastReply, reply) {
				return false
			}
		}
		entry = *m
		return true
	})
	return entry
}

// waitGone waits until message id has left the queue.
func (e *mxEnv) waitGone(t *testing.T, id string) {
	t.Helper()
	e.waitQueue(t, "message "+id+" gone", func(list []mxQueueEntry) bool { return findEntry(list, id) == nil })
}

func mustWait(t *testing.T, s *mxSink, what string, match func(*testkit.Message) bool) *testkit.Message {
	t.Helper()
	m, ok := s.Wait(match, mxWait)
	if !ok {
		t.Fatalf("%s did not reach %s (%s) within %s; it holds %d messages", what, s.name, s.Addr, mxWait, len(s.Messages()))
	}
	return m
}

func sameAddrs(got, want []string) bool {
	norm := func(l []string) []string {
		out := make([]string, len(l))
		for i, a := range l {
			out[i] = strings.ToLower(a)
		}
		slices.Sort(out)
		return out
	}
	return slices.Equal(norm(got), norm(want))
}

// ---------------------------------------------------------------- DSN

// parsedDSN is a delivery status notification taken apart.
type parsedDSN struct {
	header     mail.Header
	parts      []string               // media types of the parts, in order
	perMessage textproto.MIMEHeader   // first block of message/delivery-status
	recipients []textproto.MIMEHeader // one block per recipient
	returned   string                 // the text/rfc822-headers part
}

// parseDSN checks that m is a DSN from the null sender to sender, a
// multipart/report of report-type delivery-status (RFC 6522) with its
// message/delivery-status (RFC 3464) and text/rfc822-headers parts, and
// returns its pieces.
func parseDSN(t *testing.T, m *testkit.Message) parsedDSN {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("DSN: "+format+"\nthe DSN as received:\n%s", append(args, m.Data)...)
	}
	if m.From != "" {
		fail("envelope sender %q, want the null sender <>", m.From)
	}
	if !sameAddrs(m.To, []string{sender}) {
		fail("envelope recipients %q, want [%s]", m.To, sender)
	}
	msg, err := mail.ReadMessage(bytes.NewReader(m.Data))
	if err != nil {
		fail("%v", err)
	}
	d := parsedDSN{header: msg.Header}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		fail("Content-Type %q: %v", msg.Header.Get("Content-Type"), err)
	}
	if mt != "multipart/report" || !strings.EqualFold(params["report-type"], "delivery-status") {
		fail("Content-Type %q, want multipart/report; report-type=delivery-status", msg.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	var status []byte
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			fail("reading the parts: %v", err)
		}
		body, err := io.ReadAll(p)
		if err != nil {
			fail("reading a part: %v", err)
		}
		pt, _, err := mime.ParseMediaType(p.Header.Get("Content-Type"))
		if err != nil {
			fail("part Content-Type %q: %v", p.Header.Get("Content-Type"), err)
		}
		d.parts = append(d.parts, pt)
		switch pt {
		case "message/delivery-status":
			status = body
		case "text/rfc822-headers":
			d.returned = string(body)
		}
	}
	if status == nil {
		fail("no message/delivery-status part (parts: %v)", d.parts)
	}
	if !slices.Contains(d.parts, "text/rfc822-headers") {
		fail("no text/rfc822-headers part (parts: %v)", d.parts)
	}
	// Blocks of fields separated by empty lines: per message, then per recipient.
	r := textproto.NewReader(bufio.NewReader(io.MultiReader(bytes.NewReader(status), strings.NewReader("\r\n\r\n"))))
	for {
		h, err := r.ReadMIMEHeader()
		if len(h) > 0 {
			if d.perMessage == nil {
				d.perMessage = h
			} else {
				d.recipients = append(d.recipients, h)
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			fail("message/delivery-status: %v", err)
		}
	}
	if d.perMessage.Get("Reporting-MTA") == "" {
		fail("message/delivery-status has no Reporting-MTA")
	}
	return d
}

// recipient returns the per-recipient block for addr, failing the test when
// there is not exactly one.
func (d parsedDSN) recipient(t *testing.T, addr string) textproto.MIMEHeader {
	t.Helper()
	var found []textproto.MIMEHeader
	for _, h := range d.recipients {
		_, a, _ := strings.Cut(h.Get("Final-Recipient"), ";")
		if strings.EqualFold(strings.TrimSpace(a), addr) {
			found = append(found, h)
		}
	}
	if len(found) != 1 {
		t.Fatalf("DSN: %d blocks for %s, want 1; blocks: %v", len(found), addr, d.recipients)
	}
	return found[0]
}

// ---------------------------------------------------------------- tests

// TestMXDeliveryEndToEnd: a message to two recipients of example.net goes,
// in one transaction, to the preferred exchanger only, from the configured
// source address, over STARTTLS, and its DKIM signature still verifies there.
func TestMXDeliveryEndToEnd(t *testing.T) {
	e := newMXEnv(t, mxOptions{})
	e.start(t)

	tok := newToken()
	rcpts := []string{"alice@example.net", "bob@example.net"}
	id := e.send(t, tok, rcpts...)
	msg := mustWait(t, e.mx1, "the message", carrying(tok))

	if !strings.EqualFold(msg.From, sender) {
		t.Errorf("mx1 got MAIL FROM %q, want %s", msg.From, sender)
	}
	if !sameAddrs(msg.To, rcpts) {
		t.Errorf("mx1 got RCPT %q in the transaction, want both of %q", msg.To, rcpts)
	}
	if host, _, _ := net.SplitHostPort(msg.Peer); host != mxSourceIP {
		t.Errorf("mx1 saw the connection come from %s, want the configured source IP %s", msg.Peer, mxSourceIP)
	}
	if !msg.TLS {
		t.Errorf("the relay did not use the STARTTLS that mx1 offers")
	}
	verifyDKIM(t, msg, senderDomain, e.inst.dnsRecords())

	e.waitGone(t, id)
	if n := e.mx1.Count(carrying(tok)); n != 1 {
		t.Errorf("mx1 got %d copies, want 1 (one transaction for both recipients)", n)
	}
	if n := e.mx2.Accepted(); n != 0 {
		t.Errorf("mx2 (MX 20) got %d connections while mx1 (MX 10) accepted; want none", n)
	}
	if n := len(e.senderMX.Messages()); n != 0 {
		t.Errorf("the sender got %d messages (DSNs?) for a delivered message", n)
	}
	if e.zone.CountType("example.net", dns.TypeMX) == 0 {
		t.Errorf("the relay never asked the test's DNS server for example.net MX")
	}
}

// TestMXBounceDSN: one recipient refused with 550 5.1.1 at RCPT, the other
// accepted: the accepted one is delivered, and the sender gets a DSN naming
// only the refused one, DKIM-signed for the system domain (hostname's,
// sesame.test, added as a domain).
func TestMXBounceDSN(t *testing.T) {
	e := newMXEnv(t, mxOptions{})
	system := e.inst.addDomain(t, "sesame.test")
	const bad, good = "nobody@example.net", "somebody@example.net"
	e.mx1.SetRcptPolicy(func(rcpt string) error {
		if strings.EqualFold(rcpt, bad) {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user here"}
		}
		return nil
	})
	e.start(t)

	tok := newToken()
	id := e.send(t, tok, bad, good)
	msg := mustWait(t, e.mx1, "the message", carrying(tok))
	if !sameAddrs(msg.To, []string{good}) {
		t.Errorf("mx1 got the message for %q, want [%s]", msg.To, good)
	}
	verifyDKIM(t, msg, senderDomain, e.inst.dnsRecords())

	dsnMsg := mustWait(t, e.senderMX, "the DSN", dsnFor(tok))
	verifyDKIM(t, dsnMsg, "sesame.test", system.dkimRecords())
	d := parseDSN(t, dsnMsg)
	if len(d.recipients) != 1 {
		t.Errorf("DSN reports %d recipients, want only %s:\n%s", len(d.recipients), bad, dsnMsg.Data)
	}
	r := d.recipient(t, bad)
	if got := r.Get("Status"); got != "5.1.1" {
		t.Errorf("DSN Status %q, want 5.1.1", got)
	}
	if got := r.Get("Action"); got != "failed" {
		t.Errorf("DSN Action %q, want failed", got)
	}
	if got := r.Get("Diagnostic-Code"); !strings.Contains(got, "550 5.1.1") {
		t.Errorf("DSN Diagnostic-Code %q, want the 550 5.1.1 reply", got)
	}
	if got := r.Get("Remote-MTA"); !strings.Contains(got, "mx1.example.net") {
		t.Errorf("DSN Remote-MTA %q, want mx1.example.net", got)
	}
	if !strings.Contains(d.returned, "Subject: "+tok) {
		t.Errorf("text/rfc822-headers part lacks the original Subject %q:\n%s", tok, d.returned)
	}
	if strings.Contains(d.returned, "Token: "+tok) {
		t.Errorf("text/rfc822-headers part contains the original body")
	}

	e.waitGone(t, id)
	if n := e.senderMX.Count(dsnFor(tok)); n != 1 {
		t.Errorf("the sender got %d DSNs, want 1", n)
	}
	if n := e.mx1.Count(carrying(tok)); n != 1 {
		t.Errorf("mx1 got %d copies, want 1", n)
	}
}

// TestMXDeferredSurvivesRestart: both exchangers answer 451 to RCPT; the
// recipient is deferred with that reply; serve stops gracefully, the
// exchangers recover, and the restarted serve delivers.
func TestMXDeferredSurvivesRestart(t *testing.T) {
	e := newMXEnv(t, mxOptions{})
	e.mx1.SetRcptPolicy(tempFail)
	e.mx2.SetRcptPolicy(tempFail)
	e.start(t)

	tok := newToken()
	const rcpt = "later@example.net"
	id := e.send(t, tok, rcpt)
	e.waitDeferred(t, id, "451 4.3.0")

	e.stopGracefully(t)
	// The queue as the stopped server left it.
	if m := findEntry(e.queue(t), id); m == nil || len(m.Recipients) != 1 || m.Recipients[0].State != "deferred" {
		t.Fatalf("after the stop the queue holds %+v for %s, want %s deferred", m, id, rcpt)
	}
	if n := e.mx1.Count(carrying(tok)) + e.mx2.Count(carrying(tok)); n != 0 {
		t.Fatalf("the message was delivered %d times while the exchangers answered 451", n)
	}
	e.mx1.SetRcptPolicy(nil)
	e.mx2.SetRcptPolicy(nil)

	restarted := time.Now()
	e.start(t)
	msg := mustWait(t, e.mx1, "the message after the restart", carrying(tok))
	if msg.At.Before(restarted) {
		t.Errorf("delivered at %s, before the restart at %s", msg.At, restarted)
	}
	if !sameAddrs(msg.To, []string{rcpt}) {
		t.Errorf("mx1 got RCPT %q, want [%s]", msg.To, rcpt)
	}
	verifyDKIM(t, msg, senderDomain, e.inst.dnsRecords())
	e.waitGone(t, id)
	if n := len(e.senderMX.Messages()); n != 0 {
		t.Errorf("the sender got %d messages (DSNs?) for a message delivered after a delay", n)
	}
}

// TestMXDeferredRetryAll: with a retry an hour away, `sesame queue retry
// --all`, run while serve runs, makes the deferred message go out within
// seconds.
func TestMXDeferredRetryAll(t *testing.T) {
	e := newMXEnv(t, mxOptions{retryFirst: "1h", retryMax: "1h"})
	e.mx1.SetRcptPolicy(tempFail)
	e.mx2.SetRcptPolicy(tempFail)
	e.start(t)

	tok := newToken()
	id := e.send(t, tok, "patient@example.net")
	entry := e.waitDeferred(t, id, "451 4.3.0")
	if next := entry.Recipients[0].NextAttempt; time.Until(next) < 30*time.Minute {
		t.Errorf("next attempt at %s, want about an hour away (retry_first = 1h)", next)
	}
	e.mx1.SetRcptPolicy(nil)
	e.mx2.SetRcptPolicy(nil)
	before := e.mx1.RcptCount("patient@example.net")

	// serve notices other processes' writes through SQLite's data_version,
	// read every second.
	retried := time.Now()
	out := e.inst.mustAdmin(t, "queue", "retry", "--all")
	if !strings.Contains(string(out), "1 recipient") {
		t.Errorf("sesame queue retry --all printed %q, want 1 recipient due now", out)
	}
	msg, ok := e.mx1.Wait(carrying(tok), 5*time.Second-time.Since(retried))
	if !ok {
		t.Fatalf("not delivered within 5s of queue retry --all (RCPTs seen by mx1: %d before, %d now)",
			before, e.mx1.RcptCount("patient@example.net"))
	}
	t.Logf("delivered %s after queue retry --all", msg.At.Sub(retried).Round(time.Millisecond))
	verifyDKIM(t, msg, senderDomain, e.inst.dnsRecords())
	e.waitGone(t, id)
}

// TestNullMXBounces: a recipient domain with a null MX is never connected
// to; the sender gets a DSN with status 5.1.10 (RFC 7505 §4.1).
func TestNullMXBounces(t *testing.T) {
	e := newMXEnv(t, mxOptions{})
	e.start(t)

	tok := newToken()
	const rcpt = "someone@nomail.example.org"
	id := e.send(t, tok, rcpt)
	dsnMsg := mustWait(t, e.senderMX, "the DSN", dsnFor(tok))
	d := parseDSN(t, dsnMsg)
	r := d.recipient(t, rcpt)
	if got := r.Get("Status"); got != "5.1.10" {
		t.Errorf("DSN Status %q, want 5.1.10 (null MX)", got)
	}
	if got := r.Get("Action"); got != "failed" {
		t.Errorf("DSN Action %q, want failed", got)
	}
	if !strings.Contains(d.returned, "Subject: "+tok) {
		t.Errorf("text/rfc822-headers part lacks the original Subject %q:\n%s", tok, d.returned)
	}
	e.waitGone(t, id)
	if n := e.mx1.Accepted() + e.mx2.Accepted(); n != 0 {
		t.Errorf("the exchangers got %d connections; a null MX domain must get none", n)
	}
	if n := e.senderMX.Count(carrying(tok)); n != 0 {
		t.Errorf("the message itself reached the sender's exchanger %d times", n)
	}
	if e.zone.CountType("nomail.example.org", dns.TypeMX) == 0 {
		t.Errorf("the relay never asked for nomail.example.org MX")
	}
}

// TestQueueDeleteBounce: a deferred message deleted with --bounce leaves
// the queue, is no longer attempted, and its sender gets a DSN (5.0.0).
func TestQueueDeleteBounce(t *testing.T) {
	e := newMXEnv(t, mxOptions{})
	e.mx1.SetRcptPolicy(tempFail)
	e.mx2.SetRcptPolicy(tempFail)
	e.start(t)

	tok := newToken()
	const rcpt = "doomed@example.net"
	id := e.send(t, tok, rcpt)
	e.waitDeferred(t, id, "451 4.3.0")

	out := e.inst.mustAdmin(t, "queue", "delete", id, "--bounce")
	deleted := time.Now()
	if !strings.Contains(string(out), "Deleted "+id) || !strings.Contains(string(out), "bounce") {
		t.Errorf("sesame queue delete %s --bounce printed %q", id, out)
	}
	if findEntry(e.queue(t), id) != nil {
		t.Errorf("message %s still in queue list after queue delete", id)
	}
	attemptsAtDelete := e.mx1.RcptCount(rcpt)

	dsnMsg := mustWait(t, e.senderMX, "the DSN", dsnFor(tok))
	d := parseDSN(t, dsnMsg)
	r := d.recipient(t, rcpt)
	if got := r.Get("Status"); got != "5.0.0" {
		t.Errorf("DSN Status %q, want 5.0.0", got)
	}
	if got := r.Get("Action"); got != "failed" {
		t.Errorf("DSN Action %q, want failed", got)
	}
	if !strings.Contains(d.returned, "Subject: "+tok) {
		t.Errorf("text/rfc822-headers part lacks the original Subject %q:\n%s", tok, d.returned)
	}

	// Retries were every 200–500 ms; a deleted message gets none (one
	// attempt already on its way at the delete may still arrive).
	time.Sleep(max(0, 1500*time.Millisecond-time.Since(deleted)))
	if n := e.mx1.RcptCount(rcpt) - attemptsAtDelete; n > 1 {
		t.Errorf("mx1 saw %d more RCPTs for %s after the message was deleted", n, rcpt)
	}
	if findEntry(e.queue(t), id) != nil {
		t.Errorf("message %s is back in the queue after queue delete", id)
	}
	if n := e.senderMX.Count(dsnFor(tok)); n != 1 {
		t.Errorf("the sender got %d DSNs, want 1", n)
	}
	if n := e.mx1.Count(carrying(tok)) + e.mx2.Count(carrying(tok)); n != 0 {
		t.Errorf("the deleted message was delivered %d times", n)
	}
}
