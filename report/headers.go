package report

// The header of the original message, returned with a DSN or attached to a
// feedback report.

import (
	"mime"
	"net/textproto"
	"strings"
)

// parseHeaders reads the header at the start of data: a whole message
// (message/rfc822, message/global) or a header alone (text/rfc822-headers,
// message/global-headers). It reads what it can: lines that are not fields
// are skipped, and a header cut short gives the fields before the cut.
func parseHeaders(data []byte) Headers {
	fields, _ := scanFields(skipBlankLines(data), maxFields)
	if len(fields) == 0 {
		return Headers{}
	}
	h := Headers{Raw: make(textproto.MIMEHeader)}
	for _, f := range fields {
		key := textproto.CanonicalMIMEHeaderKey(f.name)
		h.Raw[key] = append(h.Raw[key], f.value)
		switch f.name {
		case "message-id":
			h.MessageID = first(h.MessageID, unbracket(f.value))
		case "from":
			h.From = first(h.From, decodeHeader(f.value))
		case "to":
			h.To = first(h.To, decodeHeader(f.value))
		case "subject":
			h.Subject = first(h.Subject, decodeHeader(f.value))
		case "received":
			h.Received = append(h.Received, f.value)
		}
	}
	return h
}

// decodeHeader decodes the encoded-words (RFC 2047) of v, and replaces the
// control characters they may hide by spaces. Words in a charset the
// standard library does not know (it knows UTF-8, US-ASCII and ISO-8859-1)
// leave v as it is.
func decodeHeader(v string) string {
	if !strings.Contains(v, "=?") {
		return v
	}
	var dec mime.WordDecoder
	d, err := dec.DecodeHeader(v)
	if err != nil {
		return v
	}
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, d)
}
