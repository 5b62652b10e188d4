package report

// Feedback reports: the message/feedback-report part (RFC 5965 §3.1).

import (
	"strings"
	"time"
)

// Feedback is a feedback report: a complaint about one message, usually a
// recipient's "this is spam" sent on by the mailbox provider's feedback
// loop.
type Feedback struct {
	// Type is Feedback-Type, lower case: abuse, fraud, virus, other (RFC
	// 5965 §7.3), not-spam (RFC 6430), auth-failure (RFC 6591), or another
	// registered type. Never empty.
	Type      string
	UserAgent string // User-Agent: the software that made the report
	Version   string // Version of the format, "1" (older reports say "0.1")
	// OriginalEnvelopeID is the envelope id (ENVID, RFC 3461 §4.4) the
	// message was sent with, "" if the report does not give it.
	OriginalEnvelopeID string
	OriginalMailFrom   string    // the envelope sender, without angle brackets
	OriginalRcptTo     []string  // every Original-Rcpt-To, without angle brackets
	ArrivalDate        time.Time // Arrival-Date (or the older Received-Date); zero if absent or unreadable
	SourceIP           string    // Source-IP: the address the message came from
	ReportedDomain     []string  // every Reported-Domain
	ReportingMTA       string    // Reporting-MTA without its type, e.g. "mail.example.net"
}

// parseFeedback reads the content of a message/feedback-report part (mt is
// its media type). The fields are one group; should blank lines split
// them, the groups are read as one.
func parseFeedback(mt string, data []byte) (*Feedback, error) {
	if isBlank(data) {
		return nil, errorf("the %s part is empty", mt)
	}
	var fields []field
	for rest := data; len(rest) > 0 && len(fields) < maxFields; {
		var fs []field
		fs, rest = scanFields(rest, maxFields-len(fields))
		fields = append(fields, fs...)
	}
	fb := &Feedback{}
	var received time.Time
	for _, f := range fields {
		switch f.name {
		case "feedback-type":
			fb.Type = first(fb.Type, strings.ToLower(stripComments(f.value)))
		case "user-agent":
			fb.UserAgent = first(fb.UserAgent, f.value)
		case "version":
			fb.Version = first(fb.Version, stripComments(f.value))
		case "original-envelope-id":
			fb.OriginalEnvelopeID = first(fb.OriginalEnvelopeID, f.value)
		case "original-mail-from":
			fb.OriginalMailFrom = first(fb.OriginalMailFrom, unbracket(stripComments(f.value)))
		case "original-rcpt-to":
			if a := unbracket(stripComments(f.value)); a != "" {
				fb.OriginalRcptTo = append(fb.OriginalRcptTo, a)
			}
		case "arrival-date":
			if fb.ArrivalDate.IsZero() {
				fb.ArrivalDate = parseDate(f.value)
			}
		case "received-date": // the name in drafts of RFC 5965, still seen
			if received.IsZero() {
				received = parseDate(f.value)
			}
		case "source-ip":
			fb.SourceIP = first(fb.SourceIP, stripComments(f.value))
		case "reported-domain":
			if d := stripComments(f.value); d != "" {
				fb.ReportedDomain = append(fb.ReportedDomain, d)
			}
		case "reporting-mta":
			fb.ReportingMTA = first(fb.ReportingMTA, mtaName(f.value))
		}
	}
	if fb.ArrivalDate.IsZero() {
		fb.ArrivalDate = received
	}
	if fb.Type == "" {
		return nil, errorf("the %s part has no Feedback-Type field (fields: %s)", mt, fieldNames(fields))
	}
	return fb, nil
}
