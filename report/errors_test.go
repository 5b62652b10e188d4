package report

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

const (
	dsnType = `multipart/report; report-type=delivery-status; boundary="b"`
	arfType = `multipart/report; report-type=feedback-report; boundary="b"`
	// textPart is the human-readable first part of a report.
	textPart = "Content-Type: text/plain\r\n\r\nThe message could not be delivered."
)

// build returns a message of Content-Type ct whose parts, separated by the
// boundary "b", are parts; each part is its header, an empty line and its
// body.
func build(ct string, parts ...string) []byte {
	var b strings.Builder
	b.WriteString("From: MAILER-DAEMON@mail.example.net\r\nMIME-Version: 1.0\r\nContent-Type: " + ct + "\r\n\r\n")
	for _, p := range parts {
		b.WriteString("--b\r\n" + p + "\r\n")
	}
	b.WriteString("--b--\r\n")
	return []byte(b.String())
}

// statusPart is a message/delivery-status part with the given content.
func statusPart(content string) string {
	return "Content-Type: message/delivery-status\r\n\r\n" + content
}

// feedbackPart is a message/feedback-report part with the given content.
func feedbackPart(content string) string {
	return "Content-Type: message/feedback-report\r\n\r\n" + content
}

const perMessage = "Reporting-MTA: dns; mail.example.net\r\nArrival-Date: Tue, 4 Mar 2025 10:14:58 +0000\r\n\r\n"

// nested returns a message of n multipart/mixed, each the only part of the
// one before, around a text part.
func nested(n int) []byte {
	var b strings.Builder
	b.WriteString("From: a@example.net\r\nContent-Type: multipart/mixed; boundary=\"n0\"\r\n\r\n")
	for i := range n {
		fmt.Fprintf(&b, "--n%d\r\nContent-Type: multipart/mixed; boundary=\"n%d\"\r\n\r\n", i, i+1)
	}
	fmt.Fprintf(&b, "--n%d\r\nContent-Type: text/plain\r\n\r\nhello\r\n", n)
	for i := n; i >= 0; i-- {
		fmt.Fprintf(&b, "--n%d--\r\n", i)
	}
	return []byte(b.String())
}

// recipients returns n per-recipient groups.
func recipients(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "Final-Recipient: rfc822; user%d@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n", i)
	}
	return b.String()
}

