package relay

// End-to-end tests of MX delivery: a real SQLite queue, a real DNS server
// (zoneServer) on 127.0.0.1 and real SMTP servers on 127.0.0.2, 127.0.0.3,
// … all listening on the one port the relay uses as Config.MXPort. Each test
// asserts on what the servers received and on the outcomes and DSNs the
// relay recorded.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/mail"
	"net/textproto"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"

	"github.com/sesame-mail/sesame/store"
	"github.com/sesame-mail/sesame/testkit"
)

// mxSender is the envelope sender of the test mail; its domain's MX is a
// sink on 127.0.0.3 in the tests that expect a DSN.
const mxSender = "app@sender.test"

// senderZone gives sender.test an MX at 127.0.0.3, for DSNs.
var senderZone = []string{
	"sender.test. 300 IN MX 10 mx.sender.test.",
	"mx.sender.test. 300 IN A 127.0.0.3",
}

const mxBody = "From: <app@sender.test>\r\nSubject: mx test\r\nMessage-ID: <mx-1@sender.test>\r\n\r\nbody\r\n"

// mxConfig is testConfig for MX delivery on port, with DNS from z and
// loopback destinations allowed.
func mxConfig(t *testing.T, z *testkit.Zone, port int) Config {
	cfg := testConfig(t, "", nil)
	cfg.MXPort = port
	cfg.DNSServers = []string{z.Addr}
	cfg.AllowPrivateDestinations = true
	return cfg
}

// outcomeLog hands out the recorder's outcomes by recipient, whatever order
// the relay completes them in.
type outcomeLog struct {
	q     *recorder
	early []store.Outcome // read while waiting for another recipient
}

// next waits for the next outcome for addr.
func (l *outcomeLog) next(t *testing.T, addr string) store.Outcome {
	t.Helper()
	for i, o := range l.early {
		if o.Recipient == addr {
			l.early = append(l.early[:i], l.early[i+1:]...)
			return o
		}
	}
	for {
		o := l.q.next(t)
		if o.Recipient == addr {
			return o
		}
		l.early = append(l.early, o)
	}
}

// nextNotice waits for the next DSN the relay queued.
func nextNotice(t *testing.T, q *recorder) *store.Message {
	t.Helper()
	select {
	case n := <-q.notices:
		return n
	case <-time.After(10 * time.Second):
		t.Fatal("no DSN queued within 10s")
		return nil
	}
}

func wantNoNotice(t *testing.T, q *recorder) {
	t.Helper()
	select {
	case n := <-q.notices:
		t.Errorf("unexpected DSN from %q to %v:\n%s", n.Sender, n.Recipients, n.Data)
	default:
	}
}

// wantNothingMore fails if the sink has received a message not yet taken.
func wantNothingMore(t *testing.T, s *testkit.Sink) {
	t.Helper()
	if m, ok := s.NextWithin(0); ok {
		t.Errorf("sink %s got an unexpected message from %q to %v:\n%s", s.Addr, m.From, m.To, m.Data)
	}
}

func wantQueueEmpty(t *testing.T, q *recorder) {
	t.Helper()
	entries, err := q.QueueMessages(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("message %s from %q still queued: %+v", e.ID, e.Sender, e.Recipients)
	}
}

// dsnRecipients checks that m, as a server received it, is a DSN from the
// null sender to sender, and returns its per-recipient delivery-status
// fields.
func dsnRecipients(t *testing.T, m *testkit.Message, sender string) (*mail.Message, []textproto.MIMEHeader) {
	t.Helper()
	if m.From != "" {
		t.Errorf("DSN sent from <%s>, want the null sender", m.From)
	}
	if strings.Join(m.To, ",") != sender {
		t.Errorf("DSN sent to %v, want %s", m.To, sender)
	}
	msg, parts := parseDSN(t, m.Data) // multipart/report; report-type=delivery-status, three parts
	_, rcpts := parseDSNStatus(t, parts[1].body)
	return msg, rcpts
}

// wantFields fails unless h has each name with the value that follows it.
func wantFields(t *testing.T, h textproto.MIMEHeader, kv ...string) {
	t.Helper()
	for i := 0; i < len(kv); i += 2 {
		if got := h.Get(kv[i]); got != kv[i+1] {
			t.Errorf("%s: %q, want %q (fields %v)", kv[i], got, kv[i+1], h)
		}
	}
}

// scriptedMX is a hand-written SMTP server for what go-smtp's server cannot
// be made to do: refuse at the greeting, leave 8BITMIME out of its EHLO
// reply, hang up right after a reply. Set its fields, then serve.
type scriptedMX struct {
	greeting string   // the first reply, e.g. "220 scripted.test ESMTP"
	ext      []string // EHLO keywords after the first line
	// rcpt answers RCPT TO:<addr>; hangUp closes the connection after the
	// reply. nil accepts every recipient.
	rcpt func(addr string) (reply string, hangUp bool)
	// data is the reply to the end of the data; nil accepts.
	data func() string
	// holdReplies keeps the replies to RSET, MAIL and RCPT until DATA, as
	// if the server answered a pipelined group at once: a client that waits
	// for each reply before its next command gets none.
	holdReplies bool
	// data354Anyway answers DATA with 354 even when no recipient was
	// accepted (RFC 2920 §3.1 says 554), and refuses the data that follows.
	data354Anyway bool
	// hangUpAfterData closes the connection right after the reply to the
	// data, as a server whose idle timeout is very short.
	hangUpAfterData bool

	violations atomic.Int32 // commands sent before the reply to the previous one, without PIPELINING

	accepted atomic.Int32
	got      chan testkit.Message

	mu   sync.Mutex
	cmds []string // every command line received, in order
}

// serve starts m on ln until the test ends.
func (m *scriptedMX) serve(t *testing.T, ln net.Listener) *scriptedMX {
	t.Helper()
	m.got = make(chan testkit.Message, 100)
	serveConns(t, ln, func(c net.Conn, _ int) {
		m.accepted.Add(1)
		m.converse(c)
	})
	return m
}

