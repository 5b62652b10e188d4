package relay

// Remote faults, one test each, over real loopback sockets: what the relay
// records (state, reply), what the next hop received, and the retry. The
// faults already covered elsewhere are not repeated here: 4xx to RCPT and to
// the end of the data, 421 and hang-up after RCPT (TestMXTemporaryReplies);
// 4xx and 5xx greetings with a next MX (TestMXPriorities); a server without
// 8BITMIME (TestMXNo8BITMIME); a working STARTTLS (TestStartTLS).

import (
	"bufio"
	"context"
	"crypto/tls"
	"database/sql"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sesame-mail/sesame/store"
	"github.com/sesame-mail/sesame/testkit"
)

// faultMX is a raw SMTP server whose every reply can be replaced, per
// connection, by a fault: a refusal at any step, a connection dropped at
// any point, a broken TLS handshake. Set its fields, then serve.
type faultMX struct {
	ext []string // EHLO keywords after the first line
	// fault is asked once at each step of the conn-th connection (from
	// 1): "greeting", "EHLO" (or HELO), "STARTTLS", "MAIL", "RCPT", "DATA"
	// (the command) and "." (the end of the data). nil, or the zero fault,
	// gives the normal reply.
	fault func(conn int, step string) fault

	conns atomic.Int32 // connections accepted
	got   chan kept    // messages the server kept

	mu   sync.Mutex
	cmds []faultCmd // every command line received, in order
}

// fault replaces the normal reply to one step.
type fault struct {
	reply string // sent instead of the normal reply; "" keeps it
	// handshake, after the reply, plays the server's side of a TLS
	// handshake on the raw connection (and the connection is then closed).
	handshake func(net.Conn)
	hangUp    bool // close the connection after the reply
	// lost keeps the message at "." but closes the connection before any
	// reply: the reply is lost on the way.
	lost bool
}

type faultCmd struct {
	conn int
	line string
}

// kept is a message the server took responsibility for: it replied 2xx to
// its end of data, or was about to when the connection was lost.
type kept struct {
	conn  int
	from  string
	rcpts []string
	data  string
}

// serve starts m on ln until the test ends.
func (m *faultMX) serve(t *testing.T, ln net.Listener) *faultMX {
	t.Helper()
	m.got = make(chan kept, 100)
	serveConns(t, ln, func(c net.Conn, n int) {
		m.conns.Add(1) // before any reply: outcomes come after the count
		m.converse(c, n)
	})
	return m
}

// verbs returns the command verbs received on connection n ("EHLO", …).
func (m *faultMX) verbs(n int) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, c := range m.cmds {
		if c.conn == n {
			verb, _, _ := strings.Cut(c.line, " ")
			verb, _, _ = strings.Cut(verb, ":")
			out = append(out, strings.ToUpper(verb))
		}
	}
	return out
}

// count is how many times verb was received, on any connection.
func (m *faultMX) count(verb string) int {
	n := 0
	for c := range int(m.conns.Load()) {
		for _, v := range m.verbs(c + 1) {
			if v == verb {
				n++
			}
		}
	}
	return n
}

// next waits for the next message the server kept.
func (m *faultMX) next(t *testing.T) kept {
	t.Helper()
	select {
	case k := <-m.got:
		return k
	case <-time.After(10 * time.Second):
		t.Fatal("the server kept no message within 10s")
		return kept{}
	}
}

func (m *faultMX) wantNothingMore(t *testing.T) {
	t.Helper()
	select {
	case k := <-m.got:
		t.Errorf("the server kept an unexpected message on connection %d for %v", k.conn, k.rcpts)
	default:
	}
}

