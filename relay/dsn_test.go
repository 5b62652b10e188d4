package relay

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"net/textproto"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"
)

const dsnOriginal = "Received: from client.example.com by mx.sesame.test\r\n" +
	"From: Alice <alice@example.com>\r\n" +
	"To: bob@example.org, carol@nowhere.example\r\n" +
	"Subject: Quarterly report\r\n" +
	"Message-ID: <orig-1@example.com>\r\n" +
	"\r\n" +
	"Hello,\r\n" +
	"the body is not returned.\r\n"

// dsnNow is the time the test DSNs are built.
func dsnNow() time.Time { return time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC) }

// dsnFailedParams is a bounce for two recipients: one refused by a server,
// one whose domain did not resolve, so no server was reached.
func dsnFailedParams() dsnParams {
	return dsnParams{
		Hostname:    "mx.sesame.test",
		QueueID:     "Q123",
		Sender:      "alice@example.com",
		ArrivalDate: dsnNow().Add(-time.Hour),
		Now:         dsnNow(),
		Recipients: []dsnRecipient{{
			Address:     "bob@example.org",
			Action:      "failed",
			Status:      "5.1.1",
			RemoteMTA:   "mx.example.org",
			Diagnostic:  "550 5.1.1 No such user",
			LastAttempt: dsnNow().Add(-time.Minute),
			RetryUntil:  dsnNow().Add(time.Hour), // ignored: only delays have it
		}, {
			Address:     "carol@nowhere.example",
			Action:      "failed",
			Status:      "5.1.2",
			LastAttempt: dsnNow().Add(-2 * time.Minute),
		}},
		Original:  []byte(dsnOriginal),
		MessageID: "<dsn-Q123@mx.sesame.test>",
	}
}

func dsnDelayedParams() dsnParams {
	p := dsnFailedParams()
	p.Recipients = []dsnRecipient{{
		Address:     "bob@example.org",
		Action:      "delayed",
		Status:      "4.4.1",
		RemoteMTA:   "mx.example.org",
		Diagnostic:  "451 4.3.0 Try again later",
		LastAttempt: dsnNow().Add(-time.Minute),
		RetryUntil:  dsnNow().Add(4 * 24 * time.Hour),
	}}
	return p
}

func dsnMustBuild(t *testing.T, p dsnParams) []byte {
	t.Helper()
	out, err := buildDSN(p)
	if err != nil {
		t.Fatalf("buildDSN: %v", err)
	}
	dsnCheckLines(t, out)
	return out
}

// dsnCheckLines fails unless every line of msg ends in CRLF, there is no bare
// CR or LF, and no line is longer than 998 octets.
func dsnCheckLines(t *testing.T, msg []byte) {
	t.Helper()
	for i, c := range msg {
		if c == '\n' && (i == 0 || msg[i-1] != '\r') {
			t.Fatalf("bare LF at offset %d: %q", i, msg[max(0, i-40):i+1])
		}
		if c == '\r' && (i+1 == len(msg) || msg[i+1] != '\n') {
			t.Fatalf("bare CR at offset %d: %q", i, msg[max(0, i-40):i+1])
		}
	}
	if !bytes.HasSuffix(msg, []byte("\r\n")) {
		t.Fatalf("message does not end in CRLF: %q", msg[max(0, len(msg)-40):])
	}
	for n, l := range bytes.Split(msg, []byte("\r\n")) {
		if len(l) > maxLineLen {
			t.Fatalf("line %d is %d octets: %.60q...", n+1, len(l), l)
		}
	}
}

// dsnCheck7bit fails if msg has an octet above 127.
func dsnCheck7bit(t *testing.T, msg []byte) {
	t.Helper()
	for i, c := range msg {
		if c >= 0x80 {
			t.Fatalf("8-bit octet at offset %d: %q", i, msg[max(0, i-40):i+1])
		}
	}
}

// dsnPart is one body part of a parsed DSN.
type dsnPart struct {
	header textproto.MIMEHeader
	typ    string
	params map[string]string
	body   []byte
}

