package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// sentHeader carries the send time (Unix nanoseconds) from send to sink, so
// the sink can measure end to end without trusting the Date header's
// one-second resolution.
const sentHeader = "X-Bench-Sent"

// Body lines stay within the 76-character limit of RFC 2045 (CRLF not
// counted) so no relay needs to re-wrap them; full lines are a little shorter.
const (
	maxBodyLine = 76
	bodyLineLen = 72
)

// textPool is the printable ASCII the bodies are cut from. It holds no '.',
// so no body line starts with one and dot-stuffing never changes the size on
// the wire.
var textPool = func() string {
	words := strings.Fields(`lorem ipsum dolor sit amet consectetur adipiscing elit sed do
		eiusmod tempor incididunt ut labore et dolore magna aliqua ut enim ad minim
		veniam quis nostrud exercitation ullamco laboris nisi aliquip ex ea commodo
		consequat duis aute irure in reprehenderit voluptate velit esse cillum
		fugiat nulla pariatur excepteur sint occaecat cupidatat non proident sunt
		culpa qui officia deserunt mollit anim id est laborum, order 12345 invoice
		receipt shipping; account: password-reset (link) "welcome" newsletter`)
	var b strings.Builder
	for i := 0; b.Len() < 4096; i++ {
		// A stride coprime with len(words) varies the text without randomness.
		b.WriteString(words[(i*7)%len(words)])
		b.WriteByte(' ')
	}
	return b.String()
}()

// messageBuilder renders the benchmark messages of one run. It is not safe
// for concurrent use; each client owns one.
type messageBuilder struct {
	runID      string
	from       string
	fromDomain string
	toHeader   string
	size       int
	buf        bytes.Buffer
}

func newMessageBuilder(runID, from string, rcpts []string, size int) *messageBuilder {
	_, domain, _ := strings.Cut(from, "@")
	b := &messageBuilder{
		runID:      runID,
		from:       from,
		fromDomain: domain,
		size:       size,
	}
	b.setRecipients(rcpts)
	return b
}

// setRecipients puts rcpts in the To field of the next messages, one
// address per folded line, which keeps the field under 78 characters
// whatever --recipients is.
func (b *messageBuilder) setRecipients(rcpts []string) {
	b.toHeader = strings.Join(rcpts, ",\r\n ")
}

// build renders message n of client conn, stamped with now. The result has
// CRLF line ends only, is exactly b.size bytes long unless the headers alone
// are longer, and stays valid until the next call.
func (b *messageBuilder) build(conn, n int, now time.Time) []byte {
	w := &b.buf
	w.Reset()
	fmt.Fprintf(w, "From: Sesame Bench <%s>\r\n", b.from)
	fmt.Fprintf(w, "To: %s\r\n", b.toHeader)
	fmt.Fprintf(w, "Subject: sesame-bench %s %d-%d\r\n", b.runID, conn, n)
	fmt.Fprintf(w, "Date: %s\r\n", now.Format(time.RFC1123Z))
	fmt.Fprintf(w, "Message-ID: <%s.%d.%d@%s>\r\n", b.runID, conn, n, b.fromDomain)
	w.WriteString("MIME-Version: 1.0\r\n")
	w.WriteString("Content-Type: text/plain; charset=us-ascii\r\n")
	w.WriteString("Content-Transfer-Encoding: 7bit\r\n")
	fmt.Fprintf(w, "%s: %d\r\n", sentHeader, now.UnixNano())
	w.WriteString("\r\n")

	// The body is whole lines of 2..78 bytes with CRLF. Full lines go out
	// while more than one line's worth remains; the last line takes the rest,
	// so the total is exact. A single leftover byte cannot be a line and is
	// dropped.
	rest := b.size - w.Len()
	off := (conn*131 + n*17) % (len(textPool) - maxBodyLine)
	for rest > bodyLineLen+2+4 {
		w.WriteString(textPool[off : off+bodyLineLen])
		w.WriteString("\r\n")
		rest -= bodyLineLen + 2
		off = (off + 53) % (len(textPool) - maxBodyLine)
	}
	if rest >= 2 {
		w.WriteString(textPool[off : off+rest-2])
		w.WriteString("\r\n")
	}
	return w.Bytes()
}

// readSentHeader reads a message's header section from r and returns the
// value of its X-Bench-Sent header. It tolerates bare LF line ends and
// over-long lines, and stops at the blank line that ends the headers, leaving
// the body unread.
func readSentHeader(r *bufio.Reader) (sent time.Time, ok bool, err error) {
	prefix := strings.ToLower(sentHeader) + ":"
	midLine := false // the last read ended inside an over-long line
	for {
		line, err := r.ReadSlice('\n')
		switch {
		case err == bufio.ErrBufferFull:
			midLine = true
			continue
		case err == io.EOF && len(line) == 0:
			return sent, ok, nil
		case err != nil && err != io.EOF:
			return sent, ok, err
		}
		wasMid := midLine
		midLine = false
		if wasMid {
			continue
		}
		trimmed := bytes.TrimRight(line, "\r\n")
		if len(trimmed) == 0 {
			return sent, ok, nil
		}
		if !ok && len(trimmed) > len(prefix) && strings.EqualFold(string(trimmed[:len(prefix)]), prefix) {
			v := strings.TrimSpace(string(trimmed[len(prefix):]))
			if nanos, perr := strconv.ParseInt(v, 10, 64); perr == nil {
				sent, ok = time.Unix(0, nanos), true
			}
		}
		if err == io.EOF {
			return sent, ok, nil
		}
	}
}