func (m *faultMX) converse(c net.Conn, n int) {
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	// faultAt asks for the fault at step, once per step reached.
	faultAt := func(step string) fault {
		if m.fault == nil {
			return fault{}
		}
		return m.fault(n, step)
	}
	// answer sends the normal reply, or f's instead, and says whether the
	// conversation goes on.
	answer := func(f fault, normal ...string) bool {
		if f.lost {
			return false
		}
		text := strings.Join(normal, "\r\n")
		if f.reply != "" {
			text = f.reply
		}
		if _, err := io.WriteString(c, text+"\r\n"); err != nil {
			return false
		}
		if f.handshake != nil {
			f.handshake(c)
			return false
		}
		return !f.hangUp
	}
	if !answer(faultAt("greeting"), "220 fault.test ESMTP") {
		return
	}
	msg := kept{conn: n}
	between := func(s string) string {
		_, s, _ = strings.Cut(s, "<")
		s, _, _ = strings.Cut(s, ">")
		return s
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		m.mu.Lock()
		m.cmds = append(m.cmds, faultCmd{n, line})
		m.mu.Unlock()
		verb, _, _ := strings.Cut(line, " ")
		verb, _, _ = strings.Cut(verb, ":")
		ok := true
		switch verb = strings.ToUpper(verb); verb {
		case "EHLO":
			lines := append([]string{"fault.test"}, m.ext...)
			for i := range lines {
				sep := "-"
				if i == len(lines)-1 {
					sep = " "
				}
				lines[i] = "250" + sep + lines[i]
			}
			ok = answer(faultAt("EHLO"), lines...)
		case "HELO":
			ok = answer(faultAt("EHLO"), "250 fault.test")
		case "STARTTLS":
			ok = answer(faultAt("STARTTLS"), "454 4.7.0 TLS not available") // this server has no certificate
		case "MAIL":
			msg = kept{conn: n, from: between(line)}
			ok = answer(faultAt("MAIL"), "250 2.1.0 OK")
		case "RCPT":
			f := faultAt("RCPT")
			if f.reply == "" || strings.HasPrefix(f.reply, "2") {
				msg.rcpts = append(msg.rcpts, between(line))
			}
			ok = answer(f, "250 2.1.5 OK")
		case "DATA":
			f := faultAt("DATA")
			if ok = answer(f, "354 3.0.0 go ahead"); !ok || (f.reply != "" && !strings.HasPrefix(f.reply, "3")) {
				break // refused: no data follows
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
			msg.data = data.String()
			f = faultAt(".")
			if f.lost || f.reply == "" || strings.HasPrefix(f.reply, "2") {
				m.got <- msg
			}
			ok = answer(f, "250 2.0.0 OK queued")
			msg = kept{conn: n}
		case "RSET":
			msg = kept{conn: n}
			ok = answer(fault{}, "250 2.0.0 OK")
		case "NOOP":
			ok = answer(fault{}, "250 2.0.0 OK")
		case "QUIT":
			answer(fault{}, "221 2.0.0 bye")
			return
		default:
			ok = answer(fault{}, "502 5.5.2 not implemented")
		}
		if !ok {
			return
		}
	}
}

// faultZone makes 127.0.0.2 the one MX of fault.test, and 127.0.0.3 the
// one of sender.test (for DSNs).
var faultZone = append([]string{
	"fault.test. 300 IN MX 10 mx.fault.test.",
	"mx.fault.test. 300 IN A 127.0.0.2",
}, senderZone...)

// serveFault serves mx as the MX of fault.test and a sink as the sender's
// MX, and returns an MX configuration whose log also goes to the returned
// buffer.
func serveFault(t *testing.T, mx *faultMX) (Config, *testkit.Buffer, *testkit.Sink) {
	t.Helper()
	port, lns := testkit.ReservePort(t, "127.0.0.2", "127.0.0.3")
	mx.serve(t, lns["127.0.0.2"])
	senderMX := sinkOn(t, lns["127.0.0.3"], nil)
	z := testkit.StartZone(t, faultZone...)
	cfg := mxConfig(t, z, port)
	logs := &testkit.Buffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(t.Output(), logs), &slog.HandlerOptions{Level: slog.LevelDebug}))
	return cfg, logs, senderMX
}

// logLine returns the first line of logs that contains every one of parts,
// or "".
func logLine(logs *testkit.Buffer, parts ...string) string {
next:
	for _, line := range strings.Split(logs.String(), "\n") {
		for _, p := range parts {
			if !strings.Contains(line, p) {
				continue next
			}
		}
		return line
	}
	return ""
}

// waitLogLine is logLine, waiting up to 5s for the line: the mail log line
// of an attempt is written after its outcome is recorded.
func waitLogLine(logs *testkit.Buffer, parts ...string) string {
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if line := logLine(logs, parts...); line != "" || time.Now().After(deadline) {
			return line
		}
	}
}