func TestParseErrors(t *testing.T) {
	tooManyParts := make([]string, MaxParts)
	for i := range tooManyParts {
		tooManyParts[i] = textPart
	}
	tooManyParts = append(tooManyParts, statusPart(perMessage+recipients(1)))

	tests := []struct {
		name  string
		raw   []byte
		is    error  // what the error wraps, if anything
		want  string // the whole error text
		match string // or a part of it, when it is long
	}{{
		name: "not multipart",
		raw:  readSample(t, "bad-not-multipart.eml"),
		is:   ErrNotReport,
		want: `report: not a DSN or feedback report: the message is "text/plain", not multipart/report`,
	}, {
		name: "no Content-Type",
		raw:  []byte("From: someone@example.net\r\nSubject: hi\r\n\r\nhello\r\n"),
		is:   ErrNotReport,
		want: "report: not a DSN or feedback report: the message has no Content-Type (so it is text/plain)",
	}, {
		name: "empty input",
		raw:  nil,
		is:   ErrNotReport,
		want: "report: not a DSN or feedback report: the message has no Content-Type (so it is text/plain)",
	}, {
		name: "read receipt",
		raw:  readSample(t, "bad-read-receipt.eml"),
		is:   ErrNotReport,
		want: `report: not a DSN or feedback report: report-type is "disposition-notification"`,
	}, {
		name: "no report in a multipart/mixed",
		raw:  build(`multipart/mixed; boundary="b"`, textPart),
		is:   ErrNotReport,
		want: `report: not a DSN or feedback report: no multipart/report in the "multipart/mixed" message`,
	}, {
		name: "report-type missing",
		raw:  readSample(t, "bad-no-report-type.eml"),
		want: "report: multipart/report without a report-type parameter",
	}, {
		name: "boundary missing",
		raw:  build(`multipart/report; report-type=delivery-status`, textPart),
		want: "report: multipart/report without a boundary parameter",
	}, {
		name: "boundary too long",
		raw:  build(`multipart/report; report-type=delivery-status; boundary=`+strings.Repeat("x", 201), textPart),
		want: "report: multipart/report boundary is 201 characters, more than 200",
	}, {
		name: "boundary not in the body",
		raw:  []byte("Content-Type: " + dsnType + "\r\n\r\nThis is not MIME.\r\n"),
		want: `report: multipart/report has no parts: its boundary "b" is not in the body`,
	}, {
		name: "header only",
		raw:  []byte("Content-Type: " + dsnType + "\r\n"),
		want: `report: multipart/report has no parts: its boundary "b" is not in the body`,
	}, {
		name: "delivery-status part empty",
		raw:  readSample(t, "bad-empty-status.eml"),
		want: "report: the message/delivery-status part is empty",
	}, {
		name: "delivery-status part missing",
		raw:  build(dsnType, textPart, "Content-Type: text/rfc822-headers\r\n\r\nMessage-ID: <x@y>"),
		want: "report: multipart/report; report-type=delivery-status has no message/delivery-status (or message/global-delivery-status) part",
	}, {
		name: "truncated in the delivery-status part",
		raw:  readSample(t, "bad-truncated.eml"),
		want: "report: the message/delivery-status part is truncated: the message ends before its closing boundary",
	}, {
		name: "truncated in the first part",
		raw:  []byte("Content-Type: " + dsnType + "\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nThe message could"),
		want: "report: multipart/report is truncated: it ends in part 1, before the closing boundary",
	}, {
		name: "malformed part header",
		raw:  build(dsnType, textPart, "Content-Type message/delivery-status\r\n\r\n"+perMessage),
		want: `report: multipart/report part 2: malformed MIME header: missing colon: "Content-Type message/delivery-status"`,
	}, {
		name: "bad base64",
		raw:  build(dsnType, textPart, "Content-Type: message/delivery-status\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!!"),
		want: "report: the message/delivery-status part: illegal base64 data at input byte 0",
	}, {
		name: "per-message fields only",
		raw:  build(dsnType, textPart, statusPart(perMessage)),
		want: "report: the message/delivery-status part has no per-recipient fields, only reporting-mta, arrival-date",
	}, {
		name: "no fields at all",
		raw:  build(dsnType, textPart, statusPart("this is not a field\r\n\r\nnor this\r\n")),
		want: "report: the message/delivery-status part has no fields",
	}, {
		name: "no Final-Recipient",
		raw:  build(dsnType, textPart, statusPart(perMessage+"Original-Recipient: rfc822; a@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n")),
		want: "report: message/delivery-status, recipient 1: no Final-Recipient field among original-recipient, action, status",
	}, {
		name: "Final-Recipient without an address",
		raw:  build(dsnType, textPart, statusPart(perMessage+"Final-Recipient: rfc822; <>\r\nAction: failed\r\nStatus: 5.1.1\r\n")),
		want: `report: message/delivery-status, recipient 1: Final-Recipient "rfc822; <>" has no address`,
	}, {
		name: "bad Action",
		raw:  build(dsnType, textPart, statusPart(perMessage+"Final-Recipient: rfc822; a@example.com\r\nAction: bounced\r\nStatus: 5.1.1\r\n")),
		want: `report: message/delivery-status, recipient 1: "a@example.com": Action "bounced" is not failed, delayed, delivered, relayed or expanded`,
	}, {
		name: "no Status",
		raw:  build(dsnType, textPart, statusPart(perMessage+"Final-Recipient: rfc822; a@example.com\r\nAction: failed\r\n")),
		want: `report: message/delivery-status, recipient 1: "a@example.com" has no Status field`,
	}, {
		name: "bad Status",
		raw:  build(dsnType, textPart, statusPart(perMessage+"Final-Recipient: rfc822; a@example.com\r\nAction: failed\r\nStatus: 550 (user unknown)\r\n")),
		want: `report: message/delivery-status, recipient 1: "a@example.com": Status "550 (user unknown)" is not a class.subject.detail code`,
	}, {
		name: "control characters are quoted",
		raw:  build(dsnType, textPart, statusPart(perMessage+"Final-Recipient: rfc822; a\x1b[31m@example.com\r\nAction: failed\r\nStatus: 5.x\r\n")),
		want: `report: message/delivery-status, recipient 1: "a\x1b[31m@example.com": Status "5.x" is not a class.subject.detail code`,
	}, {
		name: "feedback report without Feedback-Type",
		raw:  build(arfType, textPart, feedbackPart("User-Agent: ExampleFBL/1.0\r\nVersion: 1\r\n")),
		want: "report: the message/feedback-report part has no Feedback-Type field (fields: user-agent, version)",
	}, {
		name: "feedback report part empty",
		raw:  build(arfType, textPart, feedbackPart("")),
		want: "report: the message/feedback-report part is empty",
	}, {
		name: "feedback report part missing",
		raw:  build(arfType, textPart),
		want: "report: multipart/report; report-type=feedback-report has no message/feedback-report part",
	}, {
		name:  "20 MiB",
		raw:   append(build(dsnType, textPart, statusPart(perMessage+recipients(1))), make([]byte, 20<<20)...),
		is:    ErrLimit,
		match: "report: limit exceeded: the message is 20971",
	}, {
		name: "1000 nested multiparts",
		raw:  nested(1000),
		is:   ErrLimit,
		want: "report: limit exceeded: multiparts nested more than 8 deep",
	}, {
		name: "too many parts",
		raw:  build(dsnType, tooManyParts...),
		is:   ErrLimit,
		want: "report: limit exceeded: more than 50 MIME parts",
	}, {
		name: "too many recipients",
		raw:  build(dsnType, textPart, statusPart(perMessage+recipients(MaxRecipients+1))),
		is:   ErrLimit,
		want: "report: limit exceeded: the message/delivery-status part has more than 1000 recipients",
	}, {
		name: "too many recipients, no per-message fields",
		raw:  build(dsnType, textPart, statusPart(recipients(MaxRecipients+1))),
		is:   ErrLimit,
		want: "report: limit exceeded: the message/delivery-status part has more than 1000 recipients",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Parse(tt.raw)
			if err == nil {
				t.Fatalf("Parse = %+v, want an error", r)
			}
			if r != nil {
				t.Errorf("Parse returned a report with its error: %+v", r)
			}
			got := err.Error()
			if tt.want != "" && got != tt.want {
				t.Errorf("error:\n got %s\nwant %s", got, tt.want)
			}
			if tt.match != "" && !strings.Contains(got, tt.match) {
				t.Errorf("error %q does not contain %q", got, tt.match)
			}
			for _, sentinel := range []error{ErrNotReport, ErrLimit} {
				if errors.Is(err, sentinel) != (sentinel == tt.is) {
					t.Errorf("errors.Is(err, %v) = %v", sentinel, !(sentinel == tt.is))
				}
			}
			checkErrorText(t, err)
		})
	}
}

