// Package smtpio holds the byte-level pieces of SMTP that Sesame writes by
// hand around go-smtp's client, in the relay (relay/wire.go) and in the load
// tool (cmd/sesame-bench): the text of DATA with its dot-stuffing, and a
// connection whose greeting was already read, for go-smtp after a STARTTLS
// done outside it.
package smtpio

import (
	"bufio"
	"bytes"
	"net"
)

// WriteData writes msg, whose lines end with CRLF, as the text of DATA: a
// line that starts with a dot gets another (RFC 5321 §4.5.2), a missing
// final CRLF is added, and the line with the lone dot ends it. The caller
// flushes w.
func WriteData(w *bufio.Writer, msg []byte) {
	rest := msg
	if len(rest) > 0 && rest[0] == '.' {
		w.WriteByte('.')
	}
	for {
		i := bytes.Index(rest, []byte("\n."))
		if i < 0 {
			break
		}
		w.Write(rest[:i+1])
		w.WriteByte('.')
		rest = rest[i+1:]
	}
	w.Write(rest)
	if len(msg) > 0 && !bytes.HasSuffix(msg, []byte("\r\n")) {
		w.WriteString("\r\n")
	}
	w.WriteString(".\r\n")
}

// GreetedConn returns Pending before the bytes of Conn. go-smtp's client
// reads a greeting before its first command, and only its own functions can
// start TLS; after a STARTTLS done by hand, a GreetedConn over the TLS
// connection with a made-up 220 lets it carry on with EHLO.
type GreetedConn struct {
	net.Conn
	Pending []byte
}

func (c *GreetedConn) Read(p []byte) (int, error) {
	if len(c.Pending) > 0 {
		n := copy(p, c.Pending)
		c.Pending = c.Pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
