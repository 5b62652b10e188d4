package main

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// What the operator commands print is often text strangers chose: the
// addresses and fields of a report anyone may send to the inbound listener,
// the replies of remote servers, the records found in DNS. Written to a
// terminal as it is, an escape sequence in it can move the cursor, rewrite
// or hide what was printed above, set the window title or, in some
// terminals, answer back as if typed; a tab or a newline breaks a table's
// columns, and a bidirectional override reorders what is shown. So every
// such string goes through clean (one cell or field) or cleanText (a
// message's lines) before it is printed; --json output goes through
// jsonSafe, and `sesame inbound show --raw` is the one way to get the bytes
// as they are.

// clean returns s with every control character (C0, DEL, C1), every byte
// that is not UTF-8 and every bidirectional formatting character written as
// a Go escape: "\x1b", "\t", "\u202e". Everything else is left as it is.
func clean(s string) string { return escape(s, false) }

// cleanText is clean for multi-line text: it keeps line ends (a CRLF
// becomes one newline) and tabs.
func cleanText(s string) string { return escape(s, true) }

func escape(s string, lines bool) string {
	i := 0
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		if needsEscape(r, size, lines) || (lines && r == '\r') {
			break
		}
		i += size
	}
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.WriteString(s[:i])
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case lines && r == '\r' && strings.HasPrefix(s[i+1:], "\n"):
			// CRLF: the newline that follows is written as it is.
		case size == 1 && r == utf8.RuneError:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case !needsEscape(r, size, lines):
			b.WriteString(s[i : i+size])
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x80:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
		i += size
	}
	return b.String()
}

// needsEscape reports whether the rune r, size bytes long, is written
// escaped.
func needsEscape(r rune, size int, lines bool) bool {
	switch {
	case size == 1 && r == utf8.RuneError:
		return true
	case lines && (r == '\n' || r == '\t'):
		return false
	case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0):
		return true
	}
	return bidiControl(r)
}

// bidiControl reports whether r is one of Unicode's bidirectional
// formatting characters (marks, embeddings, overrides, isolates).
func bidiControl(r rune) bool {
	return r == 0x061c || r == 0x200e || r == 0x200f || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069)
}

// jsonSafe escapes, in JSON that encoding/json wrote, what it leaves as it
// is but a terminal may act on: DEL, the C1 controls and the bidirectional
// formatting characters, as \u escapes (C0 controls and invalid UTF-8 are
// escaped or replaced by the encoder already). They can only occur inside
// strings, so the JSON means the same.
func jsonSafe(js []byte) []byte {
	var b []byte // nil until something needs escaping
	for i := 0; i < len(js); {
		r, size := utf8.DecodeRune(js[i:])
		if r == 0x7f || (r >= 0x80 && r < 0xa0) || bidiControl(r) {
			if b == nil {
				b = append(make([]byte, 0, len(js)+16), js[:i]...)
			}
			b = fmt.Appendf(b, `\u%04x`, r)
		} else if b != nil {
			b = append(b, js[i:i+size]...)
		}
		i += size
	}
	if b == nil {
		return js
	}
	return b
}