// parseDSN parses msg as a multipart/report the way a mail client would.
func parseDSN(t *testing.T, msg []byte) (*mail.Message, []dsnPart) {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(msg))
	if err != nil {
		t.Fatalf("mail.ReadMessage: %v", err)
	}
	typ, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil {
		t.Fatalf("Content-Type %q: %v", m.Header.Get("Content-Type"), err)
	}
	if typ != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("Content-Type = %q %v, want multipart/report; report-type=delivery-status", typ, params)
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	var parts []dsnPart
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("part %d: %v", len(parts)+1, err)
		}
		body, err := io.ReadAll(p)
		if err != nil {
			t.Fatalf("part %d: %v", len(parts)+1, err)
		}
		pt, pp, err := mime.ParseMediaType(p.Header.Get("Content-Type"))
		if err != nil {
			t.Fatalf("part %d Content-Type %q: %v", len(parts)+1, p.Header.Get("Content-Type"), err)
		}
		parts = append(parts, dsnPart{header: p.Header, typ: pt, params: pp, body: body})
	}
	var types []string
	for _, p := range parts {
		types = append(types, p.typ)
	}
	want := []string{"text/plain", "message/delivery-status", "text/rfc822-headers"}
	if !reflect.DeepEqual(types, want) {
		t.Fatalf("parts are %q, want %q", types, want)
	}
	return m, parts
}

// parseDSNStatus reads a message/delivery-status body: the per-message
// fields, then one block per recipient (RFC 3464 §2.1).
func parseDSNStatus(t *testing.T, body []byte) (textproto.MIMEHeader, []textproto.MIMEHeader) {
	t.Helper()
	r := textproto.NewReader(bufio.NewReader(bytes.NewReader(body)))
	msg, err := r.ReadMIMEHeader()
	if err != nil {
		t.Fatalf("per-message fields: %v\n%s", err, body)
	}
	var rcpts []textproto.MIMEHeader
	for {
		h, err := r.ReadMIMEHeader()
		if len(h) > 0 {
			rcpts = append(rcpts, h)
		}
		if errors.Is(err, io.EOF) {
			return msg, rcpts
		}
		if err != nil {
			t.Fatalf("recipient %d fields: %v\n%s", len(rcpts)+1, err, body)
		}
	}
}

// dsnFields makes a MIMEHeader of name, value pairs.
func dsnFields(kv ...string) textproto.MIMEHeader {
	h := textproto.MIMEHeader{}
	for i := 0; i < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

func dsnWantFields(t *testing.T, what string, got, want textproto.MIMEHeader) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s:\n got %v\nwant %v", what, got, want)
	}
}