// checkErrorText checks what the package doc promises of every error: one
// line of printable UTF-8, short, starting with "report: ".
func checkErrorText(t testing.TB, err error) {
	t.Helper()
	s := err.Error()
	if !strings.HasPrefix(s, "report: ") {
		t.Errorf("error %q does not start with \"report: \"", s)
	}
	if len(s) > 600 {
		t.Errorf("error is %d bytes long: %.100q...", len(s), s)
	}
	if !utf8.ValidString(s) {
		t.Errorf("error is not UTF-8: %q", s)
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			t.Errorf("error has the character %U: %q", r, s)
			break
		}
	}
}

// TestTruncatedAnywhere cuts a DSN at every byte: before the end of its
// delivery-status part it is an error, after it the report is whole.
func TestTruncatedAnywhere(t *testing.T) {
	raw := readSample(t, "postfix-failed-delayed.eml")
	full, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	const delim = "\r\n--4Zq8Rk1Xy2z9vBd.1741083307/mail.example.net\r\nContent-Description: Undelivered Message"
	end := strings.Index(string(raw), delim) // where the delivery-status part ends
	if end < 0 {
		t.Fatal("sample changed: delimiter not found")
	}
	for cut := range len(raw) {
		r, err := Parse(raw[:cut])
		switch {
		case cut <= end:
			if err == nil {
				t.Fatalf("cut at %d (before %d): no error", cut, end)
			}
			checkErrorText(t, err)
		case cut >= end+len(delim):
			if err != nil {
				t.Fatalf("cut at %d (after %d): %v", cut, end+len(delim), err)
			}
			if !equalRecipients(r.DSN.Recipients, full.DSN.Recipients) {
				t.Fatalf("cut at %d: recipients %+v, want %+v", cut, r.DSN.Recipients, full.DSN.Recipients)
			}
		}
	}
}

func equalRecipients(a, b []Recipient) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if !x.LastAttempt.Equal(y.LastAttempt) {
			return false
		}
		x.LastAttempt, y.LastAttempt = time.Time{}, time.Time{}
		if x != y {
			return false
		}
	}
	return true
}
