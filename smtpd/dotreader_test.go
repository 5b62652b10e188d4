package smtpd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/emersion/go-smtp"
)

// TestEndOfData sends every end-of-data look-alike as a client wrote it and
// checks the one reply it gets, what was queued, and that the session is
// still in step afterwards. A message whose bytes would be changed on the
// way in (go-smtp drops the ".\r" of "\r\n.\rX") or that holds a bare CR or
// LF anywhere, dot lines included, is refused with nothing queued: a
// downstream server reading ".\r" differently could find a second message
// in it. "\r\r\n.\r\n" ends the data (go-smtp's own reader misses that end
// and would leave the client waiting for the read timeout).
func TestEndOfData(t *testing.T) {
	// The server waits a minute for a client that has stopped; the client
	// waits 10 s for a reply. A reply that only the read timeout would
	// produce shows as a failed read here, not as a slow pass.
	te := newTestEnv(t, func(c *Config) { c.ReadTimeout = 60 * time.Second })
	const (
		hdr = "From: shop@example.com\r\nTo: a@example.net\r\nSubject: dots\r\n\r\n"
		// A second transaction hidden behind an end-of-data look-alike.
		smuggled = "MAIL FROM:<spoof@example.com>\r\nRCPT TO:<v@example.org>\r\nDATA\r\n" +
			"From: spoof@example.com\r\n\r\nsmuggled\r\n.\r\n"
		queued = "250 2.0.0 Ok: queued as "
		bareCR = "554 5.6.0 Message refused: it contains a bare CR; every line must end with CRLF"
		bareLF = "554 5.6.0 Message refused: it contains a bare LF; every line must end with CRLF"
	)
	for _, tt := range []struct {
		name string
		bdat bool   // sent as one BDAT LAST chunk instead of after DATA
		data string // what the client sends after the 354 (or as the chunk)
		want string // the start of the reply
		msg  string // accepted: how the stored message must end
	}{
		{name: "normal", data: hdr + "x\r\n.\r\n", want: queued, msg: hdr + "x\r\n"},
		{name: "dot-stuffed lines", data: hdr + "x\r\n..\r\n..y\r\n.\r\n", want: queued, msg: hdr + "x\r\n.\r\n.y\r\n"},
		{name: "dot-stuffed first line", data: "..X-Dot: yes\r\n" + hdr + "x\r\n.\r\n", want: queued, msg: ".X-Dot: yes\r\n" + hdr + "x\r\n"},
		{name: "dot CR then a transaction", data: hdr + "x\r\n.\r" + smuggled, want: bareCR},
		{name: "dot CR, more text, the end", data: hdr + "x\r\n.\rmore text\r\n.\r\n", want: bareCR},
		{name: "dot CR at the start", data: ".\rX-Dot: yes\r\n" + hdr + "x\r\n.\r\n", want: bareCR},
		{name: "dot CR CR LF dot", data: hdr + "x\r\n.\r\r\n.\r\n", want: bareCR},
		{name: "CR CR LF dot", data: hdr + "x\r\r\n.\r\n", want: bareCR},
		{name: "CR CR LF dot at the start", data: "\r\r\n.\r\n", want: bareCR},
		{name: "dot LF", data: hdr + "x\r\n.\n" + smuggled, want: bareLF},
		{name: "dot LF at the start", data: ".\n" + hdr + "x\r\n.\r\n", want: bareLF},
		{name: "LF dot CRLF", data: hdr + "x\n.\r\n" + smuggled, want: bareLF},
		{name: "empty", data: ".\r\n", want: "554 5.6.0 Message refused: it has no From header"},
		// BDAT bytes are the message as is: no dot-stuffing, no end line.
		{name: "BDAT dot lines", bdat: true, data: hdr + "x\r\n..\r\n.\r\n", want: queued, msg: hdr + "x\r\n..\r\n.\r\n"},
		{name: "BDAT dot CR", bdat: true, data: hdr + "x\r\n.\r" + smuggled, want: bareCR},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			before, err := te.st.QueueMessages(ctx)
			if err != nil {
				t.Fatal(err)
			}
			s := te.dialAuthed(t)
			s.cmd("MAIL FROM:<shop@example.com>", "250")
			s.cmd("RCPT TO:<a@example.net>", "250")
			if tt.bdat {
				s.write(fmt.Sprintf("BDAT %d LAST\r\n", len(tt.data)))
			} else {
				s.cmd("DATA", "354")
			}
			s.conn.SetDeadline(time.Now().Add(10 * time.Second))
			s.write(tt.data)
			reply := s.reply() // fails the test if none comes in time
			if !strings.HasPrefix(reply, tt.want) {
				t.Fatalf("reply %q, want %q", reply, tt.want)
			}
			// Exactly one reply: the next one is NOOP's, not a reply to
			// anything that followed an end look-alike.
			s.cmd("NOOP", "250 2.0.0 I have successfully done nothing")

			after, err := te.st.QueueMessages(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if tt.msg == "" {
				if len(after) != len(before) {
					t.Fatalf("refused, yet %d message(s) queued", len(after)-len(before))
				}
				return
			}
			if len(after) != len(before)+1 {
				t.Fatalf("%d message(s) queued, want 1", len(after)-len(before))
			}
			data, err := te.st.MessageData(ctx, strings.TrimPrefix(reply, queued))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasSuffix(string(data), tt.msg) {
				t.Fatalf("stored message does not end with what was sent:\n%q\nwant the end\n%q", data, tt.msg)
			}
		})
	}
}

