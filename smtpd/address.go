package smtpd

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/emersion/go-smtp"
	"golang.org/x/net/idna"
)

// Enhanced codes for a bad envelope address (RFC 3463): 5.1.7 for the
// sender, 5.1.3 for a recipient.
var (
	badSenderCode    = smtp.EnhancedCode{5, 1, 7}
	badRecipientCode = smtp.EnhancedCode{5, 1, 3}
)

// normalizeAddress validates an envelope address as go-smtp hands it over
// (angle brackets removed, a quoted local part already unquoted, source
// routes dropped) and returns it with its domain in lower-case A-label form.
//
// go-smtp does no validation of its own, so ambiguous forms that other MTAs
// would route differently are refused here: a second '@' (what `"u@x"@y`
// becomes once unquoted), '%' and '!' routing, address literals, control
// bytes and spaces, and 8-bit bytes unless the client announced SMTPUTF8.
//
// go-smtp also drops the quotes of a quoted local part and Sesame sends the
// address on unquoted, so a local part that is only valid quoted (one with
// specials such as '<', '>', ',', ';' or a leading, trailing or doubled dot,
// RFC 5321 §4.1.2) is refused: the next server would answer 501, or read
// it as something else. With SMTPUTF8, invisible and direction-changing
// characters (controls such as U+0085, formats such as U+200B, U+202E and
// U+FEFF, separators such as U+2028) are refused anywhere in the address: they
// make an address look like another one.
func normalizeAddress(addr string, smtputf8 bool, code smtp.EnhancedCode) (string, error) {
	refuse := func(why string) (string, error) {
		return "", &smtp.SMTPError{Code: 553, EnhancedCode: code, Message: "Bad address <" + printable(addr) + ">: " + why}
	}
	if len(addr) > 254 { // RFC 5321 §4.5.3.1.3 path limit, less the brackets
		return refuse("longer than 254 octets")
	}
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return refuse("it has no domain; use user@example.com")
	}
	local, domain := addr[:at], addr[at+1:]
	if local == "" || len(local) > 64 {
		return refuse("the local part must be 1 to 64 octets")
	}
	for i := 0; i < len(local); i++ {
		c := local[i]
		switch {
		case c == '@':
			return refuse("more than one @")
		case c == '%' || c == '!':
			return refuse("'%' and '!' routing is not accepted")
		case c <= ' ' || c == 0x7f || c == '"' || c == '\\':
			return refuse("control characters, spaces and quotes are not accepted")
		case strings.IndexByte(needsQuoting, c) >= 0:
			return refuse("a local part with " + string(c) + " is valid only quoted, and Sesame does not relay quoted local parts")
		case c >= 0x80 && !smtputf8:
			return "", &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 6, 7},
				Message: "Non-ASCII address <" + printable(addr) + "> needs MAIL FROM:<...> SMTPUTF8"}
		}
	}
	if local[0] == '.' || local[len(local)-1] == '.' || strings.Contains(local, "..") {
		return refuse("a local part with a leading, trailing or doubled dot is valid only quoted, and Sesame does not relay quoted local parts")
	}
	if !utf8.ValidString(addr) {
		return refuse("invalid UTF-8")
	}
	if strings.IndexFunc(addr, invisible) >= 0 {
		return refuse("invisible or direction-changing characters are not accepted")
	}
	if strings.HasPrefix(domain, "[") {
		return refuse("address literals are not accepted; use a domain name")
	}
	ascii, ok := normalizeDomain(domain, smtputf8)
	if !ok {
		return refuse("the domain is not a valid domain name")
	}
	return local + "@" + ascii, nil
}

// needsQuoting holds the ASCII specials of RFC 5322 §3.2.3 that a local part
// may contain only inside quotes (those not refused for other reasons).
const needsQuoting = "()<>[]:;,"

// invisible reports whether r is a character that renders as nothing or
// changes the direction of the text around it: Unicode controls (C0 and C1,
// U+0085 among them), format characters (U+200B, U+200E, U+202A–U+202E,
// U+2066–U+2069, U+FEFF …), line and paragraph separators, non-ASCII spaces,
// private-use characters and the replacement character.
func invisible(r rune) bool {
	return r == utf8.RuneError || (r >= 0x80 && unicode.IsSpace(r)) ||
		unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp, unicode.Co)
}

// normalizeDomain returns the lower-case A-label form of a domain with at
// least two labels, each of letters, digits and hyphens.
func normalizeDomain(domain string, allowUnicode bool) (string, bool) {
	d := strings.TrimSuffix(domain, ".")
	for i := 0; i < len(d); i++ {
		if d[i] >= 0x80 {
			if !allowUnicode {
				return "", false
			}
			a, err := idna.Lookup.ToASCII(d)
			if err != nil {
				return "", false
			}
			d = a
			break
		}
	}
	d = strings.ToLower(d)
	if len(d) > 253 || !strings.Contains(d, ".") {
		return "", false
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return "", false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return "", false
			}
		}
	}
	return d, true
}

// printable makes client input safe to echo in a reply or a log line.
func printable(s string) string {
	const max = 100
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= max {
			b.WriteString("...")
			break
		}
		if r < ' ' || r == 0x7f || invisible(r) {
			b.WriteByte('?')
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}
