package report

// Header fields. A message header (RFC 5322 §2.2), each group of a
// message/delivery-status part (RFC 3464 §2.1) and a message/feedback-report
// part (RFC 5965 §3.1) are all "Name: value" lines, folded the same way, and
// are all read by scanFields. The helpers below read the values.

import (
	"bytes"
	"net/mail"
	"strings"
	"time"
	"unicode/utf8"
)

// field is one header field.
type field struct {
	name  string // lower case
	value string // unfolded, trimmed
}

const (
	// maxFields caps the fields kept from one header; the rest are
	// skipped. Real headers have a few dozen.
	maxFields = 1000
	// maxGroupFields caps the fields kept from one group of a
	// message/delivery-status part, which has about ten.
	maxGroupFields = 100
)

// scanFields reads fields from b up to its first blank line and returns
// them, with what follows that line (nil if there was none). A line that
// starts with a space or a tab continues the field before it (RFC 5322
// §2.2.3); the lines are joined with one space. A line that is not a field
// (no colon, or a name with characters RFC 5322 §3.6.8 does not allow) is
// skipped, with its continuation lines. Lines end in LF or CRLF. At most
// max fields are kept; the rest are read and dropped.
func scanFields(b []byte, max int) (fields []field, rest []byte) {
	var (
		name string // the field being read; "" if none
		val  []byte // its value so far
	)
	flush := func() {
		if name != "" {
			fields = append(fields, field{name: name, value: string(bytes.TrimRight(val, " \t"))})
		}
		name, val = "", val[:0]
	}
	for len(b) > 0 {
		line, next, _ := bytes.Cut(b, []byte("\n"))
		b = next
		line = bytes.TrimSuffix(line, []byte("\r"))
		if isBlank(line) {
			flush()
			return fields, b
		}
		if line[0] == ' ' || line[0] == '\t' {
			if name != "" {
				if cont := bytes.Trim(line, " \t"); len(cont) > 0 {
					if len(val) > 0 {
						val = append(val, ' ')
					}
					val = append(val, cont...)
				}
			}
			continue
		}
		flush()
		k, v, ok := bytes.Cut(line, []byte(":"))
		k = bytes.TrimRight(k, " \t") // obsolete syntax allows space before the colon
		if !ok || !validName(k) || len(fields) >= max {
			continue
		}
		name = strings.ToLower(string(k))
		val = append(val, bytes.Trim(v, " \t")...)
	}
	flush()
	return fields, nil
}

// scanGroups reads the groups of fields in b, separated by blank lines
// (RFC 3464 §2.1), keeping at most maxFields fields of each. Lines that are
// not fields are skipped, and a group made only of them is dropped. It
// fails with ErrLimit when b holds more than maxGroups groups.
func scanGroups(b []byte, maxGroups, maxFields int) ([][]field, error) {
	var groups [][]field
	for len(b) > 0 {
		var fs []field
		fs, b = scanFields(b, maxFields)
		if len(fs) == 0 {
			continue
		}
		if len(groups) == maxGroups {
			return nil, limitErr("more than %d groups of fields", maxGroups)
		}
		groups = append(groups, fs)
	}
	return groups, nil
}

// validName reports whether k is a field name: one or more printable
// US-ASCII characters other than the colon (RFC 5322 §3.6.8).
func validName(k []byte) bool {
	if len(k) == 0 {
		return false
	}
	for _, c := range k {
		if c <= ' ' || c >= 0x7f || c == ':' {
			return false
		}
	}
	return true
}

// isBlank reports whether line holds only spaces, tabs and CRs.
func isBlank(line []byte) bool {
	for _, c := range line {
		if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			return false
		}
	}
	return true
}

// skipBlankLines returns b without its leading blank lines.
func skipBlankLines(b []byte) []byte {
	for len(b) > 0 {
		line, rest, found := bytes.Cut(b, []byte("\n"))
		if !isBlank(line) {
			return b
		}
		if !found {
			return nil
		}
		b = rest
	}
	return b
}

// stripComments removes the comments, "(...)" (RFC 5322 §3.2.2), from v,
// nested ones included, and trims the result. Quoted strings are kept as
// they are, parentheses in them too, and an unclosed comment runs to the
// end of v.
func stripComments(v string) string {
	if strings.IndexByte(v, '(') < 0 {
		return strings.TrimSpace(v)
	}
	var b strings.Builder
	depth, quoted := 0, false
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '\\' && (quoted || depth > 0): // a quoted-pair (§3.2.1)
			if depth == 0 {
				b.WriteString(v[i:min(i+2, len(v))])
			}
			i++
		case quoted:
			b.WriteByte(c)
			quoted = c != '"'
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case depth > 0:
		case c == '"':
			b.WriteByte(c)
			quoted = true
		default:
			b.WriteByte(c)
		}
	}
	return strings.TrimSpace(b.String())
}

