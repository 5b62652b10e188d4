package smtpd

import (
	"bufio"
	"bytes"
	"io"
	"reflect"

	"github.com/emersion/go-smtp"
)

// dotReader reads the message of a DATA command (RFC 5321 §4.1.1.4) from the
// bytes the client sent, with only the transparency dots removed (§4.5.2):
// a line that starts with a dot loses that one dot, and every other byte,
// a bare CR, a bare LF or a NUL included, is passed on as sent, for
// readMessage to refuse. The data ends at the first CRLF "." CRLF, the
// start of the data counting as a line start.
//
// It replaces go-smtp's own reader of the data (v0.25.1, data.go), which
// changes what the client sent in ways no check after it can see: in
// "\r\n.\rX" it drops both the dot and the CR, so a bare CR vanishes and
// the stored message is not the one sent; in "\r\n.\n" it drops the dot;
// and after a CR, a CR LF does not start a line for it, so "\r\r\n.\r\n"
// is not an end and the client, which has finished, waits for the read
// timeout. See docs/flow.md, "Line ends and dot lines".
//
// It reads from the buffered reader go-smtp reads the connection through
// (dataSource), and stops in front of the end line: go-smtp, after
// Session.Data returns, drains its own reader of the data, which starts
// at a line start, finds ".\r\n" there and stops at the same place. So
// the data must be read to its end (drain) before Session.Data returns,
// or go-smtp would go on reading from the middle of the message.
type dotReader struct {
	br        *bufio.Reader
	left      int64 // bytes of message still allowed; negative: no limit
	lineStart bool  // the next byte starts a line
	lastCR    bool  // the last byte passed on was a CR
	done      bool  // the end line is next in br
	err       error // a read error of br, returned from then on
}

// newDotReader reads a message of at most max bytes (0: no limit) from br,
// which must be just past the DATA command line.
func newDotReader(br *bufio.Reader, max int64) *dotReader {
	left := max
	if max <= 0 {
		left = -1
	}
	return &dotReader{br: br, left: left, lineStart: true}
}

// Read returns message bytes; smtp.ErrDataTooLarge once the message is
// longer than its limit, and io.EOF at its end. It waits for the client
// only when it has nothing to return yet.
func (d *dotReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) && d.err == nil && !d.done {
		if n > 0 && d.br.Buffered() == 0 {
			break
		}
		if d.lineStart {
			b, err := d.br.Peek(1)
			if err != nil {
				d.fail(err)
				break
			}
			if b[0] == '.' {
				if n > 0 && d.br.Buffered() < 3 {
					break
				}
				if b, err = d.br.Peek(3); string(b) == ".\r\n" {
					d.done = true // the end line stays in br, for go-smtp
					break
				}
				if err != nil {
					d.fail(err)
					break
				}
				d.br.Discard(1) // the transparency dot
			}
			d.lineStart = false
		}
		buf, err := d.br.Peek(max(d.br.Buffered(), 1))
		if err != nil {
			d.fail(err)
			break
		}
		if d.left == 0 {
			if n > 0 {
				break
			}
			return 0, smtp.ErrDataTooLarge
		}
		// Pass on the rest of the line, or as much of it as is here and
		// fits.
		m := min(len(buf), len(p)-n)
		if i := bytes.IndexByte(buf[:m], '\n'); i >= 0 {
			m = i + 1
		}
		if d.left > 0 && int64(m) > d.left {
			m = int(d.left)
		}
		if buf[m-1] == '\n' {
			// A line starts after CR LF only: not after a bare LF, and a
			// CR LF ends a line even after a CR.
			d.lineStart = (m > 1 && buf[m-2] == '\r') || (m == 1 && d.lastCR)
		}
		d.lastCR = buf[m-1] == '\r'
		copy(p[n:], buf[:m])
		d.br.Discard(m)
		n += m
		if d.left > 0 {
			d.left -= int64(m)
		}
	}
	if n > 0 || len(p) == 0 {
		return n, nil
	}
	if d.err != nil {
		return 0, d.err
	}
	return 0, io.EOF // the loop ended with nothing read: an error or the end
}

// fail keeps a read error for every later Read. The connection's end
// before the end line is io.ErrUnexpectedEOF: io.EOF would say the message
// is complete.
func (d *dotReader) fail(err error) {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	d.err = err
}

// drain reads the rest of the data, over the size limit too, so that
// go-smtp finds the end line next. It returns at once after a read error.
func (d *dotReader) drain() {
	d.left = -1
	io.Copy(io.Discard, d)
}

// dataSource returns the buffered reader go-smtp reads the client's bytes
// through, taken from the reader of the data it hands Session.Data after
// DATA. go-smtp has no API for it: this reads the unexported field r of
// its unexported dataReader. ok is false when r is something else, for
// BDAT (an *io.PipeReader of the chunks' raw bytes) or when go-smtp has
// changed (TestEndOfData and every DATA test fail then); it is also false
// if the reader has already been read from, since dotReader must start at
// the start of the data, where go-smtp's reader starts (state 0).
func dataSource(r io.Reader) (br *bufio.Reader, ok bool) {
	v := reflect.ValueOf(r)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		return nil, false
	}
	v = v.Elem()
	t := v.Type()
	if t.Kind() != reflect.Struct || t.PkgPath() != "github.com/emersion/go-smtp" || t.Name() != "dataReader" {
		return nil, false
	}
	f, state := v.FieldByName("r"), v.FieldByName("state")
	if !f.IsValid() || f.Type() != reflect.TypeFor[*bufio.Reader]() || f.IsNil() ||
		!state.IsValid() || state.Kind() != reflect.Int || state.Int() != 0 {
		return nil, false
	}
	return (*bufio.Reader)(f.UnsafePointer()), true
}

// errReader is the reply when the data cannot be read the way dotReader
// must read it (see dataSource).
var errReader = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0},
	Message: "Temporary failure: the message could not be read; try again later"}

// isBDAT reports whether r is go-smtp's reader of BDAT chunks.
func isBDAT(r io.Reader) bool {
	_, ok := r.(*io.PipeReader)
	return ok
}
