package smtpd

import "strings"

// Feedback-ID (Gmail Postmaster Tools' feedback loop): every message leaves
// with a field
//
//	Feedback-ID: CAMPAIGN:CREDENTIAL:DOMAIN:sesame
//
// so Gmail reports spam rates per stream. Gmail reads up to four
// colon-separated fields, the last the sender's id; the first three are
// the aggregation keys (here: the configuration set, the credential that
// sent, the From domain). It is added before signing, so the signature
// covers it (dkim/sign.go lists Feedback-ID).
//
// A client that set its own Feedback-ID keeps it and Sesame adds none: the
// sender knows its streams better, and two such fields would leave Gmail
// to pick one.
//
// The configuration set: Sesame has none of its own yet. A client names one
// with the X-SES-CONFIGURATION-SET header, as with SES; that header is
// removed before signing (it is an instruction to Sesame, not for the
// recipient), as SES removes it. Without it the first field is
// defaultConfigSet.

const (
	configSetField   = "X-SES-CONFIGURATION-SET"
	defaultConfigSet = "default"
	feedbackSenderID = "sesame"
	// maxFeedbackPart bounds each field, keeping the line well under
	// RFC 5322's 998 characters.
	maxFeedbackPart = 64
)

// feedbackID returns the Feedback-ID field (with its CRLF) for a message
// in configuration set configSet ("" for none), sent by credential cred
// with From in domain.
func feedbackID(configSet, cred, domain string) string {
	if configSet = feedbackPart(configSet); configSet == "" {
		configSet = defaultConfigSet
	}
	return "Feedback-ID: " + configSet + ":" + feedbackPart(cred) + ":" + feedbackPart(domain) + ":" + feedbackSenderID + "\r\n"
}

// feedbackPart makes s safe as one field of a Feedback-ID: ASCII letters,
// digits and ._-+=@ kept, anything else (a colon would shift the fields,
// CR or LF would end the header line, non-ASCII is not allowed in a header
// without encoding) replaced by '-', at most maxFeedbackPart bytes.
func feedbackPart(s string) string {
	s = strings.TrimSpace(s)
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < maxFeedbackPart; i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '.', c == '_', c == '-', c == '+', c == '=', c == '@':
			b.WriteByte(c)
		case c >= 0x80 && c < 0xc0:
			// A UTF-8 continuation byte: its character's lead byte was
			// replaced already.
		default:
			b.WriteByte('-')
		}
	}
	return b.String()
}