// typed splits a value of the form "type; text" (RFC 3464 §2.1.2: an
// address-type, an mta-name-type or a diagnostic-type) into the type, lower
// case, and the trimmed text. If the part before the first ";" is not a type
// (a word that starts with a letter and holds only letters, digits, "-",
// "_" and "."), typ is "" and text is all of v, trimmed.
func typed(v string) (typ, text string) {
	t, rest, ok := strings.Cut(v, ";")
	t = strings.TrimSpace(t)
	if !ok || !isType(t) {
		return "", strings.TrimSpace(v)
	}
	return strings.ToLower(t), strings.TrimSpace(rest)
}

func isType(t string) bool {
	if t == "" || len(t) > 40 || !isLetter(t[0]) {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !isLetter(c) && !isDigit(c) && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}

func isLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
func isDigit(c byte) bool  { return '0' <= c && c <= '9' }

// typedAddress reads an address field of a DSN ("rfc822; user@example.com",
// RFC 3464 §2.3.1–2): comments removed, the type dropped, the
// utf-8-addr-xtext encoding of an "utf-8" address decoded (RFC 6533 §3), and
// angle brackets removed.
func typedAddress(v string) string {
	typ, a := typed(stripComments(v))
	if typ == "utf-8" {
		a = decodeEmbeddedUnicode(a)
	}
	return unbracket(a)
}

// unbracket returns what is inside the first "<...>" of v, or v, trimmed.
func unbracket(v string) string {
	if i := strings.IndexByte(v, '<'); i >= 0 {
		if j := strings.IndexByte(v[i:], '>'); j >= 0 {
			v = v[i+1 : i+j]
		}
	}
	return strings.TrimSpace(v)
}

// decodeEmbeddedUnicode replaces each "\x{HEX}" of a (EmbeddedUnicodeChar,
// RFC 6533 §3) by the character it stands for. A sequence that does not
// stand for a valid character is left as it is.
func decodeEmbeddedUnicode(a string) string {
	if !strings.Contains(a, `\x{`) {
		return a
	}
	var b strings.Builder
	for {
		i := strings.Index(a, `\x{`)
		if i < 0 {
			break
		}
		b.WriteString(a[:i])
		a = a[i:]
		end := strings.IndexByte(a, '}')
		if r, ok := hexRune(a[3:max(end, 3)]); end > 0 && ok {
			b.WriteRune(r)
			a = a[end+1:]
		} else {
			b.WriteString(a[:3])
			a = a[3:]
		}
	}
	b.WriteString(a)
	return b.String()
}

// hexRune reads 1 to 6 hex digits as a valid Unicode scalar value.
func hexRune(h string) (rune, bool) {
	if h == "" || len(h) > 6 {
		return 0, false
	}
	var r rune
	for i := 0; i < len(h); i++ {
		c := h[i]
		var d byte
		switch {
		case isDigit(c):
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(d)
	}
	return r, utf8.ValidRune(r)
}

// mtaName reads a Reporting-MTA or Remote-MTA field ("dns; mx.example.com",
// RFC 3464 §2.2.2): comments removed, the type dropped, and the final dot
// of a DNS name removed.
func mtaName(v string) string {
	typ, name := typed(stripComments(v))
	if typ == "dns" {
		name = strings.TrimSuffix(name, ".")
	}
	return name
}

// diagnostic reads a Diagnostic-Code field ("smtp; 550 5.1.1 ...", RFC
// 3464 §2.3.6): the text without its type. Parentheses are kept: the text
// is free-form, not a structured field.
func diagnostic(v string) string {
	_, text := typed(v)
	return text
}

// status reads a Status field ("5.1.1 (bad destination mailbox)"): the
// code without comments or anything after it. ok reports whether it is a
// code of the form class.subject.detail (RFC 3463 §2); if not, code is the
// first word of the field.
func status(v string) (code string, ok bool) {
	v = stripComments(v)
	// class "." subject "." detail, then the end or a character that
	// cannot continue a code, such as a space or a comma.
	i := 0
	digits := func() bool { // 1 to 3 digits at i
		n := 0
		for i < len(v) && isDigit(v[i]) {
			i, n = i+1, n+1
		}
		return n >= 1 && n <= 3
	}
	ok = len(v) > 1 && (v[0] == '2' || v[0] == '4' || v[0] == '5') && v[1] == '.'
	if ok {
		i = 2
		ok = digits() && i < len(v) && v[i] == '.'
	}
	if ok {
		i++
		ok = digits() && (i == len(v) || v[i] != '.')
	}
	if ok {
		return v[:i], true
	}
	if f := strings.Fields(v); len(f) > 0 {
		return f[0], false
	}
	return "", false
}

// parseDate reads a date field (RFC 5322 §3.3), comments removed; it
// returns the zero Time if the value does not parse.
func parseDate(v string) time.Time {
	t, err := mail.ParseDate(stripComments(v))
	if err != nil {
		return time.Time{}
	}
	return t
}