func wantVerbs(t *testing.T, mx *faultMX, conn int, want ...string) {
	t.Helper()
	if got := mx.verbs(conn); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("connection %d got %v, want %v", conn, got, want)
	}
}

// The connection drops right after the final "." is sent, before the
// server's reply: the relay cannot know whether the server kept the
// message, and must assume not (RFC 5321 §6.1: the receiver takes
// responsibility by its 250): deferred, retried on a new connection,
// delivered. The receiver then has it twice: the duplicate RFC 1047
// describes, which Postfix accepts rather than a loss ("sending end of data
// -- message may be sent more than once").
func TestFaultLostReplyAfterDot(t *testing.T) {
	mx := &faultMX{ext: []string{"8BITMIME"}, fault: func(conn int, step string) fault {
		if conn == 1 && step == "." {
			return fault{lost: true}
		}
		return fault{}
	}}
	cfg, _, _ := serveFault(t, mx)
	q := newQueue(t)
	enqueue(t, q, mxSender, mxBody, "rcpt@fault.test")
	start(t, cfg, q)

	first := q.next(t)
	wantOutcome(t, first, store.StateDeferred, "end of data: ")
	if first.RemoteMTA != "mx.fault.test" {
		t.Errorf("deferral's remote MTA %q, want mx.fault.test", first.RemoteMTA)
	}
	if wait := time.Until(first.NextAttempt); first.NextAttempt.IsZero() || wait > cfg.RetryFirst {
		t.Errorf("next attempt %v (in %v), want within RetryFirst %v", first.NextAttempt, wait, cfg.RetryFirst)
	}
	wantOutcome(t, q.next(t), store.StateDelivered, "250 2.0.0 OK queued")

	for conn := 1; conn <= 2; conn++ {
		k := mx.next(t)
		if k.conn != conn || k.from != mxSender || strings.Join(k.rcpts, ",") != "rcpt@fault.test" || k.data != mxBody {
			t.Errorf("copy %d: connection %d, %q → %v, %q", conn, k.conn, k.from, k.rcpts, k.data)
		}
	}
	mx.wantNothingMore(t)
	// The connection whose reply was lost is not used again.
	if n := mx.conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
	wantVerbs(t, mx, 2, "EHLO", "MAIL", "RCPT", "DATA")
	wantNoNotice(t, q)
	wantQueueEmpty(t, q)
}

// The server offers STARTTLS and accepts the command, but the handshake
// fails: garbage where the ServerHello belongs, a TLS alert (a server with
// no certificate), or the connection closed. Opportunistic TLS (RFC 7435
// §3; Postfix smtp_tls_security_level=may, "try delivery to the same
// server over a plaintext connection") must not make mail undeliverable:
// the relay connects again at once, to the same server, leaves STARTTLS
// out and delivers in the same attempt, and says so in the log.
func TestFaultStartTLSHandshakeFails(t *testing.T) {
	for _, c := range []struct {
		name      string
		handshake func(net.Conn)
		logged    string // in the error the log shows
	}{
		{"garbage", func(c net.Conn) {
			c.Read(make([]byte, 512)) // the ClientHello, or its start
			io.WriteString(c, "this is not a TLS record\r\n")
		}, "first record does not look like a TLS handshake"},
		{"alert", func(c net.Conn) {
			tls.Server(c, &tls.Config{}).Handshake() // no certificate: fails and sends an alert
		}, "TLS handshake: remote error: tls: "},
		{"closed", func(net.Conn) {}, "TLS handshake: EOF"},
	} {
		t.Run(c.name, func(t *testing.T) {
			mx := &faultMX{ext: []string{"8BITMIME", "STARTTLS"}, fault: func(conn int, step string) fault {
				if conn == 1 && step == "STARTTLS" {
					return fault{reply: "220 2.0.0 Ready to start TLS", handshake: c.handshake}
				}
				return fault{}
			}}
			cfg, logs, _ := serveFault(t, mx)
			q := newQueue(t)
			enqueue(t, q, mxSender, mxBody, "rcpt@fault.test")
			start(t, cfg, q)

			wantOutcome(t, q.next(t), store.StateDelivered, "250 2.0.0 OK queued")
			k := mx.next(t)
			if k.conn != 2 || strings.Join(k.rcpts, ",") != "rcpt@fault.test" || k.data != mxBody {
				t.Errorf("server kept %v %q on connection %d, want the message on connection 2", k.rcpts, k.data, k.conn)
			}
			mx.wantNothingMore(t)
			wantVerbs(t, mx, 1, "EHLO", "STARTTLS")
			wantVerbs(t, mx, 2, "EHLO", "MAIL", "RCPT", "DATA")
			if waitLogLine(logs, "level=WARN", "STARTTLS failed; retrying without TLS", "relay=mx.fault.test", c.logged) == "" {
				t.Errorf("no Warn log line says the handshake failed (%s) and the relay went on without TLS", c.logged)
			}
			if waitLogLine(logs, "relay: delivery", "state=delivered", "attempt=1", "tls=none") == "" {
				t.Error("the mail log does not show the delivery in plain text (tls=none) at the first attempt")
			}
			wantNoNotice(t, q)
			wantQueueEmpty(t, q)
		})
	}
}

