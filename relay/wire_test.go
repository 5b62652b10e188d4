package relay

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sesame-mail/sesame/store"
	"github.com/sesame-mail/sesame/testkit"
)

// The transaction on the wire (wire.go): PIPELINING when offered, one
// command at a time when not, the refusals either way, and a pooled
// connection the server closed. Each test sends its messages one after the
// other with one worker, so every message after the first goes over the
// connection the first one opened.

var wireZone = append([]string{
	"wire.test. 300 IN MX 10 mx.wire.test.",
	"mx.wire.test. 300 IN A 127.0.0.2",
}, senderZone...)

// wireBody has lines that need dot-stuffing.
const wireBody = "From: <app@sender.test>\r\nSubject: wire\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nend\r\n"

// refuseSome answers 550 to recipients whose local part starts with
// "refused".
func refuseSome(addr string) (string, bool) {
	if strings.HasPrefix(addr, "refused") {
		return "550 5.1.1 no such user", false
	}
	return "250 2.1.5 OK", false
}

// wireRun starts a one-worker relay to mx (on 127.0.0.2) with the sender's
// MX at 127.0.0.3 for DSNs.
func wireRun(t *testing.T, mx *scriptedMX) (*recorder, *outcomeLog, *testkit.Sink) {
	t.Helper()
	port, lns := testkit.ReservePort(t, "127.0.0.2", "127.0.0.3")
	mx.serve(t, lns["127.0.0.2"])
	senderMX := sinkOn(t, lns["127.0.0.3"], nil)
	z := testkit.StartZone(t, wireZone...)
	q := newQueue(t)
	cfg := mxConfig(t, z, port)
	cfg.Workers = 1
	start(t, cfg, q)
	return q, &outcomeLog{q: q}, senderMX
}