func TestDSNFailed(t *testing.T) {
	p := dsnFailedParams()
	out := dsnMustBuild(t, p)
	dsnCheck7bit(t, out)
	m, parts := parseDSN(t, out)

	from, err := mail.ParseAddress(m.Header.Get("From"))
	if err != nil || from.Address != "MAILER-DAEMON@mx.sesame.test" || from.Name != "Mail Delivery System" {
		t.Errorf("From = %q (%v), want Mail Delivery System <MAILER-DAEMON@mx.sesame.test>", m.Header.Get("From"), err)
	}
	to, err := mail.ParseAddress(m.Header.Get("To"))
	if err != nil || to.Address != "alice@example.com" {
		t.Errorf("To = %q (%v), want <alice@example.com>", m.Header.Get("To"), err)
	}
	for name, want := range map[string]string{
		"Subject":           "Undelivered Mail Returned to Sender",
		"Message-ID":        "<dsn-Q123@mx.sesame.test>",
		"MIME-Version":      "1.0",
		"Auto-Submitted":    "auto-replied",
		"X-Sesame-Queue-ID": "Q123",
	} {
		if got := m.Header.Get(name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	if date, err := m.Header.Date(); err != nil || !date.Equal(dsnNow()) {
		t.Errorf("Date = %q (%v), want %v", m.Header.Get("Date"), err, dsnNow())
	}

	text := parts[0]
	if text.params["charset"] != "us-ascii" {
		t.Errorf("text part charset = %q, want us-ascii", text.params["charset"])
	}
	for _, want := range []string{
		"could not be delivered",
		"Queue ID: Q123",
		"<bob@example.org>\r\n    host mx.example.org said: 550 5.1.1 No such user\r\n",
		"<carol@nowhere.example>\r\n    5.1.2 (the recipient's domain does not exist",
	} {
		if !bytes.Contains(text.body, []byte(want)) {
			t.Errorf("text part lacks %q:\n%s", want, text.body)
		}
	}
	// Everything Sesame writes itself keeps to 78 columns.
	for _, part := range parts[:2] {
		for _, l := range strings.Split(string(part.body), "\r\n") {
			if len(l) > foldWidth {
				t.Errorf("%s line of %d octets: %q", part.typ, len(l), l)
			}
		}
	}

	msg, rcpts := parseDSNStatus(t, parts[1].body)
	dsnWantFields(t, "per-message fields", msg, dsnFields(
		"Reporting-MTA", "dns; mx.sesame.test",
		"X-Sesame-Queue-ID", "Q123",
		"Arrival-Date", "Wed, 04 Mar 2026 04:06:07 +0000",
	))
	if len(rcpts) != 2 {
		t.Fatalf("%d recipient blocks, want 2:\n%s", len(rcpts), parts[1].body)
	}
	dsnWantFields(t, "first recipient", rcpts[0], dsnFields(
		"Final-Recipient", "rfc822; bob@example.org",
		"Action", "failed",
		"Status", "5.1.1",
		"Remote-MTA", "dns; mx.example.org",
		"Diagnostic-Code", "smtp; 550 5.1.1 No such user",
		"Last-Attempt-Date", "Wed, 04 Mar 2026 05:05:07 +0000",
	))
	dsnWantFields(t, "second recipient", rcpts[1], dsnFields(
		"Final-Recipient", "rfc822; carol@nowhere.example",
		"Action", "failed",
		"Status", "5.1.2",
		"Last-Attempt-Date", "Wed, 04 Mar 2026 05:04:07 +0000",
	))

	header := dsnOriginal[:strings.Index(dsnOriginal, "\r\n\r\n")+4]
	if string(parts[2].body) != header {
		t.Errorf("returned header:\n got %q\nwant %q", parts[2].body, header)
	}
	if again := dsnMustBuild(t, p); !bytes.Equal(again, out) {
		t.Error("the same DSN built twice differs")
	}
}

func TestDSNDelayed(t *testing.T) {
	out := dsnMustBuild(t, dsnDelayedParams())
	dsnCheck7bit(t, out)
	m, parts := parseDSN(t, out)
	if got, want := m.Header.Get("Subject"), "Delayed Mail (still being retried)"; got != want {
		t.Errorf("Subject = %q, want %q", got, want)
	}
	if got := m.Header.Get("Auto-Submitted"); got != "auto-replied" {
		t.Errorf("Auto-Submitted = %q", got)
	}
	text := strings.Join(strings.Fields(string(parts[0].body)), " ")
	for _, want := range []string{
		"not yet been delivered",
		"keeps trying until Sun, 08 Mar 2026 05:06:07 +0000",
		"do not need to do anything",
		"host mx.example.org said: 451 4.3.0 Try again later",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("text part lacks %q:\n%s", want, parts[0].body)
		}
	}
	_, rcpts := parseDSNStatus(t, parts[1].body)
	if len(rcpts) != 1 {
		t.Fatalf("%d recipient blocks, want 1", len(rcpts))
	}
	dsnWantFields(t, "recipient", rcpts[0], dsnFields(
		"Final-Recipient", "rfc822; bob@example.org",
		"Action", "delayed",
		"Status", "4.4.1",
		"Remote-MTA", "dns; mx.example.org",
		"Diagnostic-Code", "smtp; 451 4.3.0 Try again later",
		"Last-Attempt-Date", "Wed, 04 Mar 2026 05:05:07 +0000",
		"Will-Retry-Until", "Sun, 08 Mar 2026 05:06:07 +0000",
	))
}

// A remote reply is outside text: however long, and whatever it holds, it
// must not break a line limit or start a field or a part of its own.
func TestDSNHostileDiagnostic(t *testing.T) {
	var diag strings.Builder
	diag.WriteString("550 5.7.1 ")
	diag.WriteString(strings.Repeat("x", 1500)) // one word longer than a line
	diag.WriteString("\r\nX-Injected: yes\r\n\r\n--sesame-dsn-\r\n\x00\x7f\xff \n\r")
	for diag.Len() < 5000 {
		diag.WriteString("spam and eggs\r\n")
	}
	p := dsnFailedParams()
	p.Recipients[0].Diagnostic = diag.String()
	p.Recipients[0].RemoteMTA = "mx.example.org\r\nX-Host: evil"
	out := dsnMustBuild(t, p)
	dsnCheck7bit(t, out)
	_, parts := parseDSN(t, out)
	_, rcpts := parseDSNStatus(t, parts[1].body)
	if len(rcpts) != 2 {
		t.Fatalf("%d recipient blocks, want 2:\n%s", len(rcpts), parts[1].body)
	}
	r := rcpts[0]
	for _, name := range []string{"X-Injected", "X-Host"} {
		if v := r.Get(name); v != "" {
			t.Errorf("remote text made a field %s: %q", name, v)
		}
	}
	if got := r.Get("Remote-MTA"); got != "dns; mx.example.orgX-Host:evil" {
		t.Errorf("Remote-MTA = %q", got)
	}
	code := r.Get("Diagnostic-Code")
	if !strings.HasPrefix(code, "smtp; 550 5.7.1 xxx") || !strings.HasSuffix(code, "...") {
		t.Errorf("Diagnostic-Code = %.80q...%q", code, code[max(0, len(code)-20):])
	}
	// The cap, plus the spaces the cut of the long word put in.
	if len(code) > len("smtp; ")+maxDiagnostic+2 {
		t.Errorf("Diagnostic-Code is %d octets, want at most about %d", len(code), maxDiagnostic)
	}
	if strings.ContainsAny(code, "\x00\x7f\r\n") {
		t.Errorf("Diagnostic-Code keeps control characters: %q", code)
	}
	if !strings.Contains(code, "X-Injected: yes --sesame-dsn- ? spam and eggs") {
		t.Errorf("Diagnostic-Code lost the text around the control characters: %q", code)
	}
}

func TestDSNReturnedHeader(t *testing.T) {
	long := "X-Long: " + strings.Repeat("y", 1000) + "\r\n"
	var huge strings.Builder
	for huge.Len() < 2*maxReturnedHeader {
		huge.WriteString("X-Filler: " + strings.Repeat("z", 90) + "\r\n")
	}
	for _, tc := range []struct {
		name, original, want string
	}{
		{"header only", "From: a@example.com\r\nSubject: hi\r\n", "From: a@example.com\r\nSubject: hi\r\n"},
		{"no final CRLF", "From: a@example.com\r\nSubject: hi", "From: a@example.com\r\nSubject: hi"},
		{"empty header", "\r\nbody\r\n", "\r\n"},
		{"empty message", "", ""},
		{"8-bit subject", "From: a@example.com\r\nSubject: Grüße, 日本\r\n\r\nbody\r\n", "From: a@example.com\r\nSubject: Grüße, 日本\r\n\r\n"},
		{"line too long", "From: a@example.com\r\n" + long + "Subject: hi\r\n\r\n", "From: a@example.com\r\n"},
		{"bare LF", "From: a@example.com\r\nSubject: hi\nX: y\r\n\r\n", "From: a@example.com\r\n"},
		{"bare CR", "From: a@example.com\r\nSubject: hi\rX: y\r\n\r\n", "From: a@example.com\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := dsnFailedParams()
			p.Original = []byte(tc.original)
			out := dsnMustBuild(t, p)
			m, parts := parseDSN(t, out)
			if got := string(parts[2].body); got != tc.want {
				t.Errorf("returned header:\n got %q\nwant %q", got, tc.want)
			}
			eightBit := tc.name == "8-bit subject"
			for _, h := range []textproto.MIMEHeader{textproto.MIMEHeader(m.Header), parts[2].header} {
				if got, want := h.Get("Content-Transfer-Encoding") == "8bit", eightBit; got != want {
					t.Errorf("Content-Transfer-Encoding: 8bit is %v, want %v", got, want)
				}
			}
			// The returned header is the only 8-bit text.
			dsnCheck7bit(t, bytes.Replace(out, parts[2].body, nil, 1))
		})
	}

	t.Run("capped", func(t *testing.T) {
		p := dsnFailedParams()
		p.Original = []byte(huge.String() + "\r\nbody\r\n")
		_, parts := parseDSN(t, dsnMustBuild(t, p))
		got := parts[2].body
		if len(got) > maxReturnedHeader || len(got) < maxReturnedHeader-102 {
			t.Errorf("returned header is %d octets, want just under %d", len(got), maxReturnedHeader)
		}
		if !bytes.HasPrefix(p.Original, got) || !bytes.HasSuffix(got, []byte("\r\n")) {
			t.Errorf("returned header is not the original's first lines")
		}
	})
}