// STARTTLS offered, then refused (454, or 5xx): as Postfix does at
// security level "may", the relay carries on in plain text on the same
// connection and delivers, rather than deferring the mail until it expires
// (RFC 3207 §4 leaves it to local policy; RFC 7435).
func TestFaultStartTLSRefused(t *testing.T) {
	for _, reply := range []string{
		"454 4.7.0 TLS not available due to temporary reason",
		"501 5.5.4 Syntax error (no parameters allowed)",
	} {
		t.Run(reply[:3], func(t *testing.T) {
			mx := &faultMX{ext: []string{"8BITMIME", "STARTTLS"}, fault: func(_ int, step string) fault {
				if step == "STARTTLS" {
					return fault{reply: reply}
				}
				return fault{}
			}}
			cfg, logs, _ := serveFault(t, mx)
			q := newQueue(t)
			enqueue(t, q, mxSender, mxBody, "rcpt@fault.test")
			start(t, cfg, q)

			wantOutcome(t, q.next(t), store.StateDelivered, "250 ")
			wantVerbs(t, mx, 1, "EHLO", "STARTTLS", "MAIL", "RCPT", "DATA")
			if waitLogLine(logs, "STARTTLS refused; continuing without TLS", reply[:3]) == "" {
				t.Error("no log line names the STARTTLS refusal")
			}
			if logLine(logs, "retrying without TLS") != "" {
				t.Error("a refusal was handled as a failed handshake")
			}
			wantNoNotice(t, q)
		})
	}
}

// A message for a UTF-8 address and a next hop without SMTPUTF8: bounced
// with 5.6.7, "non-ASCII addresses not permitted" (RFC 6531: such mail must
// not go to a server without the extension), nothing sent after EHLO, and
// the DSN names the recipient in utf-8 form (RFC 6533).
func TestFaultNoSMTPUTF8(t *testing.T) {
	mx := &faultMX{ext: []string{"8BITMIME", "PIPELINING"}}
	cfg, _, senderMX := serveFault(t, mx)
	q := newQueue(t)
	enqueue(t, q, mxSender, mxBody, "jörg@fault.test")
	start(t, cfg, q)
	log := &outcomeLog{q: q}

	wantOutcome(t, log.next(t, "jörg@fault.test"), store.StateBounced,
		"5.6.7 mx.fault.test does not support SMTPUTF8, which the message's non-ASCII addresses need")
	_, rcpts := dsnRecipients(t, senderMX.Next(t), mxSender)
	if len(rcpts) != 1 {
		t.Fatalf("DSN reports %d recipients, want 1", len(rcpts))
	}
	wantFields(t, rcpts[0], "Final-Recipient", `utf-8; j\x{F6}rg@fault.test`, "Action", "failed", "Status", "5.6.7",
		"Remote-MTA", "dns; mx.fault.test")
	wantOutcome(t, log.next(t, mxSender), store.StateDelivered, "250 ")
	wantVerbs(t, mx, 1, "EHLO")
	mx.wantNothingMore(t)
	wantQueueEmpty(t, q)
}

