package report

import (
	"reflect"
	"testing"
	"time"
)

func TestScanFields(t *testing.T) {
	tests := []struct {
		in   string
		want []field
		rest string
	}{
		{"A: 1\r\nB:2\r\n\r\nbody", []field{{"a", "1"}, {"b", "2"}}, "body"},
		{"A: 1\nB:2\n\nbody\n", []field{{"a", "1"}, {"b", "2"}}, "body\n"},
		{"Subject: one\r\n two\r\n\t three \r\n\r\n", []field{{"subject", "one two three"}}, ""},
		{"Subject:\r\n folded\r\n", []field{{"subject", "folded"}}, ""},
		{"Empty:\r\nNext: x", []field{{"empty", ""}, {"next", "x"}}, ""},
		{"STATUS : 5.1.1\r\n", []field{{"status", "5.1.1"}}, ""},
		{" lead\r\nno colon\r\nA B: c\r\nok: y\r\n cont\r\n", []field{{"ok", "y cont"}}, ""},
		{"a: 1\r\n  \t\r\nb: 2", []field{{"a", "1"}}, "b: 2"},
		{"\r\nA: 1", nil, "A: 1"},
		{"", nil, ""},
	}
	for _, tt := range tests {
		got, rest := scanFields([]byte(tt.in), maxFields)
		if !reflect.DeepEqual(got, tt.want) || string(rest) != tt.rest {
			t.Errorf("scanFields(%q) = %q, %q; want %q, %q", tt.in, got, rest, tt.want, tt.rest)
		}
	}
	// The cap: fields past it are dropped, the rest is still found.
	got, rest := scanFields([]byte("a: 1\r\nb: 2\r\n c\r\nd: 3\r\n\r\nbody"), 1)
	if !reflect.DeepEqual(got, []field{{"a", "1"}}) || string(rest) != "body" {
		t.Errorf("scanFields with max 1 = %q, %q", got, rest)
	}
}