func TestDSNNonASCIIRecipient(t *testing.T) {
	p := dsnFailedParams()
	p.Recipients = p.Recipients[:1]
	p.Recipients[0].Address = "jöran+x=y\\z@exämple.test"
	p.Original = []byte("Subject: hi\r\n\r\n")
	out := dsnMustBuild(t, p)
	dsnCheck7bit(t, out)
	_, parts := parseDSN(t, out)
	_, rcpts := parseDSNStatus(t, parts[1].body)
	want := `utf-8; j\x{F6}ran\x{2B}x\x{3D}y\x{5C}z@ex\x{E4}mple.test`
	if got := rcpts[0].Get("Final-Recipient"); got != want {
		t.Errorf("Final-Recipient = %q, want %q", got, want)
	}
	for _, tc := range []struct{ in, want string }{
		{"bob@example.org", "bob@example.org"},
		{"a+b=c@example.org", "a+b=c@example.org"}, // rfc822 type: as is
		{"bo\r\nb@example.org", "bob@example.org"},
		{"ü\x00@x", `\x{FC}@x`},
		{"日@x", `\x{65E5}@x`},
		{"😀 \xff@x", `\x{1F600}\x{20}\x{FFFD}@x`},
	} {
		if got := encodeAddress(tc.in); got != tc.want {
			t.Errorf("encodeAddress(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got := encodeAddress(strings.Repeat("é", 300) + "@x"); len(got) > maxAddressLen || !strings.HasSuffix(got, `\x{E9}`) {
		t.Errorf("long address encoded to %d octets ending %q", len(got), got[len(got)-10:])
	}
}

func TestDSNBoundary(t *testing.T) {
	content := []byte("some text")
	b1 := dsnBoundary("seed", content)
	if dsnBoundary("seed", content) != b1 {
		t.Fatal("boundary is not deterministic")
	}
	withB1 := append(bytes.Clone(content), b1...)
	b2 := dsnBoundary("seed", withB1, content)
	if b2 == b1 || bytes.Contains(withB1, []byte(b2)) {
		t.Errorf("boundary %q occurs in the content %q", b2, withB1)
	}
}

func TestDSNInvalid(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*dsnParams)
		want   string
	}{
		{"null sender", func(p *dsnParams) { p.Sender = "" }, "null sender"},
		{"null sender in brackets", func(p *dsnParams) { p.Sender = "<>" }, "null sender"},
		{"sender with CRLF", func(p *dsnParams) { p.Sender = "a@b\r\nBcc: c@d" }, "invalid sender"},
		{"no recipients", func(p *dsnParams) { p.Recipients = nil }, "no recipients"},
		{"mixed actions", func(p *dsnParams) { p.Recipients[1].Action = "delayed" }, "differs"},
		{"unknown action", func(p *dsnParams) { p.Recipients[0].Action = "bounced" }, `action "bounced"`},
		{"bad status", func(p *dsnParams) { p.Recipients[1].Status = "5.1" }, "invalid status"},
		{"status class 3", func(p *dsnParams) { p.Recipients[1].Status = "3.0.0" }, "invalid status"},
		{"empty address", func(p *dsnParams) { p.Recipients[1].Address = "" }, "empty address"},
		{"bad hostname", func(p *dsnParams) { p.Hostname = "mx sesame" }, "invalid hostname"},
		{"no queue id", func(p *dsnParams) { p.QueueID = "" }, "invalid queue id"},
		{"bad Message-ID", func(p *dsnParams) { p.MessageID = "dsn@mx" }, "invalid Message-ID"},
		{"no date", func(p *dsnParams) { p.Now = time.Time{} }, "no date"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := dsnFailedParams()
			tc.change(&p)
			out, err := buildDSN(p)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("buildDSN = %d octets, error %v; want an error with %q", len(out), err, tc.want)
			}
		})
	}
}