// A temporary refusal at each step TestMXTemporaryReplies leaves out, on
// the only MX: deferred with the server's reply, retried, delivered once.
// A refusal before MAIL makes the server count as unavailable (its
// connection is closed, the next attempt opens another); one inside the
// transaction leaves the connection usable (RSET, then the next attempt).
// A 5xx greeting is deferred too, as Postfix does by default
// (smtp_skip_5xx_greeting): no recipient was refused.
func TestFaultTemporaryAtEachStep(t *testing.T) {
	for _, c := range []struct {
		name  string
		step  string
		f     fault
		conns int32 // connections in all
	}{
		{"421 greeting", "greeting", fault{reply: "421 4.3.2 Service not available", hangUp: true}, 2},
		{"554 greeting", "greeting", fault{reply: "554 5.7.1 No SMTP service here"}, 2},
		{"421 EHLO", "EHLO", fault{reply: "421 4.7.0 Too many connections", hangUp: true}, 2},
		// Postfix answers a non-421 EHLO refusal with HELO; go-smtp only
		// falls back on 500 and 502, so this is a failed session.
		{"451 EHLO", "EHLO", fault{reply: "451 4.3.0 Temporary local problem"}, 2},
		{"451 MAIL", "MAIL", fault{reply: "451 4.3.0 Temporary local problem"}, 1},
		{"452 DATA command", "DATA", fault{reply: "452 4.3.1 Insufficient system storage"}, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			var fired atomic.Bool
			mx := &faultMX{ext: []string{"8BITMIME"}, fault: func(_ int, step string) fault {
				if step == c.step && fired.CompareAndSwap(false, true) {
					return c.f // the first time only
				}
				return fault{}
			}}
			cfg, _, _ := serveFault(t, mx)
			q := newQueue(t)
			enqueue(t, q, mxSender, mxBody, "rcpt@fault.test")
			start(t, cfg, q)

			first := q.next(t)
			wantOutcome(t, first, store.StateDeferred, c.f.reply)
			if first.NextAttempt.IsZero() {
				t.Error("deferred without a next attempt")
			}
			wantOutcome(t, q.next(t), store.StateDelivered, "250 2.0.0 OK queued")
			if k := mx.next(t); strings.Join(k.rcpts, ",") != "rcpt@fault.test" || k.data != mxBody {
				t.Errorf("server kept %v %q", k.rcpts, k.data)
			}
			mx.wantNothingMore(t)
			if n := mx.conns.Load(); n != c.conns {
				t.Errorf("%d connections, want %d", n, c.conns)
			}
			wantRSET := 0
			if c.conns == 1 {
				wantRSET = 1 // the connection is reused for the retry
			}
			if n := mx.count("RSET"); n != wantRSET {
				t.Errorf("%d RSET commands, want %d", n, wantRSET)
			}
			wantNoNotice(t, q)
			wantQueueEmpty(t, q)
		})
	}
}

