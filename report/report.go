// Package report reads the reports mailbox providers send back to a bulk
// sender: delivery status notifications, which say that mail bounced or is
// delayed (DSNs, RFC 3464, and their internationalized form, RFC 6533), and
// complaint feedback reports, which say that a recipient marked mail as spam
// (ARF, RFC 5965). Sesame's inbound bounce listener hands every message it
// receives to Parse and acts on the result.
//
// A report is a multipart/report (RFC 6522) whose report-type parameter is
// delivery-status, global-delivery-status or feedback-report. Its
// machine-readable part (message/delivery-status,
// message/global-delivery-status or message/feedback-report) is read field
// by field. The returned or attached original message (message/rfc822,
// message/global, text/rfc822-headers or message/global-headers) is read for
// its header only: that is where the caller finds its own Message-ID and, in
// Sesame's Received field, its queue id. The multipart/report is normally
// the whole message, but one that a gateway wrapped in a multipart/mixed or
// multipart/signed is found too.
//
// The parser is strict where the RFCs say MUST and the meaning depends on
// it, and lenient about the rest:
//
//   - every Recipient of a DSN has a FinalRecipient and a Status of the
//     form class.subject.detail (RFC 3463), and its Action, if given, is
//     failed, delayed, delivered, relayed or expanded (RFC 3464 §2.3.3), or
//     Parse fails;
//   - every Feedback has a Type;
//   - dates that do not parse are left zero, unknown fields and lines that
//     are not fields are skipped, and the original message may be missing,
//     cut short or malformed without failing the report.
//
// Parse never panics and bounds its work. It refuses input larger than
// MaxSize, more than MaxParts MIME parts, multiparts nested deeper than
// MaxDepth and DSNs with more than MaxRecipients recipients, with an error
// that wraps ErrLimit. Mail that is not a DSN or an ARF report (a person or
// an auto-responder answering the bounce address) gives an error that wraps
// ErrNotReport. Every error is one line that says what was wrong and quotes
// at most a short, escaped excerpt of the input, so it can be shown to an
// operator as it is.
package report

import (
	"errors"
	"fmt"
	"io"
	"net/textproto"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits on the work Parse does for one message.
const (
	MaxSize       = 10 << 20 // bytes of input
	MaxParts      = 50       // MIME parts read, at every level together
	MaxDepth      = 8        // multiparts inside multiparts
	MaxRecipients = 1000     // per-recipient groups in one DSN
)

var (
	// ErrNotReport is wrapped by the error for mail that is not a DSN or an
	// ARF report: a Content-Type other than multipart/report, or a
	// report-type this package does not read (such as a read receipt's
	// disposition-notification).
	ErrNotReport = errors.New("not a DSN or feedback report")
	// ErrLimit is wrapped by the error for input over one of the limits.
	ErrLimit = errors.New("limit exceeded")
)

// Kind says which kind of report a Report is.
type Kind string

const (
	KindDSN Kind = "dsn" // a delivery status notification: Report.DSN is set
	KindARF Kind = "arf" // a feedback report: Report.Feedback is set
)

// Report is one parsed report.
type Report struct {
	Kind     Kind
	DSN      *DSN      // set when Kind is KindDSN
	Feedback *Feedback // set when Kind is KindARF
	// Original is the header of the message the report is about, as
	// returned in a DSN or attached to a feedback report. It is empty when
	// the report came without it.
	Original Headers
}

// Headers is the header of an original message.
type Headers struct {
	MessageID string   // without its angle brackets
	From      string   // the field as written, unfolded, encoded-words decoded
	To        string   // the field as written, unfolded, encoded-words decoded
	Subject   string   // unfolded, encoded-words decoded
	Received  []string // every Received field, unfolded, topmost first
	// Raw holds every field (the first 1000), unfolded but not decoded,
	// under its canonical key: Raw.Get("Message-ID") works.
	Raw textproto.MIMEHeader
}

// Parse parses one report: a whole message, header and body, with CRLF or
// LF line endings.
func Parse(raw []byte) (*Report, error) {
	if len(raw) > MaxSize {
		return nil, limitErr("the message is %d bytes, over the %d byte limit", len(raw), MaxSize)
	}
	p := &parser{}
	return p.message(raw)
}

// Read parses the report read from r. It reads at most MaxSize+1 bytes, so
// a larger message fails with ErrLimit without being read to its end.
func Read(r io.Reader) (*Report, error) {
	raw, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("report: reading the message: %w", err)
	}
	if len(raw) > MaxSize {
		return nil, limitErr("the message is over the %d byte limit", MaxSize)
	}
	return Parse(raw)
}

// errorf returns an error for malformed input, prefixed with the package
// name.
func errorf(format string, args ...any) error {
	return fmt.Errorf("report: "+format, args...)
}

// limitErr returns an error that wraps ErrLimit.
func limitErr(format string, args ...any) error {
	return fmt.Errorf("report: %w: %s", ErrLimit, fmt.Sprintf(format, args...))
}

// notReport returns an error that wraps ErrNotReport.
func notReport(format string, args ...any) error {
	return fmt.Errorf("report: %w: %s", ErrNotReport, fmt.Sprintf(format, args...))
}

// excerpt is s made safe and short for an error message: quoted, with
// control and invalid bytes escaped, cut after 60 bytes.
func excerpt(s string) string {
	const max = 60
	if len(s) > max {
		return fmt.Sprintf("%q...", s[:max])
	}
	return fmt.Sprintf("%q", s)
}

// errText is the text of err, from another package, made safe for an
// error message: what is not printable UTF-8 replaced by "?", cut after 150
// bytes.
func errText(err error) string {
	const max = 150
	var b strings.Builder
	for _, r := range err.Error() {
		if b.Len() >= max {
			b.WriteString("...")
			break
		}
		if !unicode.IsPrint(r) || r == utf8.RuneError {
			r = '?'
		}
		b.WriteRune(r)
	}
	return b.String()
}