// A message of DATA whose connection ends before its end line must not be
// queued, however the client goes: a TLS close_notify, or a TCP FIN.
func TestDataCutShort(t *testing.T) {
	fs := newFuzzServer(t)
	good := message("shop@example.com", "a@example.net", "cut", "line one\r\nline two\r\n")
	for _, abrupt := range []bool{false, true} {
		fs.reset()
		replies, err := fs.play(afterLogin, []byte("MAIL FROM:<shop@example.com>\r\nRCPT TO:<a@example.net>\r\nDATA\r\n"+good), abrupt)
		if err != nil {
			t.Fatal(err)
		}
		fs.queue.mu.Lock()
		n := len(fs.queue.msgs)
		fs.queue.mu.Unlock()
		if n != 0 {
			t.Fatalf("abrupt=%v: %d message queued without its end line; replies:\n%s", abrupt, n, replies)
		}
		if !strings.Contains(string(replies), "451 4.4.2 Message incomplete") {
			t.Errorf("abrupt=%v: replies %q, want 451 4.4.2", abrupt, replies)
		}
	}
}

// TestDotReader reads each input whole, through small buffers and in
// pieces of every size, and checks the message, how it ended, and what is
// left for go-smtp (the end line first).
func TestDotReader(t *testing.T) {
	tooBig := smtp.ErrDataTooLarge
	for _, tt := range []struct {
		name, in string
		max      int64
		out      string // the message
		err      error  // how it ends: nil for the end line
		rest     string // what is left in the buffered reader after drain
	}{
		{name: "normal", in: "a\r\nb\r\n.\r\nQUIT\r\n", out: "a\r\nb\r\n", rest: ".\r\nQUIT\r\n"},
		{name: "empty", in: ".\r\nQUIT\r\n", out: "", rest: ".\r\nQUIT\r\n"},
		{name: "stuffed", in: "..a\r\nb\r\n..\r\n...\r\n.\r\n", out: ".a\r\nb\r\n.\r\n..\r\n", rest: ".\r\n"},
		{name: "dot not at a line start", in: "a.\r\n a\r\n.\r\n", out: "a.\r\n a\r\n", rest: ".\r\n"},
		{name: "dot CR", in: "a\r\n.\rMAIL\r\n.\r\n", out: "a\r\n\rMAIL\r\n", rest: ".\r\n"},
		{name: "dot CR first", in: ".\rX\r\n.\r\n", out: "\rX\r\n", rest: ".\r\n"},
		{name: "dot CR CR LF dot", in: "a\r\n.\r\r\n.\r\nNOOP\r\n", out: "a\r\n\r\r\n", rest: ".\r\nNOOP\r\n"},
		{name: "CR CR LF dot", in: "a\r\r\n.\r\nNOOP\r\n", out: "a\r\r\n", rest: ".\r\nNOOP\r\n"},
		{name: "dot LF", in: "a\r\n.\nb\r\n.\r\n", out: "a\r\n\nb\r\n", rest: ".\r\n"},
		{name: "LF dot CRLF is no end", in: "a\n.\r\nb\r\n.\r\n", out: "a\n.\r\nb\r\n", rest: ".\r\n"},
		{name: "LF dot LF is no end", in: "a\n.\nb\r\n.\r\n", out: "a\n.\nb\r\n", rest: ".\r\n"},
		{name: "NUL", in: "a\x00\r\n.\r\n", out: "a\x00\r\n", rest: ".\r\n"},
		{name: "long line", in: strings.Repeat("x", 100) + "\r\n.\r\n", out: strings.Repeat("x", 100) + "\r\n", rest: ".\r\n"},
		{name: "cut short", in: "a\r\nb", out: "a\r\nb", err: io.ErrUnexpectedEOF},
		{name: "cut short at a dot", in: "a\r\n.\r", out: "a\r\n", err: io.ErrUnexpectedEOF, rest: ".\r"},
		{name: "cut short after CR LF", in: "a\r\n", out: "a\r\n", err: io.ErrUnexpectedEOF},
		{name: "at the limit", in: "abc\r\n.\r\n", max: 5, out: "abc\r\n", rest: ".\r\n"},
		{name: "stuffing dots do not count", in: "..b\r\n.\r\n", max: 4, out: ".b\r\n", rest: ".\r\n"},
		{name: "over the limit", in: "abcd\r\n..\r\n.\r\nQUIT\r\n", max: 5, out: "abcd\r", err: tooBig, rest: ".\r\nQUIT\r\n"},
	} {
		for _, src := range []struct {
			name string
			r    func(string) io.Reader
		}{
			{"whole", func(s string) io.Reader { return strings.NewReader(s) }},
			{"bytewise", func(s string) io.Reader { return iotest.OneByteReader(strings.NewReader(s)) }},
		} {
			for _, size := range []int{1, 2, 3, 7, 4096} {
				br := bufio.NewReaderSize(src.r(tt.in), 16)
				d := newDotReader(br, tt.max)
				var out strings.Builder
				p := make([]byte, size)
				var err error
				for err == nil {
					var n int
					n, err = d.Read(p)
					out.Write(p[:n])
				}
				if err == io.EOF {
					err = nil
				}
				if out.String() != tt.out || !errors.Is(err, tt.err) {
					t.Errorf("%s, %s source, reads of %d: %q, %v; want %q, %v", tt.name, src.name, size, out.String(), err, tt.out, tt.err)
					continue
				}
				d.drain()
				if rest, _ := io.ReadAll(br); string(rest) != tt.rest {
					t.Errorf("%s, %s source, reads of %d: left %q, want %q", tt.name, src.name, size, rest, tt.rest)
				}
			}
		}
	}
}