// A queued message whose stored bytes are unusable (here emptied or cut
// short behind the store's back) is quarantined: not sent, not bounced,
// not retried, still listed in the queue and counted in its depth, logged
// at Error with what to do; the relay goes on with the other mail, and
// `sesame queue retry` (RetryNow) makes the recipient due again.
func TestFaultCorruptMessageQuarantined(t *testing.T) {
	for _, c := range []struct{ name, body string }{
		{"emptied", `X''`},
		{"truncated", `substr(body, 1, 20)`},
	} {
		t.Run(c.name, func(t *testing.T) {
			mx := &faultMX{ext: []string{"8BITMIME"}}
			cfg, logs, _ := serveFault(t, mx)
			path := filepath.Join(t.TempDir(), "sesame.db")
			st, err := store.OpenSQLite(path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			q := &recorder{SQLite: st, outcomes: make(chan store.Outcome, 1000), notices: make(chan *store.Message, 100)}
			bad := enqueue(t, q, mxSender, mxBody, "bad@fault.test")
			enqueue(t, q, mxSender, mxBody, "good@fault.test")
			// Another connection, as an operator's sqlite3 or a disk fault
			// would change it.
			db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := db.Exec(`UPDATE messages SET body = `+c.body+` WHERE id = ?`, bad); err != nil {
				t.Fatal(err)
			}
			start(t, cfg, q)
			log := &outcomeLog{q: q}

			o := log.next(t, "bad@fault.test")
			wantOutcome(t, o, store.StateQuarantined, "quarantined: store: message "+bad+": stored message is corrupt")
			if !strings.Contains(o.Reply, "sesame queue show "+bad) {
				t.Errorf("reply %q does not say how to inspect the message", o.Reply)
			}
			wantOutcome(t, log.next(t, "good@fault.test"), store.StateDelivered, "250 ")
			if k := mx.next(t); strings.Join(k.rcpts, ",") != "good@fault.test" {
				t.Errorf("server kept mail for %v, want good@fault.test only", k.rcpts)
			}
			if waitLogLine(logs, "level=ERROR", "quarantined, not retried", "queue_id="+bad,
				"sesame queue show "+bad, "sesame queue delete "+bad+" --bounce") == "" {
				t.Error("no Error log line names the queue id and the commands to run")
			}

			// Not retried: RetryMax is 200ms, so a deferral would have come
			// back twice by now.
			if o, ok := outcomeWithin(q, "bad@fault.test", time.Second); ok {
				t.Errorf("quarantined recipient attempted again: %+v", o)
			}
			ctx := context.Background()
			if _, ok, err := q.NextDue(ctx); ok || err != nil {
				t.Errorf("NextDue: ok=%v err=%v, want nothing due", ok, err)
			}
			if r := recipients(t, q)["bad@fault.test"]; r.State != store.StateQuarantined || r.LastReply != o.Reply {
				t.Errorf("queue lists %+v, want it quarantined with its reason", r)
			}
			if depth, _, err := q.QueueDepth(ctx); err != nil || depth[store.StateQuarantined] != 1 || len(depth) != 1 {
				t.Errorf("QueueDepth = %v, %v; want quarantined: 1", depth, err)
			}
			wantNoNotice(t, q)
			mx.wantNothingMore(t)

			// The operator repairs the bytes and retries.
			if _, err := db.Exec(`UPDATE messages SET body = ? WHERE id = ?`, []byte(mxBody), bad); err != nil {
				t.Fatal(err)
			}
			if n, err := q.RetryNow(ctx, bad, time.Now()); err != nil || n != 1 {
				t.Fatalf("RetryNow = %d, %v; want 1", n, err)
			}
			wantOutcome(t, log.next(t, "bad@fault.test"), store.StateDelivered, "250 ")
			if k := mx.next(t); strings.Join(k.rcpts, ",") != "bad@fault.test" || k.data != mxBody {
				t.Errorf("server kept %v %q", k.rcpts, k.data)
			}
			wantQueueEmpty(t, q)
		})
	}
}

// panicOnRead is the real queue with a MessageData that panics once, as a
// driver might on a damaged row.
type panicOnRead struct {
	*recorder
	panicked atomic.Bool
}

func (q *panicOnRead) MessageData(ctx context.Context, id string) ([]byte, error) {
	if q.panicked.CompareAndSwap(false, true) {
		panic("reading a damaged row")
	}
	return q.recorder.MessageData(ctx, id)
}

// A panic while the message is being read is recovered in worker.deliver:
// the recipient is deferred with an internal error, the relay keeps
// running, and the retry delivers.
func TestFaultPanicReadingMessage(t *testing.T) {
	mx := &faultMX{ext: []string{"8BITMIME"}}
	cfg, logs, _ := serveFault(t, mx)
	q := newQueue(t)
	id := enqueue(t, q, mxSender, mxBody, "rcpt@fault.test")
	start(t, cfg, &panicOnRead{recorder: q})

	wantOutcome(t, q.next(t), store.StateDeferred, replyInternal)
	wantOutcome(t, q.next(t), store.StateDelivered, "250 ")
	if k := mx.next(t); k.data != mxBody {
		t.Errorf("server kept %q", k.data)
	}
	if waitLogLine(logs, "relay: delivery panicked", "queue_id="+id, "reading a damaged row") == "" {
		t.Error("the panic is not logged with the queue id")
	}
	if n := mx.conns.Load(); n != 1 {
		t.Errorf("%d connections, want 1: nothing was sent before the panic", n)
	}
	wantQueueEmpty(t, q)
}