func TestStripComments(t *testing.T) {
	tests := []struct{ in, want string }{
		{"5.1.1 (bad destination mailbox)", "5.1.1"},
		{"  dns; mx.example.com ", "dns; mx.example.com"},
		{"a (b (nested) c) d", "a  d"},
		{`"x(y)"@example.com (z)`, `"x(y)"@example.com`},
		{`"a\"(b"@x`, `"a\"(b"@x`},
		{`a (com\)ment) b`, "a  b"},
		{"a (unclosed", "a"},
		{"a ) b", "a ) b"},
	}
	for _, tt := range tests {
		if got := stripComments(tt.in); got != tt.want {
			t.Errorf("stripComments(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestTypedAddress(t *testing.T) {
	tests := []struct{ in, want string }{
		{"rfc822; alice@example.net", "alice@example.net"},
		{"rfc822;alice@example.net", "alice@example.net"},
		{"RFC822; <alice@example.net>", "alice@example.net"},
		{"rfc822; Alice <alice@example.net>", "alice@example.net"},
		{"alice@example.net", "alice@example.net"},
		{"<alice@example.net>", "alice@example.net"},
		{"rfc822; alice@example.net (Alice)", "alice@example.net"},
		{"utf-8; andré@example.fr", "andré@example.fr"},
		{`utf-8; j\x{FC}rgen@b\x{FC}cher.example`, "jürgen@bücher.example"},
		{`utf-8; \x{1F600}@example.com`, "😀@example.com"},
		{`utf-8; a\x{D800}b\x{}c\x{110000}d\x{zz}e\x{41`, `a\x{D800}b\x{}c\x{110000}d\x{zz}e\x{41`},
		{`rfc822; a\x{41}@example.com`, `a\x{41}@example.com`}, // only utf-8 addresses are encoded
		{"x400; c=US;a=EXAMPLE", "c=US;a=EXAMPLE"},
		{"rfc822; <>", ""},
		{"", ""},
	}
	for _, tt := range tests {
		if got := typedAddress(tt.in); got != tt.want {
			t.Errorf("typedAddress(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestValues(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"smtp; 550 5.1.1 <x@y>: Recipient address rejected", "550 5.1.1 <x@y>: Recipient address rejected"},
		{"smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found", "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found"},
		{"X-Postfix; delivery temporarily suspended (connect timeout)", "delivery temporarily suspended (connect timeout)"},
		{"550 5.1.1; user unknown", "550 5.1.1; user unknown"},
		{"5.1.1; user unknown", "5.1.1; user unknown"},
		{"no type here", "no type here"},
	} {
		if got := diagnostic(tt.in); got != tt.want {
			t.Errorf("diagnostic(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	for _, tt := range []struct{ in, want string }{
		{"dns; mx.example.com", "mx.example.com"},
		{"DNS; mx.example.com. (192.0.2.1, the server for the domain example.com.)", "mx.example.com"},
		{"dns;[192.0.2.1]", "[192.0.2.1]"},
		{"x-local-hostname; host.", "host."},
		{"mx.example.com", "mx.example.com"},
	} {
		if got := mtaName(tt.in); got != tt.want {
			t.Errorf("mtaName(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	for _, tt := range []struct {
		in, want string
		ok       bool
	}{
		{"5.1.1", "5.1.1", true},
		{"5.1.1 (bad destination mailbox)", "5.1.1", true},
		{"4.4.7\t(expired)", "4.4.7", true},
		{"2.0.0", "2.0.0", true},
		{"5.1.10", "5.1.10", true},
		{"5.123.999", "5.123.999", true},
		{"3.1.1", "3.1.1", false},
		{"5.1", "5.1", false},
		{"5.1.1.1", "5.1.1.1", false},
		{"5.1.1, user unknown", "5.1.1", true},
		{"5.7.1;", "5.7.1", true},
		{"5.1.1x", "5.1.1", true},
		{"5.1.1234", "5.1.1234", false},
		{"5.1.", "5.1.", false},
		{"5..1", "5..1", false},
		{"5", "5", false},
		{"5.1234.1", "5.1234.1", false},
		{"550", "550", false},
		{"5.a.1", "5.a.1", false},
		{"(only a comment)", "", false},
		{"", "", false},
	} {
		if got, ok := status(tt.in); got != tt.want || ok != tt.ok {
			t.Errorf("status(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
	for _, tt := range []struct {
		in   string
		want time.Time
	}{
		{"Tue,  4 Mar 2025 10:14:58 +0000 (UTC)", time.Date(2025, 3, 4, 10, 14, 58, 0, time.UTC)},
		{"Tue, 04 Mar 2025 03:20:49 -0800 (PST)", time.Date(2025, 3, 4, 11, 20, 49, 0, time.UTC)},
		{"4 Mar 2025 10:14 +0100", time.Date(2025, 3, 4, 9, 14, 0, 0, time.UTC)},
		{"yesterday", time.Time{}},
		{"", time.Time{}},
	} {
		if got := parseDate(tt.in); !got.Equal(tt.want) {
			t.Errorf("parseDate(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestContentType(t *testing.T) {
	tests := []struct {
		in     string
		mt     string
		params map[string]string
	}{
		{`multipart/report; report-type=delivery-status; boundary="a b"`, "multipart/report",
			map[string]string{"report-type": "delivery-status", "boundary": "a b"}},
		{`Multipart/Report; Report-Type="Delivery-Status"; Boundary=x`, "multipart/report",
			map[string]string{"report-type": "Delivery-Status", "boundary": "x"}},
		{`multipart/report; boundary=----=_Part_1; report-type=feedback-report`, "multipart/report",
			map[string]string{"report-type": "feedback-report", "boundary": "----=_Part_1"}},
		{`multipart/mixed; boundary="x"; boundary="y"`, "multipart/mixed", map[string]string{"boundary": "x"}},
		{"", "text/plain", nil},
		{"garbage", "text/plain", nil},
		{"multipart/\x00x; boundary=y", "text/plain", nil},
	}
	for _, tt := range tests {
		mt, params := contentType(tt.in)
		if mt != tt.mt || !reflect.DeepEqual(params, tt.params) && len(params)+len(tt.params) > 0 {
			t.Errorf("contentType(%q) = %q, %v; want %q, %v", tt.in, mt, params, tt.mt, tt.params)
		}
	}
}

func TestParseHeaders(t *testing.T) {
	h := parseHeaders([]byte("\r\n\r\nMessage-ID:\r\n <id@x>\r\nFrom: =?iso-8859-1?q?J=F6rg?= <j@x>\r\n" +
		"Subject: =?utf-8?q?line=0Abreak?=\r\nTo: =?x-unknown?q?abc?= <t@x>\r\nReceived: one\r\nReceived: two\r\n\r\nbody: not a field\r\n"))
	want := Headers{
		MessageID: "id@x",
		From:      "Jörg <j@x>",
		To:        "=?x-unknown?q?abc?= <t@x>",
		Subject:   "line break",
		Received:  []string{"one", "two"},
	}
	raw := h.Raw
	h.Raw = nil
	if !reflect.DeepEqual(h, want) {
		t.Errorf("parseHeaders = %+v, want %+v", h, want)
	}
	if raw.Get("Message-Id") != "<id@x>" || len(raw) != 5 || raw.Get("Body") != "" {
		t.Errorf("Raw = %v", raw)
	}
	if h := parseHeaders([]byte("not a header at all")); !reflect.DeepEqual(h, Headers{}) {
		t.Errorf("parseHeaders(garbage) = %+v, want zero", h)
	}
}