func TestDSNStatus(t *testing.T) {
	for _, tc := range []struct{ reply, fallback, want string }{
		{"550 5.1.1 No such user", "5.0.0", "5.1.1"},
		{"550-5.1.1 No such user", "5.0.0", "5.1.1"},
		{"452 4.2.2 Mailbox full", "4.0.0", "4.2.2"},
		{"554 5.7.123 Policy", "5.0.0", "5.7.123"},
		{"550 No such user", "5.1.0", "5.0.0"},
		{"550", "5.1.0", "5.0.0"},
		{"421 Service not available", "4.4.2", "4.0.0"},
		{"550 4.1.1 class disagrees", "5.1.0", "5.0.0"},
		{"550 5.1 too short", "5.1.0", "5.0.0"},
		{"550 5.1.1234 too long", "5.1.0", "5.0.0"},
		{"  550 5.2.2 padded", "5.0.0", "5.2.2"},
		{"5.1.2 no such domain", "5.0.0", "5.1.2"}, // our own reasons
		{"4.4.1 connection refused", "4.0.0", "4.4.1"},
		{"250 OK", "5.0.0", "5.0.0"},
		{"dial tcp: connection refused", "4.4.1", "4.4.1"},
		{"", "4.4.7", "4.4.7"},
		{"5501 5.1.1 four digits", "5.0.0", "5.0.0"},
	} {
		if got := dsnStatus(tc.reply, tc.fallback); got != tc.want {
			t.Errorf("dsnStatus(%q, %q) = %q, want %q", tc.reply, tc.fallback, got, tc.want)
		}
	}
}

