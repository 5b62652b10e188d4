package smtpd

import (
	"errors"
	"strings"
	"testing"
	"testing/iotest"
)

func TestReadMessageLineEnds(t *testing.T) {
	tests := []struct {
		in   string
		want error
	}{
		{"a\r\nb\r\n", nil},
		{"", nil},
		{"a\nb\r\n", errBareLF},
		{"\n", errBareLF},
		{"a\rb\r\n", errBareCR},
		{"a\r", errBareCR},
		{"a\r\r\n", errBareCR},
		{"a\x00\r\n", errNUL},
		{"8-bit \xc3\xa9 ok\r\n", nil},
	}
	for _, tt := range tests {
		// One byte at a time: a CRLF split across reads is still a CRLF.
		for _, r := range []func(string) *strings.Reader{strings.NewReader} {
			buf := newMsgBuf(newInflight(1<<30, 0), "192.0.2.1", t.TempDir(), discardLog)
			err := readMessage(iotest.OneByteReader(r(tt.in)), buf, 2000)
			if !errors.Is(err, tt.want) && err != tt.want {
				t.Errorf("%q: err = %v, want %v", tt.in, err, tt.want)
			}
			if err == nil && string(buf.bytes()) != tt.in {
				t.Errorf("%q: read %q", tt.in, buf.bytes())
			}
			buf.free()
		}
	}
}

func TestParseHeader(t *testing.T) {
	msg := "From: \"Shop, Inc.\"\r\n <shop@example.com>\r\nDATE: today\r\nmessage-id: <x@y>\r\nSubject: s\r\n\r\nbody\r\nFrom: not a header\r\n"
	h, err := parseHeader([]byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	if !h.hasDate || h.messageID != "<x@y>" || h.size != strings.Index(msg, "body") {
		t.Fatalf("header = %+v", h)
	}
	from, err := h.fromAddress()
	if err != nil || from != "shop@example.com" {
		t.Fatalf("from = %q, %v", from, err)
	}

	for _, tt := range []struct{ in, want string }{
		{"From: =?iso-2022-jp?B?GyRCJUYlOSVIGyhC?= <a@example.com>\r\n\r\n", "a@example.com"},
		{"From: a@example.com", "a@example.com"}, // header only, no final CRLF
		{"From: a@example.com, b@example.com\r\n\r\n", "exactly one"},
		{"From: nobody\r\n\r\n", "exactly one"},
		{" continuation first\r\n\r\n", "malformed"},
		{"Bad Name: x\r\n\r\n", "malformed"},
		{"\r\nFrom: a@example.com\r\n", "no From header"},
	} {
		h, err := parseHeader([]byte(tt.in))
		got := ""
		if err == nil {
			got, err = h.fromAddress()
		}
		if err != nil {
			got = err.Error()
		}
		if !strings.Contains(got, tt.want) {
			t.Errorf("%q: got %q, want %q", tt.in, got, tt.want)
		}
	}
}

func FuzzParseHeader(f *testing.F) {
	f.Add([]byte("From: a@example.com\r\nTo: b@example.net\r\n\r\nbody\r\n"))
	f.Add([]byte("From: =?utf-8?q?x?= <a@b.c>\r\n x\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseHeader(b)
		if err != nil {
			return
		}
		if h.size < 0 || h.size > len(b) {
			t.Fatalf("size %d of %d", h.size, len(b))
		}
		h.fromAddress()
	})
}