// wantKept waits for the message mx kept and checks its recipients and
// bytes (mx undoes the dot-stuffing).
func wantKept(t *testing.T, mx *scriptedMX, rcpts ...string) {
	t.Helper()
	select {
	case m := <-mx.got:
		if got := strings.Join(m.To, ","); got != strings.Join(rcpts, ",") {
			t.Errorf("server kept a message for %s, want %s", got, strings.Join(rcpts, ","))
		}
		if string(m.Data) != wireBody {
			t.Errorf("server kept %q, want %q", m.Data, wireBody)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("server kept no message for %v", rcpts)
	}
}

// wireScenario sends, in turn: three messages to two recipients each, one
// with a refused recipient among two, and one whose only recipient is
// refused; then one more that must still go over the same connection.
func wireScenario(t *testing.T, q *recorder, log *outcomeLog, mx *scriptedMX, senderMX *testkit.Sink) {
	t.Helper()
	for i := range 3 {
		a, b := fmt.Sprintf("a%d@wire.test", i), fmt.Sprintf("b%d@wire.test", i)
		enqueue(t, q, mxSender, wireBody, a, b)
		wantOutcome(t, log.next(t, a), store.StateDelivered, "250 2.0.0 OK")
		wantOutcome(t, log.next(t, b), store.StateDelivered, "250 2.0.0 OK")
		wantKept(t, mx, a, b)
	}
	enqueue(t, q, mxSender, wireBody, "c@wire.test", "refused1@wire.test")
	wantOutcome(t, log.next(t, "c@wire.test"), store.StateDelivered, "250 2.0.0 OK")
	wantOutcome(t, log.next(t, "refused1@wire.test"), store.StateBounced, "550 5.1.1 no such user")
	wantKept(t, mx, "c@wire.test")
	senderMX.Next(t) // the DSN
	wantOutcome(t, log.next(t, mxSender), store.StateDelivered, "250 ")

	enqueue(t, q, mxSender, wireBody, "refused2@wire.test")
	wantOutcome(t, log.next(t, "refused2@wire.test"), store.StateBounced, "550 5.1.1 no such user")
	senderMX.Next(t)
	wantOutcome(t, log.next(t, mxSender), store.StateDelivered, "250 ")

	enqueue(t, q, mxSender, wireBody, "d@wire.test")
	wantOutcome(t, log.next(t, "d@wire.test"), store.StateDelivered, "250 2.0.0 OK")
	wantKept(t, mx, "d@wire.test")

	if n := mx.accepted.Load(); n != 1 {
		t.Errorf("%d connections, want 1: refusals leave the connection usable", n)
	}
	if n := mx.count("RSET"); n != 5 {
		t.Errorf("%d RSET commands, want 5: one before each transaction on the reused connection", n)
	}
	wantQueueEmpty(t, q)
}

// A server offering PIPELINING that answers a group only when it reaches
// its DATA: a client waiting for each reply before sending the next
// command would get nothing, so every delivery here proves the group went
// in one piece (RSET, MAIL, each RCPT, DATA).
func TestPipelinedTransactions(t *testing.T) {
	mx := &scriptedMX{greeting: "220 scripted.test ESMTP", ext: []string{"PIPELINING", "8BITMIME"},
		holdReplies: true, rcpt: refuseSome}
	q, log, senderMX := wireRun(t, mx)
	wireScenario(t, q, log, mx, senderMX)
	// Pipelined, DATA is sent even when every recipient is then refused;
	// the server's 554 to it closes that transaction.
	if n := mx.count("DATA"); n != 6 {
		t.Errorf("%d DATA commands, want 6", n)
	}
}

// A server without PIPELINING gets one command at a time: it never finds
// a second command waiting behind the one it is answering, and DATA is not
// sent when every recipient was refused.
func TestLockstepWithoutPipelining(t *testing.T) {
	mx := &scriptedMX{greeting: "220 scripted.test ESMTP", ext: []string{"8BITMIME"}, rcpt: refuseSome}
	q, log, senderMX := wireRun(t, mx)
	wireScenario(t, q, log, mx, senderMX)
	if n := mx.violations.Load(); n != 0 {
		t.Errorf("%d commands sent before the reply to the previous one, to a server without PIPELINING", n)
	}
	if n := mx.count("DATA"); n != 5 {
		t.Errorf("%d DATA commands, want 5", n)
	}
}

// RFC 2920 §3.1: a server that answers DATA with 354 although it refused
// every recipient gets an empty message (just the dot), which it refuses;
// the recipient's outcome is its RCPT reply and the connection stays in
// step for the next message.
func TestPipelinedData354WithNoRecipients(t *testing.T) {
	mx := &scriptedMX{greeting: "220 scripted.test ESMTP", ext: []string{"PIPELINING", "8BITMIME"},
		rcpt: refuseSome, data354Anyway: true}
	q, log, senderMX := wireRun(t, mx)
	wireScenario(t, q, log, mx, senderMX)
}

// A server that closes the connection right after each message: the
// pooled connection's RSET finds it closed, and the message goes over a
// new connection in the same attempt, with no deferral recorded.
func TestPooledConnectionClosedByServer(t *testing.T) {
	for _, ext := range [][]string{{"PIPELINING", "8BITMIME"}, {"8BITMIME"}} {
		t.Run(strings.Join(ext, "+"), func(t *testing.T) {
			mx := &scriptedMX{greeting: "220 scripted.test ESMTP", ext: ext, hangUpAfterData: true}
			q, log, _ := wireRun(t, mx)
			for i := range 3 {
				a := fmt.Sprintf("a%d@wire.test", i)
				enqueue(t, q, mxSender, wireBody, a)
				wantOutcome(t, log.next(t, a), store.StateDelivered, "250 2.0.0 OK")
				wantKept(t, mx, a)
			}
			if n := mx.accepted.Load(); n != 3 {
				t.Errorf("%d connections, want 3", n)
			}
			wantQueueEmpty(t, q)
		})
	}
}