// serveConns accepts connections on ln until the test ends, each handled by
// handle in its own goroutine (n counts them from 1) and closed after it;
// at the end it closes ln and every open connection and waits for the
// handlers. The hand-written servers of these tests share it.
func serveConns(t *testing.T, ln net.Listener, handle func(c net.Conn, n int)) {
	var (
		mu   sync.Mutex
		open = map[net.Conn]bool{}
		wg   sync.WaitGroup
	)
	wg.Go(func() {
		for n := 1; ; n++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open[c] = true
			mu.Unlock()
			wg.Go(func() {
				handle(c, n)
				c.Close()
				mu.Lock()
				delete(open, c)
				mu.Unlock()
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

// commands returns the verbs received so far ("EHLO", "MAIL", …).
func (m *scriptedMX) commands() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var verbs []string
	for _, c := range m.cmds {
		verb, _, _ := strings.Cut(c, " ")
		verb, _, _ = strings.Cut(verb, ":")
		verbs = append(verbs, strings.ToUpper(verb))
	}
	return verbs
}

func (m *scriptedMX) count(verb string) int {
	n := 0
	for _, v := range m.commands() {
		if v == verb {
			n++
		}
	}
	return n
}

func (m *scriptedMX) converse(c net.Conn) {
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	sayNow := func(lines ...string) bool {
		_, err := io.WriteString(c, strings.Join(lines, "\r\n")+"\r\n")
		return err == nil
	}
	if !sayNow(m.greeting) {
		return
	}
	greeted := strings.HasPrefix(m.greeting, "220")
	msg := testkit.Message{Peer: c.RemoteAddr().String()}
	between := func(s string) string {
		_, s, _ = strings.Cut(s, "<")
		s, _, _ = strings.Cut(s, ">")
		return s
	}
	pipelining := slices.Contains(m.ext, "PIPELINING")
	var held []string
	holding := false // the current command's reply is held
	say := func(lines ...string) bool {
		if holding {
			held = append(held, strings.Join(lines, "\r\n"))
			return true
		}
		return sayNow(lines...)
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if !pipelining && r.Buffered() > 0 {
			m.violations.Add(1)
		}
		line = strings.TrimRight(line, "\r\n")
		m.mu.Lock()
		m.cmds = append(m.cmds, line)
		m.mu.Unlock()
		verb, _, _ := strings.Cut(line, " ")
		verb, _, _ = strings.Cut(verb, ":")
		verb = strings.ToUpper(verb)
		holding = m.holdReplies && (verb == "MAIL" || verb == "RCPT" || verb == "RSET")
		if !holding && len(held) > 0 {
			if !sayNow(held...) {
				return
			}
			held = nil
		}
		ok := true
		switch {
		case verb == "QUIT":
			say("221 2.0.0 bye")
			return
		case !greeted:
			ok = say("503 5.5.1 not after that greeting")
		case verb == "EHLO":
			lines := []string{"scripted.test"}
			lines = append(lines, m.ext...)
			for i := range lines {
				if i == len(lines)-1 {
					lines[i] = "250 " + lines[i]
				} else {
					lines[i] = "250-" + lines[i]
				}
			}
			ok = say(lines...)
		case verb == "HELO":
			ok = say("250 scripted.test")
		case verb == "MAIL":
			msg.From, msg.To = between(line), nil
			ok = say("250 2.1.0 OK")
		case verb == "RCPT":
			addr := between(line)
			reply, hangUp := "250 2.1.5 OK", false
			if m.rcpt != nil {
				reply, hangUp = m.rcpt(addr)
			}
			ok = say(reply)
			if hangUp {
				return
			}
			if strings.HasPrefix(reply, "2") {
				msg.To = append(msg.To, addr)
			}
		case verb == "DATA" && len(msg.To) == 0 && !m.data354Anyway:
			ok = sayNow("554 5.5.1 no valid recipients")
		case verb == "DATA":
			if !sayNow("354 3.0.0 go ahead") {
				return
			}
			var data strings.Builder
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
				data.WriteString(strings.TrimPrefix(l, "."))
			}
			reply := "250 2.0.0 OK"
			switch {
			case len(msg.To) == 0:
				reply = "554 5.5.1 no valid recipients"
			case m.data != nil:
				reply = m.data()
			}
			ok = sayNow(reply)
			if strings.HasPrefix(reply, "2") {
				msg.Data = []byte(data.String())
				m.got <- msg
			}
			msg.From, msg.To = "", nil
			if m.hangUpAfterData {
				return
			}
		case verb == "RSET":
			msg.From, msg.To = "", nil
			ok = say("250 2.0.0 OK")
		case verb == "NOOP":
			ok = say("250 2.0.0 OK")
		default:
			ok = say("502 5.5.2 not implemented")
		}
		if !ok {
			return
		}
	}
}

// 1. Preference order, and the fallback to the next MX when the best one
// cannot be reached or will not talk.
func TestMXPriorities(t *testing.T) {
	zone := []string{
		"prio.test. 300 IN MX 20 mx2.prio.test.",
		"prio.test. 300 IN MX 10 mx1.prio.test.",
		"mx1.prio.test. 300 IN A 127.0.0.2",
		"mx2.prio.test. 300 IN A 127.0.0.3",
	}

	t.Run("best first", func(t *testing.T) {
		port, lns := testkit.ReservePort(t, "127.0.0.2", "127.0.0.3")
		mx1, mx2 := sinkOn(t, lns["127.0.0.2"], nil), sinkOn(t, lns["127.0.0.3"], nil)
		z := testkit.StartZone(t, zone...)
		q := newQueue(t)
		for range 3 {
			enqueue(t, q, mxSender, mxBody, "rcpt@prio.test")
		}
		start(t, mxConfig(t, z, port), q)
		for range 3 {
			wantOutcome(t, q.next(t), store.StateDelivered, "250 ")
			if m := mx1.Next(t); strings.Join(m.To, ",") != "rcpt@prio.test" {
				t.Errorf("mx1 got recipients %v", m.To)
			}
		}
		if n := mx2.Accepted(); n != 0 {
			t.Errorf("mx2 (preference 20) accepted %d connections, want none", n)
		}
		wantQueueEmpty(t, q)
	})

	t.Run("best not listening", func(t *testing.T) {
		port, lns := testkit.ReservePort(t, "127.0.0.2", "127.0.0.3")
		lns["127.0.0.2"].Close() // connection refused at mx1
		mx2 := sinkOn(t, lns["127.0.0.3"], nil)
		z := testkit.StartZone(t, zone...)
		q := newQueue(t)
		enqueue(t, q, mxSender, mxBody, "rcpt@prio.test")
		start(t, mxConfig(t, z, port), q)
		wantOutcome(t, q.next(t), store.StateDelivered, "250 ")
		if m := mx2.Next(t); strings.Join(m.To, ",") != "rcpt@prio.test" || string(m.Data) != mxBody {
			t.Errorf("mx2 got recipients %v, data %q", m.To, m.Data)
		}
		wantQueueEmpty(t, q)
	})

	for _, greeting := range []string{"554 5.7.1 go away", "421 4.3.2 too busy"} {
		t.Run("best greets "+greeting[:3], func(t *testing.T) {
			port, lns := testkit.ReservePort(t, "127.0.0.2", "127.0.0.3")
			mx1 := (&scriptedMX{greeting: greeting}).serve(t, lns["127.0.0.2"])
			mx2 := sinkOn(t, lns["127.0.0.3"], nil)
			z := testkit.StartZone(t, zone...)
			q := newQueue(t)
			enqueue(t, q, mxSender, mxBody, "rcpt@prio.test")
			start(t, mxConfig(t, z, port), q)
			wantOutcome(t, q.next(t), store.StateDelivered, "250 ")
			if m := mx2.Next(t); strings.Join(m.To, ",") != "rcpt@prio.test" {
				t.Errorf("mx2 got recipients %v", m.To)
			}
			if mx1.accepted.Load() != 1 {
				t.Errorf("mx1 accepted %d connections, want the 1 it refused", mx1.accepted.Load())
			}
			if n := mx1.count("MAIL"); n != 0 {
				t.Errorf("mx1 saw %d MAIL commands after refusing the session", n)
			}
			wantNoNotice(t, q)
			wantQueueEmpty(t, q)
		})
	}
}

// 2. A domain without MX records is its own mail exchanger (RFC 5321 §5.1).
func TestMXImplicit(t *testing.T) {
	port, lns := testkit.ReservePort(t, "127.0.0.2")
	s := sinkOn(t, lns["127.0.0.2"], nil)
	z := testkit.StartZone(t, "bare.test. 300 IN A 127.0.0.2")
	q := newQueue(t)
	enqueue(t, q, mxSender, mxBody, "rcpt@bare.test")
	start(t, mxConfig(t, z, port), q)

	wantOutcome(t, q.next(t), store.StateDelivered, "250 ")
	if m := s.Next(t); strings.Join(m.To, ",") != "rcpt@bare.test" || m.From != mxSender {
		t.Errorf("sink got %q → %v", m.From, m.To)
	}
	if n := z.Count("bare.test."); n < 2 {
		t.Errorf("%d queries for bare.test, want its MX and then its address", n)
	}
}

// 3. A null MX (RFC 7505) bounces at once, with 5.1.10, without connecting
// anywhere; the DSN reaches the sender's MX.
func TestMXNullMX(t *testing.T) {
	port, lns := testkit.ReservePort(t, "127.0.0.2", "127.0.0.3")
	never := sinkOn(t, lns["127.0.0.2"], nil)
	senderMX := sinkOn(t, lns["127.0.0.3"], nil)
	z := testkit.StartZone(t, append([]string{
		"nomail.test. 300 IN MX 0 .",
		"nomail.test. 300 IN A 127.0.0.2", // must not be used
	}, senderZone...)...)
	q := newQueue(t)
	id := enqueue(t, q, mxSender, mxBody, "rcpt@nomail.test")
	start(t, mxConfig(t, z, port), q)
	log := &outcomeLog{q: q}

	o := log.next(t, "rcpt@nomail.test")
	wantOutcome(t, o, store.StateBounced, "5.1.10 ")
	if !strings.Contains(o.Reply, "null MX") {
		t.Errorf("reply %q does not mention the null MX", o.Reply)
	}
	n := nextNotice(t, q)
	if n.Sender != "" || strings.Join(n.Recipients, ",") != mxSender {
		t.Errorf("DSN queued from %q to %v, want from <> to %s", n.Sender, n.Recipients, mxSender)
	}
	if _, err := q.QueueMessage(context.Background(), id); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("bounced message %s still queued: %v", id, err)
	}

	_, rcpts := dsnRecipients(t, senderMX.Next(t), mxSender)
	if len(rcpts) != 1 {
		t.Fatalf("DSN reports %d recipients, want 1", len(rcpts))
	}
	wantFields(t, rcpts[0], "Final-Recipient", "rfc822; rcpt@nomail.test", "Action", "failed", "Status", "5.1.10",
		"Remote-MTA", "")
	wantOutcome(t, log.next(t, mxSender), store.StateDelivered, "250 ")
	if n := never.Accepted(); n != 0 {
		t.Errorf("the null MX domain's address got %d connections, want none", n)
	}
	wantQueueEmpty(t, q)
}

// 4. A domain that does not exist bounces with 5.1.2.
func TestMXNXDOMAIN(t *testing.T) {
	port, lns := testkit.ReservePort(t, "127.0.0.3")
	senderMX := sinkOn(t, lns["127.0.0.3"], nil)
	z := testkit.StartZone(t, senderZone...)
	q := newQueue(t)
	enqueue(t, q, mxSender, mxBody, "rcpt@nowhere.test")
	start(t, mxConfig(t, z, port), q)
	log := &outcomeLog{q: q}

	wantOutcome(t, log.next(t, "rcpt@nowhere.test"), store.StateBounced, "5.1.2 domain nowhere.test does not exist")
	_, rcpts := dsnRecipients(t, senderMX.Next(t), mxSender)
	if len(rcpts) != 1 {
		t.Fatalf("DSN reports %d recipients, want 1", len(rcpts))
	}
	wantFields(t, rcpts[0], "Final-Recipient", "rfc822; rcpt@nowhere.test", "Action", "failed", "Status", "5.1.2")
	wantOutcome(t, log.next(t, mxSender), store.StateDelivered, "250 ")
	wantQueueEmpty(t, q)
}

// 5. SERVFAIL is DNS trouble: deferred, never bounced, and delivered once
// the zone answers again.
func TestMXServfailThenRecovery(t *testing.T) {
	port, lns := testkit.ReservePort(t, "127.0.0.2")
	s := sinkOn(t, lns["127.0.0.2"], nil)
	z := testkit.StartZone(t,
		"sf.test. 300 IN MX 10 mx.sf.test.",
		"mx.sf.test. 300 IN A 127.0.0.2",
	)
	z.Fail("sf.test.", dns.RcodeServerFailure)
	q := newQueue(t)
	enqueue(t, q, mxSender, mxBody, "rcpt@sf.test")
	start(t, mxConfig(t, z, port), q)

	wantOutcome(t, q.next(t), store.StateDeferred, "4.4.3 DNS lookup of sf.test MX failed: server answered SERVFAIL")
	r := recipients(t, q)["rcpt@sf.test"]
	if r.State != store.StateDeferred || r.Attempts < 1 {
		t.Errorf("stored recipient %+v, want deferred after an attempt", r)
	}
	z.Fail("sf.test.", dns.RcodeSuccess)
	for {
		o := q.next(t)
		if o.State == store.StateDelivered {
			break
		}
		// Attempts made before the zone recovered.
		wantOutcome(t, o, store.StateDeferred, "4.4.3 DNS lookup of sf.test MX failed")
	}
	if m := s.Next(t); strings.Join(m.To, ",") != "rcpt@sf.test" {
		t.Errorf("sink got recipients %v", m.To)
	}
	wantNoNotice(t, q)
	wantQueueEmpty(t, q)
}

// 6. Temporary replies defer, and a later attempt delivers.
func TestMXTemporaryReplies(t *testing.T) {
	zone := []string{
		"temp.test. 300 IN MX 10 mx.temp.test.",
		"mx.temp.test. 300 IN A 127.0.0.2",
	}

	t.Run("451 to RCPT", func(t *testing.T) {
		port, lns := testkit.ReservePort(t, "127.0.0.2")
		s := sinkOn(t, lns["127.0.0.2"], nil)
		s.ReplyTo("rcpt@temp.test", &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}, nil)
		z := testkit.StartZone(t, zone...)
		q := newQueue(t)
		enqueue(t, q, mxSender, mxBody, "rcpt@temp.test")
		start(t, mxConfig(t, z, port), q)

		wantOutcome(t, q.next(t), store.StateDeferred, "451 4.3.0 try later")
		wantOutcome(t, q.next(t), store.StateDelivered, "250 ")
		if m := s.Next(t); strings.Join(m.To, ",") != "rcpt@temp.test" {
			t.Errorf("sink got recipients %v", m.To)
		}
		wantNothingMore(t, s)
		wantNoNotice(t, q)
		wantQueueEmpty(t, q)
	})

	t.Run("451 to DATA", func(t *testing.T) {
		port, lns := testkit.ReservePort(t, "127.0.0.2")
		var calls atomic.Int32
		s := (&scriptedMX{greeting: "220 scripted.test ESMTP", ext: []string{"8BITMIME"}, data: func() string {
			if calls.Add(1) == 1 {
				return "451 4.3.0 queue full"
			}
			return "250 2.0.0 OK queued"
		}}).serve(t, lns["127.0.0.2"])
		z := testkit.StartZone(t, zone...)
		q := newQueue(t)
		enqueue(t, q, mxSender, mxBody, "rcpt@temp.test")
		start(t, mxConfig(t, z, port), q)

		wantOutcome(t, q.next(t), store.StateDeferred, "451 4.3.0 queue full")
		wantOutcome(t, q.next(t), store.StateDelivered, "250 2.0.0 OK queued")
		select {
		case m := <-s.got:
			if string(m.Data) != mxBody || strings.Join(m.To, ",") != "rcpt@temp.test" {
				t.Errorf("server got %v %q", m.To, m.Data)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("nothing delivered")
		}
		if n := s.count("DATA"); n != 2 {
			t.Errorf("%d DATA commands, want 2", n)
		}
		if n := s.accepted.Load(); n != 1 {
			t.Errorf("%d connections, want 1: a 451 leaves the connection usable", n)
		}
		wantQueueEmpty(t, q)
	})

	t.Run("421 to RCPT and hang up", func(t *testing.T) {
		port, lns := testkit.ReservePort(t, "127.0.0.2")
		var calls atomic.Int32
		s := (&scriptedMX{greeting: "220 scripted.test ESMTP", rcpt: func(string) (string, bool) {
			if calls.Add(1) == 1 {
				return "421 4.3.2 shutting down", true
			}
			return "250 2.1.5 OK", false
		}}).serve(t, lns["127.0.0.2"])
		z := testkit.StartZone(t, zone...)
		q := newQueue(t)
		enqueue(t, q, mxSender, mxBody, "rcpt@temp.test")
		start(t, mxConfig(t, z, port), q)

		wantOutcome(t, q.next(t), store.StateDeferred, "421 4.3.2 shutting down")
		wantOutcome(t, q.next(t), store.StateDelivered, "250 ")
		select {
		case m := <-s.got:
			if strings.Join(m.To, ",") != "rcpt@temp.test" {
				t.Errorf("server got recipients %v", m.To)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("nothing delivered")
		}
		if n := s.accepted.Load(); n != 2 {
			t.Errorf("%d connections, want 2: the one the server closed, then a new one", n)
		}
		if n := s.count("RSET"); n != 0 {
			t.Errorf("%d RSET commands: the closed connection was reused", n)
		}
		wantQueueEmpty(t, q)
	})
}

// 7. A 550 for one of three recipients bounces that one only, and its DSN
// reaches the sender's MX from the null sender.
func TestMXOneRecipientRefused(t *testing.T) {
	port, lns := testkit.ReservePort(t, "127.0.0.2", "127.0.0.3")
	dest, senderMX := sinkOn(t, lns["127.0.0.2"], nil), sinkOn(t, lns["127.0.0.3"], nil)
	dest.ReplyTo("b@three.test", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"})
	z := testkit.StartZone(t, append([]string{
		"three.test. 300 IN MX 10 mx.three.test.",
		"mx.three.test. 300 IN A 127.0.0.2",
	}, senderZone...)...)
	q := newQueue(t)
	id := enqueue(t, q, mxSender, mxBody, "a@three.test", "b@three.test", "c@three.test")
	start(t, mxConfig(t, z, port), q)
	log := &outcomeLog{q: q}

	wantOutcome(t, log.next(t, "a@three.test"), store.StateDelivered, "250 ")
	wantOutcome(t, log.next(t, "b@three.test"), store.StateBounced, "550 5.1.1 no such user")
	wantOutcome(t, log.next(t, "c@three.test"), store.StateDelivered, "250 ")
	if m := dest.Next(t); strings.Join(m.To, ",") != "a@three.test,c@three.test" || string(m.Data) != mxBody {
		t.Errorf("destination got recipients %v, data %q", m.To, m.Data)
	}

	msg, rcpts := dsnRecipients(t, senderMX.Next(t), mxSender)
	if len(rcpts) != 1 {
		t.Fatalf("DSN reports %d recipients, want b only: %v", len(rcpts), rcpts)
	}
	wantFields(t, rcpts[0],
		"Final-Recipient", "rfc822; b@three.test",
		"Action", "failed",
		"Status", "5.1.1",
		"Remote-MTA", "dns; mx.three.test",
		"Diagnostic-Code", "smtp; 550 5.1.1 no such user")
	if got := msg.Header.Get("X-Sesame-Queue-ID"); got != id {
		t.Errorf("DSN names queue id %q, want %s", got, id)
	}
	wantOutcome(t, log.next(t, mxSender), store.StateDelivered, "250 ")
	wantNothingMore(t, dest)
	wantNothingMore(t, senderMX)
	wantQueueEmpty(t, q)
}

// 8. A recipient still failing when MaxLifetime runs out expires: the
// sender learns with Action failed, Status 4.4.7, and the message leaves
// the queue.
func TestMXExpiry(t *testing.T) {
	port, lns := testkit.ReservePort(t, "127.0.0.2", "127.0.0.3")
	dest, senderMX := sinkOn(t, lns["127.0.0.2"], nil), sinkOn(t, lns["127.0.0.3"], nil)
	dest.ReplyTo("rcpt@slow.test", &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"})
	z := testkit.StartZone(t, append([]string{
		"slow.test. 300 IN MX 10 mx.slow.test.",
		"mx.slow.test. 300 IN A 127.0.0.2",
	}, senderZone...)...)
	q := newQueue(t)
	cfg := mxConfig(t, z, port)
	cfg.MaxLifetime = 300 * time.Millisecond
	id := enqueue(t, q, mxSender, mxBody, "rcpt@slow.test")
	start(t, cfg, q)
	log := &outcomeLog{q: q}

	deferrals := 0
	for {
		o := log.next(t, "rcpt@slow.test")
		if o.State != store.StateDeferred {
			wantOutcome(t, o, store.StateExpired, "gave up after 300ms in the queue; last error: 451 4.3.0 try later")
			break
		}
		wantOutcome(t, o, store.StateDeferred, "451 4.3.0 try later")
		deferrals++
	}
	t.Logf("%d deferrals before expiry", deferrals)
	if n := nextNotice(t, q); n.Sender != "" || strings.Join(n.Recipients, ",") != mxSender {
		t.Errorf("DSN queued from %q to %v, want from <> to %s", n.Sender, n.Recipients, mxSender)
	}
	if _, err := q.QueueMessage(context.Background(), id); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("expired message %s still queued: %v", id, err)
	}

	msg, rcpts := dsnRecipients(t, senderMX.Next(t), mxSender)
	if len(rcpts) != 1 {
		t.Fatalf("DSN reports %d recipients, want 1", len(rcpts))
	}
	wantFields(t, rcpts[0],
		"Final-Recipient", "rfc822; rcpt@slow.test",
		"Action", "failed",
		"Status", "4.4.7",
		"Remote-MTA", "dns; mx.slow.test",
		"Diagnostic-Code", "smtp; 451 4.3.0 try later")
	if s := msg.Header.Get("Subject"); s != "Undelivered Mail Returned to Sender" {
		t.Errorf("Subject %q", s)
	}
	wantOutcome(t, log.next(t, mxSender), store.StateDelivered, "250 ")
	wantNoNotice(t, q)
	wantQueueEmpty(t, q)
}

// 9. The sender is warned once, after DelayWarning, however often the
// recipient is deferred afterwards.
func TestMXDelayWarning(t *testing.T) {
	port, lns := testkit.ReservePort(t, "127.0.0.2", "127.0.0.3")
	dest, senderMX := sinkOn(t, lns["127.0.0.2"], nil), sinkOn(t, lns["127.0.0.3"], nil)
	dest.ReplyTo("rcpt@slow.test", &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"})
	z := testkit.StartZone(t, append([]string{
		"slow.test. 300 IN MX 10 mx.slow.test.",
		"mx.slow.test. 300 IN A 127.0.0.2",
	}, senderZone...)...)
	q := newQueue(t)
	cfg := mxConfig(t, z, port)
	cfg.DelayWarning = 100 * time.Millisecond
	cfg.MaxLifetime = time.Hour
	id := enqueue(t, q, mxSender, mxBody, "rcpt@slow.test")
	start(t, cfg, q)
	log := &outcomeLog{q: q}

	n := nextNotice(t, q)
	if n.Sender != "" || strings.Join(n.Recipients, ",") != mxSender {
		t.Errorf("delay warning queued from %q to %v", n.Sender, n.Recipients)
	}
	msg, rcpts := dsnRecipients(t, senderMX.Next(t), mxSender)
	if len(rcpts) != 1 {
		t.Fatalf("DSN reports %d recipients, want 1", len(rcpts))
	}
	wantFields(t, rcpts[0],
		"Final-Recipient", "rfc822; rcpt@slow.test",
		"Action", "delayed",
		"Status", "4.3.0",
		"Remote-MTA", "dns; mx.slow.test",
		"Diagnostic-Code", "smtp; 451 4.3.0 try later")
	entry, err := q.QueueMessage(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	until, err := mail.ParseDate(rcpts[0].Get("Will-Retry-Until"))
	if err != nil {
		t.Errorf("Will-Retry-Until %q: %v", rcpts[0].Get("Will-Retry-Until"), err)
	} else if want := entry.ReceivedAt.Add(time.Hour); until.Sub(want).Abs() > time.Second {
		t.Errorf("Will-Retry-Until %v, want %v", until, want)
	}
	if s := msg.Header.Get("Subject"); s != "Delayed Mail (still being retried)" {
		t.Errorf("Subject %q", s)
	}

	// Several more deferrals, and still only the one warning.
	for range 5 {
		wantOutcome(t, log.next(t, "rcpt@slow.test"), store.StateDeferred, "451 4.3.0 try later")
	}
	wantNoNotice(t, q)
	wantNothingMore(t, senderMX)
	if n := senderMX.Accepted(); n != 1 {
		t.Errorf("sender's MX got %d connections, want 1 for the one warning", n)
	}
	if r := recipients(t, q)["rcpt@slow.test"]; r.State != store.StateDeferred {
		t.Errorf("recipient %+v, want still deferred", r)
	}
}

// 10. Mail from the null sender (a DSN itself) never causes a DSN, whether
// its recipient bounces or expires.
func TestMXNullSenderNoDSN(t *testing.T) {
	port, lns := testkit.ReservePort(t, "127.0.0.2", "127.0.0.3")
	dest, senderMX := sinkOn(t, lns["127.0.0.2"], nil), sinkOn(t, lns["127.0.0.3"], nil)
	dest.ReplyTo("gone@dest.test", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"})
	dest.ReplyTo("slow@dest.test", &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"})
	z := testkit.StartZone(t, append([]string{
		"dest.test. 300 IN MX 10 mx.dest.test.",
		"mx.dest.test. 300 IN A 127.0.0.2",
	}, senderZone...)...)
	q := newQueue(t)
	cfg := mxConfig(t, z, port)
	cfg.MaxLifetime = 300 * time.Millisecond
	cfg.DelayWarning = 50 * time.Millisecond // not for the null sender either
	enqueue(t, q, "", mxBody, "gone@dest.test", "slow@dest.test")
	start(t, cfg, q)
	log := &outcomeLog{q: q}

	wantOutcome(t, log.next(t, "gone@dest.test"), store.StateBounced, "550 5.1.1 no such user")
	for {
		o := log.next(t, "slow@dest.test")
		if o.State != store.StateDeferred {
			wantOutcome(t, o, store.StateExpired, "gave up after 300ms")
			break
		}
	}
	wantNoNotice(t, q)
	wantQueueEmpty(t, q)
	wantNothingMore(t, dest)
	if n := senderMX.Accepted(); n != 0 {
		t.Errorf("sender's MX got %d connections, want none", n)
	}
}

// 11. Messages for one server share one connection.
func TestMXConnectionReuse(t *testing.T) {
	port, lns := testkit.ReservePort(t, "127.0.0.2")
	s := sinkOn(t, lns["127.0.0.2"], nil)
	z := testkit.StartZone(t,
		"reuse.test. 300 IN MX 10 mx.reuse.test.",
		"mx.reuse.test. 300 IN A 127.0.0.2",
	)
	q := newQueue(t)
	for i := range 5 {
		enqueue(t, q, mxSender, fmt.Sprintf("Subject: %d\r\n\r\nbody\r\n", i), fmt.Sprintf("r%d@reuse.test", i))
	}
	cfg := mxConfig(t, z, port)
	cfg.Workers = 1
	start(t, cfg, q)

	got := map[string]bool{}
	for range 5 {
		wantOutcome(t, q.next(t), store.StateDelivered, "250 ")
		m := s.Next(t)
		got[strings.Join(m.To, ",")] = true
	}
	if len(got) != 5 {
		t.Errorf("recipients delivered: %v, want r0 … r4", got)
	}
	if n := s.Accepted(); n != 1 {
		t.Errorf("sink accepted %d connections, want 1", n)
	}
	if n := s.TraceCount("MAIL FROM"); n != 5 {
		t.Errorf("%d MAIL commands, want 5", n)
	}
	wantQueueEmpty(t, q)
}

// 12. Connections leave from the configured source addresses, round-robin.
func TestMXSourceIPs(t *testing.T) {
	t.Run("one", func(t *testing.T) {
		port, lns := testkit.ReservePort(t, "127.0.0.2")
		s := sinkOn(t, lns["127.0.0.2"], nil)
		z := testkit.StartZone(t, "src.test. 300 IN MX 10 mx.src.test.", "mx.src.test. 300 IN A 127.0.0.2")
		q := newQueue(t)
		enqueue(t, q, mxSender, mxBody, "rcpt@src.test")
		cfg := mxConfig(t, z, port)
		cfg.SourceIPs = []string{"127.0.0.4"}
		start(t, cfg, q)
		wantOutcome(t, q.next(t), store.StateDelivered, "250 ")
		if host, _, _ := net.SplitHostPort(s.Next(t).Peer); host != "127.0.0.4" {
			t.Errorf("sink saw peer %s, want 127.0.0.4", host)
		}
	})

	t.Run("two", func(t *testing.T) {
		port, lns := testkit.ReservePort(t, "127.0.0.2")
		s := sinkOn(t, lns["127.0.0.2"], nil)
		// Four domains, four servers by name (one address), so four
		// connections: a reused connection would hide the rotation.
		var zone []string
		q := newQueue(t)
		for i := range 4 {
			zone = append(zone, fmt.Sprintf("d%d.test. 300 IN MX 10 mx.d%d.test.", i, i),
				fmt.Sprintf("mx.d%d.test. 300 IN A 127.0.0.2", i))
			enqueue(t, q, mxSender, mxBody, fmt.Sprintf("rcpt@d%d.test", i))
		}
		z := testkit.StartZone(t, zone...)
		cfg := mxConfig(t, z, port)
		cfg.Workers = 1
		cfg.SourceIPs = []string{"127.0.0.4", "127.0.0.5"}
		start(t, cfg, q)
		peers := map[string]int{}
		for range 4 {
			wantOutcome(t, q.next(t), store.StateDelivered, "250 ")
			host, _, _ := net.SplitHostPort(s.Next(t).Peer)
			peers[host]++
		}
		if len(peers) != 2 || peers["127.0.0.4"] != 2 || peers["127.0.0.5"] != 2 {
			t.Errorf("messages by peer address %v, want 2 from each of 127.0.0.4 and 127.0.0.5", peers)
		}
	})
}

// concurrency wraps a sink's sessions to count the transactions in DATA at
// once.
type concurrency struct {
	smtp.Backend
	cur, max atomic.Int32
}

func (c *concurrency) NewSession(conn *smtp.Conn) (smtp.Session, error) {
	s, err := c.Backend.NewSession(conn)
	if err != nil {
		return nil, err
	}
	return &concurrentSession{Session: s, c: c}, nil
}

type concurrentSession struct {
	smtp.Session
	c *concurrency
}

func (s *concurrentSession) Data(r io.Reader) error {
	n := s.c.cur.Add(1)
	defer s.c.cur.Add(-1)
	for {
		m := s.c.max.Load()
		if n <= m || s.c.max.CompareAndSwap(m, n) {
			break
		}
	}
	return s.Session.Data(r)
}

// 13. DomainConcurrency bounds the deliveries to one domain; the others go
// ahead meanwhile.
func TestMXDomainConcurrency(t *testing.T) {
	port, lns := testkit.ReservePort(t, "127.0.0.2", "127.0.0.3")
	var track *concurrency
	slow := sinkOn(t, lns["127.0.0.2"], func(be smtp.Backend) smtp.Backend {
		track = &concurrency{Backend: be}
		return track
	})
	hold := slow.HoldData() // one value releases one reply
	fast := sinkOn(t, lns["127.0.0.3"], nil)
	z := testkit.StartZone(t,
		"slow.test. 300 IN MX 10 mx.slow.test.",
		"mx.slow.test. 300 IN A 127.0.0.2",
		"fast.test. 300 IN MX 10 mx.fast.test.",
		"mx.fast.test. 300 IN A 127.0.0.3",
	)
	q := newQueue(t)
	const n = 4
	for i := range n {
		enqueue(t, q, mxSender, mxBody, fmt.Sprintf("r%d@slow.test", i))
	}
	enqueue(t, q, mxSender, mxBody, "rcpt@fast.test")
	cfg := mxConfig(t, z, port)
	cfg.Workers = 4
	cfg.DomainConcurrency = 1
	stop := start(t, cfg, q)
	released := false
	defer func() {
		if !released { // let a failed test's relay stop
			close(hold)
		}
		stop()
	}()

	select {
	case <-slow.InData():
	case <-time.After(10 * time.Second):
		t.Fatal("no message reached the slow domain")
	}
	// While the slow domain's first message waits for its reply, the other
	// domain's is delivered.
	if m := fast.Next(t); strings.Join(m.To, ",") != "rcpt@fast.test" {
		t.Errorf("fast domain got %v", m.To)
	}
	for i := range n {
		if i > 0 {
			select {
			case <-slow.InData():
			case <-time.After(10 * time.Second):
				t.Fatalf("message %d never reached the slow domain", i+1)
			}
		}
		// Give a second delivery time to show up, if one were allowed.
		time.Sleep(50 * time.Millisecond)
		if got := track.max.Load(); got != 1 {
			t.Fatalf("%d transactions in DATA at once at the slow domain, want 1", got)
		}
		hold <- struct{}{}
		slow.Next(t)
	}
	released = true
	log := &outcomeLog{q: q}
	for i := range n {
		wantOutcome(t, log.next(t, fmt.Sprintf("r%d@slow.test", i)), store.StateDelivered, "250 ")
	}
	wantOutcome(t, log.next(t, "rcpt@fast.test"), store.StateDelivered, "250 ")
	if got := track.max.Load(); got != 1 {
		t.Errorf("at most %d transactions in DATA at once, want 1", got)
	}
	wantQueueEmpty(t, q)
}

// 14. Exchangers on loopback or private addresses are refused unless
// allowed: bounced with 5.4.4, nothing connected.
func TestMXPrivateDestinationRefused(t *testing.T) {
	port, lns := testkit.ReservePort(t, "127.0.0.2", "127.0.0.3")
	dest, senderMX := sinkOn(t, lns["127.0.0.2"], nil), sinkOn(t, lns["127.0.0.3"], nil)
	z := testkit.StartZone(t, append([]string{
		"inside.test. 300 IN MX 10 mx.inside.test.",
		"mx.inside.test. 300 IN A 127.0.0.2",
	}, senderZone...)...)
	q := newQueue(t)
	cfg := mxConfig(t, z, port)
	cfg.AllowPrivateDestinations = false
	enqueue(t, q, mxSender, mxBody, "rcpt@inside.test")
	start(t, cfg, q)
	log := &outcomeLog{q: q}

	o := log.next(t, "rcpt@inside.test")
	wantOutcome(t, o, store.StateBounced, "5.4.4 mail exchangers of inside.test resolve only to loopback")
	if !strings.Contains(o.Reply, "mx.inside.test[127.0.0.2]") {
		t.Errorf("reply %q does not name the refused address", o.Reply)
	}
	n := nextNotice(t, q)
	_, parts := parseDSN(t, n.Data)
	if _, rcpts := parseDSNStatus(t, parts[1].body); len(rcpts) != 1 {
		t.Errorf("DSN reports %d recipients, want 1", len(rcpts))
	} else {
		wantFields(t, rcpts[0], "Final-Recipient", "rfc822; rcpt@inside.test", "Action", "failed", "Status", "5.4.4")
	}
	// The sender's MX is on loopback too: the DSN bounces, silently.
	wantOutcome(t, log.next(t, mxSender), store.StateBounced, "5.4.4 ")
	wantNoNotice(t, q)
	if a, b := dest.Accepted(), senderMX.Accepted(); a != 0 || b != 0 {
		t.Errorf("%d and %d connections to private addresses, want none", a, b)
	}
	wantQueueEmpty(t, q)
}

// 15. One message, recipients at two domains: one transaction each, each
// server getting its own domain's recipients only.
func TestMXTwoDomainsOneMessage(t *testing.T) {
	port, lns := testkit.ReservePort(t, "127.0.0.2", "127.0.0.3")
	one, two := sinkOn(t, lns["127.0.0.2"], nil), sinkOn(t, lns["127.0.0.3"], nil)
	z := testkit.StartZone(t,
		"one.test. 300 IN MX 10 mx.one.test.",
		"mx.one.test. 300 IN A 127.0.0.2",
		"two.test. 300 IN MX 10 mx.two.test.",
		"mx.two.test. 300 IN A 127.0.0.3",
	)
	q := newQueue(t)
	id := enqueue(t, q, mxSender, mxBody, "a@one.test", "x@two.test", "b@one.test", "y@two.test")
	start(t, mxConfig(t, z, port), q)

	for _, o := range q.nextFor(t, 4) {
		wantOutcome(t, o, store.StateDelivered, "250 ")
	}
	if m := one.Next(t); strings.Join(m.To, ",") != "a@one.test,b@one.test" || string(m.Data) != mxBody {
		t.Errorf("one.test's MX got %v %q", m.To, m.Data)
	}
	if m := two.Next(t); strings.Join(m.To, ",") != "x@two.test,y@two.test" || string(m.Data) != mxBody {
		t.Errorf("two.test's MX got %v %q", m.To, m.Data)
	}
	wantNothingMore(t, one)
	wantNothingMore(t, two)
	if _, err := q.QueueMessage(context.Background(), id); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("delivered message %s still queued: %v", id, err)
	}
}

// 16. 8-bit content for a server without 8BITMIME bounces with 5.6.3 and
// nothing is sent: converting it would break the DKIM signature.
func TestMXNo8BITMIME(t *testing.T) {
	port, lns := testkit.ReservePort(t, "127.0.0.2", "127.0.0.3")
	seven := (&scriptedMX{greeting: "220 scripted.test ESMTP", ext: []string{"PIPELINING", "SIZE 10485760"}}).
		serve(t, lns["127.0.0.2"])
	senderMX := sinkOn(t, lns["127.0.0.3"], nil)
	z := testkit.StartZone(t, append([]string{
		"seven.test. 300 IN MX 10 mx.seven.test.",
		"mx.seven.test. 300 IN A 127.0.0.2",
	}, senderZone...)...)
	q := newQueue(t)
	body := "From: <app@sender.test>\r\nSubject: 8bit\r\nContent-Type: text/plain; charset=utf-8\r\n" +
		"Content-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Köln\r\n"
	enqueue(t, q, mxSender, body, "rcpt@seven.test")
	start(t, mxConfig(t, z, port), q)
	log := &outcomeLog{q: q}

	wantOutcome(t, log.next(t, "rcpt@seven.test"), store.StateBounced, "5.6.3 mx.seven.test does not support 8BITMIME")
	_, rcpts := dsnRecipients(t, senderMX.Next(t), mxSender)
	if len(rcpts) != 1 {
		t.Fatalf("DSN reports %d recipients, want 1", len(rcpts))
	}
	wantFields(t, rcpts[0], "Final-Recipient", "rfc822; rcpt@seven.test", "Action", "failed", "Status", "5.6.3",
		"Remote-MTA", "dns; mx.seven.test")
	wantOutcome(t, log.next(t, mxSender), store.StateDelivered, "250 ")
	if cmds := seven.commands(); len(cmds) == 0 || cmds[0] != "EHLO" {
		t.Errorf("commands %v, want EHLO first", cmds)
	}
	for _, verb := range []string{"MAIL", "RCPT", "DATA"} {
		if n := seven.count(verb); n != 0 {
			t.Errorf("server without 8BITMIME saw %d %s commands, want none", n, verb)
		}
	}
	wantQueueEmpty(t, q)
}

// completionRace is the real queue, with a Complete that, once the outcomes
// are committed, has a new message arrive and waits for the dispatcher's
// next Claim before it returns: the interleaving where Ready (or the timer)
// wakes the dispatcher between a delivery's commit and the worker handing
// it back on done.
type completionRace struct {
	*recorder
	newMail func()
	once    sync.Once
	claimed chan []store.Delivery
}

func (q *completionRace) Claim(ctx context.Context, now time.Time, max int, lease time.Duration) ([]store.Delivery, error) {
	ds, err := q.recorder.Claim(ctx, now, max, lease)
	if len(ds) > 0 {
		select {
		case q.claimed <- ds:
		default:
		}
	}
	return ds, err
}

func (q *completionRace) Complete(ctx context.Context, r store.Report) error {
	err := q.recorder.Complete(ctx, r)
	q.once.Do(func() {
		q.newMail()
		select {
		case <-q.claimed:
		case <-time.After(5 * time.Second):
		}
	})
	return err
}

// A recipient due again when its delivery's outcome is committed, and
// claimed before the worker has handed that delivery back, must still be
// delivered; the claim must not strand it under a fresh lease.
func TestMXReclaimBeforeWorkerFinished(t *testing.T) {
	port, lns := testkit.ReservePort(t, "127.0.0.2")
	s := sinkOn(t, lns["127.0.0.2"], nil)
	s.ReplyTo("rcpt@race.test", &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}, nil)
	z := testkit.StartZone(t,
		"race.test. 300 IN MX 10 mx.race.test.",
		"mx.race.test. 300 IN A 127.0.0.2",
	)
	rec := newQueue(t)
	q := &completionRace{recorder: rec, claimed: make(chan []store.Delivery, 10)}
	q.newMail = func() { enqueue(t, rec, mxSender, mxBody, "other@race.test") }
	cfg := mxConfig(t, z, port)
	cfg.RetryFirst = time.Nanosecond // due again as soon as the deferral is committed
	enqueue(t, rec, mxSender, mxBody, "rcpt@race.test")
	start(t, cfg, q)
	log := &outcomeLog{q: rec}

	wantOutcome(t, log.next(t, "rcpt@race.test"), store.StateDeferred, "451 4.3.0 try later")
	wantOutcome(t, log.next(t, "other@race.test"), store.StateDelivered, "250 ")
	// The retry may have come before or after other's delivery.
	for i, o := range log.early {
		if o.Recipient == "rcpt@race.test" {
			log.early = append(log.early[:i], log.early[i+1:]...)
			wantOutcome(t, o, store.StateDelivered, "250 ")
			return
		}
	}
	if o, ok := outcomeWithin(rec, "rcpt@race.test", 3*time.Second); ok {
		wantOutcome(t, o, store.StateDelivered, "250 ")
	} else {
		r := recipients(t, rec)["rcpt@race.test"]
		t.Fatalf("no second attempt within 3s although RetryFirst is 1ns: recipient %+v", r)
	}
}

// outcomeWithin waits up to d for the next outcome for addr, dropping
// others.
func outcomeWithin(q *recorder, addr string, d time.Duration) (store.Outcome, bool) {
	deadline := time.After(d)
	for {
		select {
		case o := <-q.outcomes:
			if o.Recipient == addr {
				return o, true
			}
		case <-deadline:
			return store.Outcome{}, false
		}
	}
}
