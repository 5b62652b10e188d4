package report

import (
	"encoding/base64"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestParseLenient covers what real senders get wrong, or do in one of the
// ways the RFCs allow, and what Parse accepts anyway.
func TestParseLenient(t *testing.T) {
	oneRcpt := "Final-Recipient: rfc822; a@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n"
	wantOne := []Recipient{{FinalRecipient: "a@example.com", Action: "failed", Status: "5.1.1"}}
	original := "Content-Type: text/rfc822-headers\r\n\r\nMessage-ID: <m1@shop.example.com>\r\nSubject: Hello\r\n"

	tests := []struct {
		name     string
		raw      []byte
		mta      string // DSN.ReportingMTA
		rcpts    []Recipient
		original Headers
	}{{
		name:  "no blank line after the per-message fields",
		raw:   build(dsnType, textPart, statusPart("Reporting-MTA: dns; mx.example.net\r\n"+oneRcpt)),
		mta:   "mx.example.net",
		rcpts: wantOne,
	}, {
		name:  "no per-message fields",
		raw:   build(dsnType, textPart, statusPart(oneRcpt)),
		rcpts: wantOne,
	}, {
		name:  "blank lines of spaces, several between groups, LF only",
		raw:   build(dsnType, textPart, statusPart("\n \nReporting-MTA: dns; mx.example.net\n \t\n\n"+strings.ReplaceAll(oneRcpt, "\r\n", "\n")+"\n\n")),
		mta:   "mx.example.net",
		rcpts: wantOne,
	}, {
		name:  "lines that are not fields are skipped",
		raw:   build(dsnType, textPart, statusPart("Reporting-MTA: dns; mx.example.net\r\n\r\n  orphan continuation\r\nnot a field\r\nX Bad Name: x\r\n"+oneRcpt)),
		mta:   "mx.example.net",
		rcpts: wantOne,
	}, {
		name:  "a group of junk lines only is skipped",
		raw:   build(dsnType, textPart, statusPart("Reporting-MTA: dns; mx.example.net\r\n\r\n"+oneRcpt+"\r\n-- \r\nsignature\r\n")),
		mta:   "mx.example.net",
		rcpts: wantOne,
	}, {
		name:  "unquoted boundary with =, which mime.ParseMediaType refuses",
		raw:   []byte(strings.ReplaceAll(string(build(`multipart/report; report-type=delivery-status; boundary=----=_Part_1`, textPart, statusPart(oneRcpt))), "--b", "------=_Part_1")),
		rcpts: wantOne,
	}, {
		name:  "a preamble line longer than multipart.Reader's buffer",
		raw:   []byte(strings.Replace(string(build(dsnType, textPart, statusPart(oneRcpt))), "\r\n\r\n--b", "\r\n\r\n"+strings.Repeat("preamble ", 1000)+"\r\n--b", 1)),
		rcpts: wantOne,
	}, {
		name:  "repeated parameter: the first counts",
		raw:   build(`multipart/report; report-type=delivery-status; boundary="b"; boundary="c"`, textPart, statusPart(oneRcpt)),
		rcpts: wantOne,
	}, {
		name:  "base64 delivery-status",
		raw:   build(dsnType, textPart, "Content-Type: message/delivery-status\r\nContent-Transfer-Encoding: base64\r\n\r\n"+wrap76(base64.StdEncoding.EncodeToString([]byte(oneRcpt+"Remote-MTA: dns; mx.example.com\r\n")))),
		rcpts: []Recipient{{FinalRecipient: "a@example.com", Action: "failed", Status: "5.1.1", RemoteMTA: "mx.example.com"}},
	}, {
		name: "quoted-printable global-delivery-status, global report-type",
		raw: build(`multipart/report; report-type=global-delivery-status; boundary=b`, textPart,
			"Content-Type: message/global-delivery-status\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"+
				"Final-Recipient: utf-8; <j=C3=BCrgen@example.de>\r\nAction: delayed\r\nStatus: 4.2.2 (mailbox full=\r\n)\r\n"),
		rcpts: []Recipient{{FinalRecipient: "jürgen@example.de", Action: "delayed", Status: "4.2.2"}},
	}, {
		name: "report inside a multipart/mixed, after a gateway's notice",
		raw: build(`multipart/mixed; boundary="b"`,
			"Content-Type: text/plain\r\n\r\nScanned by ExampleGateway.",
			"Content-Type: "+strings.ReplaceAll(dsnType, `"b"`, `"inner"`)+"\r\n\r\n"+
				"--inner\r\n"+textPart+"\r\n--inner\r\n"+statusPart(oneRcpt)+"\r\n--inner\r\n"+original+"\r\n--inner--"),
		rcpts:    wantOne,
		original: Headers{MessageID: "m1@shop.example.com", Subject: "Hello"},
	}, {
		name:     "original before the delivery-status part",
		raw:      build(dsnType, original, statusPart(oneRcpt)),
		rcpts:    wantOne,
		original: Headers{MessageID: "m1@shop.example.com", Subject: "Hello"},
	}, {
		name:  "no original",
		raw:   build(dsnType, textPart, statusPart(oneRcpt)),
		rcpts: wantOne,
	}, {
		name: "original cut short, without a closing boundary",
		raw: []byte(strings.TrimSuffix(string(build(dsnType, textPart, statusPart(oneRcpt),
			"Content-Type: message/rfc822\r\n\r\n\r\nMessage-ID: <m2@shop.example.com>\r\nSubject: Cut\r\n here\r\nFrom: Ex")), "\r\n--b--\r\n")),
		rcpts:    wantOne,
		original: Headers{MessageID: "m2@shop.example.com", From: "Ex", Subject: "Cut here"},
	}, {
		name:  "cut right after the delimiter that ends the delivery-status part",
		raw:   []byte(strings.TrimSuffix(string(build(dsnType, textPart, statusPart(oneRcpt))), "--\r\n")),
		rcpts: wantOne,
	}, {
		name: "types missing, comments, odd spacing",
		raw: build(dsnType, textPart, statusPart(
			"Reporting-MTA:mx.example.net(the reporter)\r\n\r\n"+
				"Final-Recipient :a@example.com\r\nAction:Failed (gave up)\r\nStatus:5.1.1(unknown)\r\n"+
				"Remote-MTA: [192.0.2.7]\r\nDiagnostic-Code: 550 5.1.1; no such user (really)\r\n"+
				"Last-Attempt-Date: yesterday\r\n")),
		mta: "mx.example.net",
		rcpts: []Recipient{{FinalRecipient: "a@example.com", Action: "failed", Status: "5.1.1",
			RemoteMTA: "[192.0.2.7]", Diagnostic: "550 5.1.1; no such user (really)"}},
	}, {
		name: "a field given twice: the first counts",
		raw: build(dsnType, textPart, statusPart(
			"Final-Recipient: rfc822; a@example.com\r\nFinal-Recipient: rfc822; b@example.com\r\n"+
				"Action: failed\r\nAction: delayed\r\nStatus: 5.1.1\r\nStatus: 4.0.0\r\n")),
		rcpts: wantOne,
	}, {
		name:  "no Action",
		raw:   build(dsnType, textPart, statusPart("Final-Recipient: rfc822; a@example.com\r\nStatus: 5.1.1\r\n")),
		rcpts: []Recipient{{FinalRecipient: "a@example.com", Status: "5.1.1"}},
	}, {
		name:  "quoted local part with parentheses",
		raw:   build(dsnType, textPart, statusPart(`Final-Recipient: rfc822; "a(b)c"@example.com (comment)`+"\r\nAction: failed\r\nStatus: 5.1.1\r\n")),
		rcpts: []Recipient{{FinalRecipient: `"a(b)c"@example.com`, Action: "failed", Status: "5.1.1"}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Parse(tt.raw)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if r.Kind != KindDSN || r.DSN == nil || r.Feedback != nil {
				t.Fatalf("Parse = %+v, want a DSN", r)
			}
			if r.DSN.ReportingMTA != tt.mta {
				t.Errorf("ReportingMTA = %q, want %q", r.DSN.ReportingMTA, tt.mta)
			}
			if !reflect.DeepEqual(r.DSN.Recipients, tt.rcpts) {
				t.Errorf("Recipients:\n got %+v\nwant %+v", r.DSN.Recipients, tt.rcpts)
			}
			got := r.Original
			got.Raw = nil
			if !reflect.DeepEqual(got, tt.original) {
				t.Errorf("Original = %+v, want %+v", got, tt.original)
			}
			if (r.Original.Raw == nil) != (tt.original.MessageID == "") {
				t.Errorf("Original.Raw = %v", r.Original.Raw)
			}
		})
	}
}

func TestFeedbackLenient(t *testing.T) {
	r, err := Parse(build(arfType, textPart, feedbackPart(
		"feedback-type: Not-Spam (moved to inbox)\r\n"+
			"User-Agent: ExampleFBL/1.0\r\n  (folded)\r\n"+
			"Version: 1\r\n"+
			"\r\n"+ // a stray blank line: the fields after it still count
			"Original-Envelope-Id: 7GFC3CTHMRJQDUDB\r\n"+
			"Original-Rcpt-To: \r\n"+ // redacted: skipped
			"Original-Rcpt-To: <x@example.net>\r\n"+
			"Arrival-Date: not a date\r\n"+
			"Received-Date: Tue, 4 Mar 2025 10:00:00 +0100\r\n"+
			"Source-IP: 192.0.2.25 (relay.sesame.example)\r\n"+
			"Reporting-MTA: mail.example.net\r\n")))
	if err != nil {
		t.Fatal(err)
	}
	want := &Feedback{
		Type:               "not-spam",
		UserAgent:          "ExampleFBL/1.0 (folded)",
		Version:            "1",
		OriginalEnvelopeID: "7GFC3CTHMRJQDUDB",
		OriginalRcptTo:     []string{"x@example.net"},
		ArrivalDate:        time.Date(2025, 3, 4, 9, 0, 0, 0, time.UTC),
		SourceIP:           "192.0.2.25",
		ReportingMTA:       "mail.example.net",
	}
	got := *r.Feedback
	got.ArrivalDate = got.ArrivalDate.UTC()
	if r.Kind != KindARF || r.DSN != nil || !reflect.DeepEqual(&got, want) {
		t.Errorf("Parse = %s %+v, want %+v", r.Kind, got, *want)
	}
}

func TestRead(t *testing.T) {
	// An endless message: Read stops after MaxSize+1 bytes.
	src := &countingReader{}
	_, err := Read(src)
	if err == nil || !strings.Contains(err.Error(), "over the 10485760 byte limit") {
		t.Errorf("Read of an endless message: %v", err)
	}
	if src.n > MaxSize+1 {
		t.Errorf("Read read %d bytes, want at most %d", src.n, MaxSize+1)
	}
	// MaxSize bytes exactly are read and parsed.
	raw := build(dsnType, textPart, statusPart(recipients(1)))
	raw = append(raw, strings.Repeat("x", MaxSize-len(raw))...)
	if _, err := Read(strings.NewReader(string(raw))); err != nil {
		t.Errorf("Read of MaxSize bytes: %v", err)
	}
}

// countingReader is an endless stream of "x" that counts what is read.
type countingReader struct{ n int }

func (r *countingReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	r.n += len(p)
	return len(p), nil
}

// wrap76 cuts s into lines of 76 characters, as base64 in mail is.
func wrap76(s string) string {
	var b strings.Builder
	for len(s) > 76 {
		b.WriteString(s[:76] + "\r\n")
		s = s[76:]
	}
	b.WriteString(s)
	return b.String()
}