// TestDSNPython has Python's email package parse DSNs: a second parser,
// written by other people.
func TestDSNPython(t *testing.T) {
	const python = "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		if os.Getenv("SESAME_E2E") == "1" {
			t.Fatalf("SESAME_E2E=1 but %s is missing: %v", python, err)
		}
		t.Skipf("%s is missing", python)
	}
	const script = `
import email, sys
m = email.message_from_bytes(sys.stdin.buffer.read())
assert m.get_content_type() == "multipart/report", m.get_content_type()
assert m.get_param("report-type") == "delivery-status", m.get_param("report-type")
assert m["Auto-Submitted"] == "auto-replied", m["Auto-Submitted"]
parts = m.get_payload()
assert len(parts) == 3, len(parts)
types = [p.get_content_type() for p in parts]
assert types == ["text/plain", "message/delivery-status", "text/rfc822-headers"], types
blocks = parts[1].get_payload()
assert len(blocks) == 1 + int(sys.argv[1]), len(blocks)
assert blocks[0]["Reporting-MTA"] == "dns; mx.sesame.test", blocks[0]["Reporting-MTA"]
assert blocks[1]["Final-Recipient"] == "rfc822; bob@example.org", blocks[1]["Final-Recipient"]
assert blocks[1]["Action"] == sys.argv[2], blocks[1]["Action"]
defects = m.defects + [d for p in parts for d in p.defects]
assert not defects, defects
`
	eightBit := dsnFailedParams()
	eightBit.Original = []byte("Subject: Grüße\r\n\r\n")
	for _, tc := range []struct {
		name   string
		p      dsnParams
		rcpts  string
		action string
	}{
		{"failed", dsnFailedParams(), "2", "failed"},
		{"delayed", dsnDelayedParams(), "1", "delayed"},
		{"8-bit header", eightBit, "2", "failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, python, "-c", script, tc.rcpts, tc.action)
			cmd.Stdin = bytes.NewReader(dsnMustBuild(t, tc.p))
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("python3 email parser: %v\n%s", err, out)
			}
		})
	}
}