// Read returns what has come rather than waiting for more: the end line
// after it may be a while coming (or never come).
func TestDotReaderDoesNotWait(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close()
	d := newDotReader(bufio.NewReader(pr), 0)
	go pw.Write([]byte("a\r\n."))
	p := make([]byte, 100)
	if n, err := d.Read(p); string(p[:n]) != "a\r\n" || err != nil {
		t.Fatalf("Read = %q, %v; want \"a\\r\\n\"", p[:n], err)
	}
	go pw.Write([]byte("\r\nNOOP\r\n"))
	if n, err := d.Read(p); n != 0 || err != io.EOF {
		t.Fatalf("Read = %q, %v; want the end", p[:n], err)
	}
}

// BenchmarkDotReader reads a 10 KiB message (benchMessage, with a
// dot-stuffed line) as readMessage does, from a buffered reader as large
// as go-smtp's.
func BenchmarkDotReader(b *testing.B) {
	msg := strings.Replace(benchMessage(), "\r\n", "\r\n..stuffed\r\n", 1) + ".\r\n"
	src := strings.NewReader(msg)
	br := bufio.NewReader(src)
	p := make([]byte, readChunk)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		src.Reset(msg)
		br.Reset(src)
		d := newDotReader(br, 0)
		for {
			if _, err := d.Read(p); err != nil {
				if err != io.EOF {
					b.Fatal(err)
				}
				break
			}
		}
	}
}
