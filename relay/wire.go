package relay

import (
	"bufio"
	"errors"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sesame-mail/sesame/smtpio"
)

// wire carries a session's mail transactions: the commands after EHLO, with
// PIPELINING (RFC 2920) when the server offers it. go-smtp's client, which
// does the greeting, EHLO and STARTTLS (session.go), writes one command and
// waits for its reply before the next, so a message on a reused connection
// took five round trips (RSET, MAIL, RCPT, DATA, the data). Pipelined, RSET,
// MAIL, every RCPT and DATA go in one write, the data in a second: two round
// trips, and a fifth of the writes and wake-ups on both sides.
//
// The wire owns the connection from the end of EHLO: go-smtp's reader holds
// nothing then, as a server says nothing unasked.
type wire struct {
	conn    net.Conn
	r       *textproto.Reader
	timeout time.Duration // for each write and each reply

	pipelining bool     // the server offers PIPELINING
	queued     []string // commands of the current exchange
	sent       int      // of queued, written
	read       int      // of queued, replies read
}

func newWire(conn net.Conn, timeout time.Duration, pipelining bool) *wire {
	w := &wire{conn: conn, timeout: timeout, pipelining: pipelining}
	w.r = textproto.NewReader(bufio.NewReaderSize(conn, 4096))
	return w
}

// writers are the write buffers of all wires, lent for one burst of
// writes: a connection waiting for a reply, or idle in the pool, holds
// none. 16 KiB: a typical message goes out in one write with its final
// dot.
var writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 16<<10) }}

// write runs f with a write buffer for the connection, then flushes it and
// gives the buffer back.
func (w *wire) write(f func(*bufio.Writer)) error {
	bw := writers.Get().(*bufio.Writer)
	bw.Reset(deadlineWriter{w})
	f(bw)
	err := bw.Flush()
	bw.Reset(nil)
	writers.Put(bw)
	return err
}

// deadlineWriter renews the write deadline before each write, so a server
// that stops reading fails the write after timeout, while a large message
// to a slow server gets timeout per write rather than for the whole.
type deadlineWriter struct{ w *wire }

func (d deadlineWriter) Write(p []byte) (int, error) {
	d.w.conn.SetWriteDeadline(time.Now().Add(d.w.timeout))
	return d.w.conn.Write(p)
}

// errLineBreak refuses a command that would smuggle in another.
var errLineBreak = errors.New("relay: a command must not contain CR or LF")

// begin starts an exchange of commands whose replies are read in order by
// reply. With pipelining they are all written before the first reply is
// read; without, each is written just before its own reply is read, so a
// caller that stops reading early never sends the rest.
func (w *wire) begin(cmds ...string) error {
	for _, c := range cmds {
		if strings.ContainsAny(c, "\r\n") {
			return errLineBreak
		}
	}
	w.queued, w.sent, w.read = cmds, 0, 0
	return nil
}

// reply writes what must be written before the next command's reply and
// reads that reply. err is an I/O or protocol error (the connection is
// lost); otherwise rep is the server's reply, success or not.
func (w *wire) reply() (rep *smtp.SMTPError, err error) {
	if w.read == w.sent {
		n := len(w.queued)
		if !w.pipelining {
			n = w.sent + 1
		}
		err := w.write(func(bw *bufio.Writer) {
			for _, c := range w.queued[w.sent:n] {
				bw.WriteString(c)
				bw.WriteString("\r\n")
			}
		})
		w.sent = n
		if err != nil {
			return nil, err
		}
	}
	w.read++
	return w.readReply()
}

// finish reads the replies to commands already written but not yet
// answered, so the connection can carry the next transaction. A DATA that
// was answered 354 anyway (when no recipient was accepted, RFC 2920 §3.1)
// gets an empty message, which the server refuses. It reports whether the
// connection is still usable.
func (w *wire) finish() bool {
	for w.read < w.sent {
		cmd := w.queued[w.read]
		w.read++
		rep, err := w.readReply()
		if err != nil || rep.Code == 421 {
			return false
		}
		if cmd == "DATA" && rep.Code == 354 {
			if err := w.data(nil); err != nil {
				return false
			}
			if rep, err := w.readReply(); err != nil || rep.Code == 421 {
				return false
			}
		}
	}
	return true
}

// readReply reads one reply, single- or multi-line.
func (w *wire) readReply() (*smtp.SMTPError, error) {
	w.conn.SetReadDeadline(time.Now().Add(w.timeout))
	code, text, err := w.r.ReadResponse(0)
	if err != nil {
		return nil, err
	}
	return replyError(code, text), nil
}

// data writes a message after a 354 and the line that ends it.
func (w *wire) data(msg []byte) error {
	return w.write(func(bw *bufio.Writer) { smtpio.WriteData(bw, msg) })
}

// quit sends QUIT, waits up to timeout for the reply, and closes.
func (w *wire) quit(timeout time.Duration) {
	w.timeout = min(w.timeout, timeout)
	if w.begin("QUIT") == nil {
		w.reply()
	}
	w.conn.Close()
}
