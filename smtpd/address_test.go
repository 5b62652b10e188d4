package smtpd

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
)

func TestNormalizeAddress(t *testing.T) {
	tests := []struct {
		in       string
		smtputf8 bool
		want     string // normalized address, or the start of the reply
	}{
		{"User@Example.COM", false, "User@example.com"},
		{"a.b+tag@sub.example.com.", false, "a.b+tag@sub.example.com"},
		{"user@b\u00fccher.example", true, "user@xn--bcher-kva.example"},
		{"\u00fcser@example.com", true, "\u00fcser@example.com"},
		{"\u00fcser@example.com", false, "553 5.6.7"},
		{"user@b\u00fccher.example", false, "553 5.1.3"},
		{"u@d@example.com", false, "553 5.1.3"},
		{"u%x@example.com", false, "553 5.1.3"},
		{"x!u@example.com", false, "553 5.1.3"},
		{"u@[192.0.2.1]", false, "553 5.1.3"},
		{"u@localhost", false, "553 5.1.3"},
		{"u@-bad.example", false, "553 5.1.3"},
		{"u@exa_mple.com", false, "553 5.1.3"},
		{"a b@example.com", false, "553 5.1.3"},
		{"a\r\n@example.com", false, "553 5.1.3"},
		{"nodomain", false, "553 5.1.3"},
		{"@example.com", false, "553 5.1.3"},
		{strings.Repeat("a", 65) + "@example.com", false, "553 5.1.3"},
		{"a@" + strings.Repeat("b", 250) + ".com", false, "553 5.1.3"},
		// Quoted local parts arrive unquoted from go-smtp; Sesame would
		// send them on unquoted, so those valid only quoted are refused.
		{"a<b@example.com", false, "553 5.1.3"},
		{"a>b@example.com", false, "553 5.1.3"},
		{"a,b@example.com", false, "553 5.1.3"},
		{"a;b@example.com", false, "553 5.1.3"},
		{"a:b@example.com", false, "553 5.1.3"},
		{"a(b)@example.com", false, "553 5.1.3"},
		{"a[b]@example.com", false, "553 5.1.3"},
		{".a@example.com", false, "553 5.1.3"},
		{"a.@example.com", false, "553 5.1.3"},
		{"a..b@example.com", false, "553 5.1.3"},
		{"o'brien+x=y#z@example.com", false, "o'brien+x=y#z@example.com"},
		// Invisible and direction-changing characters, with SMTPUTF8.
		{"u\u0085@example.com", true, "553 5.1.3"},
		{"u\u202ex@example.com", true, "553 5.1.3"},
		{"u\u200bx@example.com", true, "553 5.1.3"},
		{"u\u2028x@example.com", true, "553 5.1.3"},
		{"\ufeffu@example.com", true, "553 5.1.3"},
		{"u\u00a0x@example.com", true, "553 5.1.3"},
		{"u@exa\u200bmple.com", true, "553 5.1.3"},
		{"u@b\u00fccher\u202e.example", true, "553 5.1.3"},
		{"\u7528\u6237@example.com", true, "\u7528\u6237@example.com"},
	}
	for _, tt := range tests {
		got, err := normalizeAddress(tt.in, tt.smtputf8, badRecipientCode)
		if err != nil {
			got = err.Error()
			if code, ok := replyCode(err); ok {
				got = code
			}
		}
		if !strings.HasPrefix(got, tt.want) {
			t.Errorf("normalizeAddress(%q, %v) = %q, want %q", tt.in, tt.smtputf8, got, tt.want)
		}
	}
}

func FuzzNormalizeAddress(f *testing.F) {
	for _, s := range []string{"a@example.com", "\"u@x\"@y.z", "u@[1.2.3.4]", "\u00fc@b\u00fccher.example", "a!b%c@d.e"} {
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, in string, utf8 bool) {
		out, err := normalizeAddress(in, utf8, badRecipientCode)
		if err != nil {
			return
		}
		// An accepted address has one @ and a plain ASCII domain.
		if strings.Count(out, "@") != 1 {
			t.Fatalf("%q \u2192 %q", in, out)
		}
		d := out[strings.IndexByte(out, '@')+1:]
		if _, ok := normalizeDomain(d, false); !ok {
			t.Fatalf("%q \u2192 domain %q not plain", in, d)
		}
	})
}

// replyCode renders an *smtp.SMTPError as "553 5.1.3".
func replyCode(err error) (string, bool) {
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		return "", false
	}
	return fmt.Sprintf("%d %d.%d.%d", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2]), true
}
