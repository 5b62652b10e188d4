package smtpd

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"

	"github.com/emersion/go-smtp"
)

// readMessage reads DATA (or BDAT) into buf, refusing a message that holds a
// bare CR, a bare LF or a NUL anywhere. Such bytes are how SMTP smuggling
// hides a second message in the first (receivers disagree on where a line
// ends); fixing them after the fact would change what the client meant, so
// the message is refused whole. It also refuses a message that buf has no
// room for in the memory budget (errInflight). It returns at the first
// refusal: the caller drains the rest (dotReader.drain for DATA; go-smtp
// discards the rest of a BDAT chunk itself).
func readMessage(r io.Reader, buf *msgBuf, maxLine int) error {
	prevCR := false
	for {
		// Read straight into buf's spare room: no chunk of its own to copy
		// from, and the budget sees every byte before it is in memory.
		chunk, err := buf.spare()
		if err != nil {
			return err
		}
		n, err := r.Read(chunk)
		if n > 0 {
			if bad := checkLineEnds(chunk[:n], &prevCR); bad != nil {
				return bad
			}
			buf.wrote(n)
		}
		if err == io.EOF {
			if prevCR {
				return errBareCR
			}
			return nil
		}
		if err != nil {
			var smtpErr *smtp.SMTPError
			switch {
			case errors.As(err, &smtpErr):
				return smtpErr // the size limit, 552 5.3.4
			case errors.Is(err, smtp.ErrTooLongLine):
				return &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 6, 0},
					Message: fmt.Sprintf("Message refused: a line is longer than %d octets; wrap lines or use quoted-printable", maxLine)}
			default:
				// The client stopped sending (closed, or idle past the
				// timeout): temporary, and without the network details.
				return errIncomplete
			}
		}
	}
}

// readChunk is how much readMessage asks of the reader at a time.
const readChunk = 32 << 10

var (
	errIncomplete = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 2},
		Message: "Message incomplete: the connection ended or timed out before its end; nothing was queued"}
	errBareLF = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0},
		Message: "Message refused: it contains a bare LF; every line must end with CRLF"}
	errBareCR = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0},
		Message: "Message refused: it contains a bare CR; every line must end with CRLF"}
	errNUL = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0},
		Message: "Message refused: it contains a NUL byte"}
)

// checkLineEnds scans p for CR not followed by LF, LF not preceded by CR, and
// NUL. prevCR carries a CR that ended the previous chunk.
func checkLineEnds(p []byte, prevCR *bool) error {
	for i := 0; i < len(p); {
		if *prevCR {
			if p[i] != '\n' {
				return errBareCR
			}
			*prevCR = false
			i++
			continue
		}
		j := bytes.IndexAny(p[i:], "\r\n\x00")
		if j < 0 {
			return nil
		}
		i += j
		switch p[i] {
		case '\x00':
			return errNUL
		case '\n':
			return errBareLF
		case '\r':
			*prevCR = true
		}
		i++
	}
	return nil
}

// header is the parsed header block of a message: the fields Sesame needs.
type header struct {
	size      int      // bytes of the header block, including the empty line (if any)
	from      []string // values of every From field
	sender    []string // values of every Sender field
	resent    []string // values of every Resent-From and Resent-Sender field
	hasDate   bool
	messageID string // "" when absent

	hasFeedbackID bool
	configSet     string // the first X-SES-CONFIGURATION-SET's value, trimmed
	// configSetAt holds where each X-SES-CONFIGURATION-SET field is in the
	// message, [start, end) with its continuation lines and CRLF: removed
	// before signing.
	configSetAt [][2]int
}

var errMalformedHeader = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0},
	Message: "Message refused: malformed header line; each header field is \"Name: value\""}

// parseHeader reads the header block of msg (which has CRLF line ends only).
func parseHeader(msg []byte) (header, error) {
	var h header
	var name string
	var value strings.Builder
	start := 0 // where the field in name begins
	flush := func(end int) {
		switch {
		case strings.EqualFold(name, "From"):
			h.from = append(h.from, value.String())
		case strings.EqualFold(name, "Sender"):
			h.sender = append(h.sender, value.String())
		case strings.EqualFold(name, "Resent-From"), strings.EqualFold(name, "Resent-Sender"):
			h.resent = append(h.resent, value.String())
		case strings.EqualFold(name, "Date"):
			h.hasDate = true
		case strings.EqualFold(name, "Message-ID"):
			h.messageID = strings.TrimSpace(value.String())
		case strings.EqualFold(name, "Feedback-ID"):
			h.hasFeedbackID = true
		case strings.EqualFold(name, configSetField):
			if h.configSetAt == nil {
				h.configSet = strings.TrimSpace(value.String())
			}
			h.configSetAt = append(h.configSetAt, [2]int{start, end})
		}
		name = ""
		value.Reset()
	}
	rest := msg
	for len(rest) > 0 {
		end := bytes.Index(rest, []byte("\r\n"))
		if end < 0 {
			end = len(rest) // last line without CRLF: a header-only message
		}
		line := rest[:end]
		next := min(end+2, len(rest))
		at := len(msg) - len(rest)
		if len(line) == 0 { // the empty line that ends the header
			flush(at)
			h.size = len(msg) - len(rest) + next
			return h, nil
		}
		if line[0] == ' ' || line[0] == '\t' {
			if name == "" {
				return h, errMalformedHeader
			}
			value.Write(line)
		} else {
			flush(at)
			start = at
			colon := bytes.IndexByte(line, ':')
			if colon <= 0 || !validFieldName(line[:colon]) {
				return h, errMalformedHeader
			}
			name = string(line[:colon])
			value.Write(line[colon+1:])
		}
		rest = rest[next:]
	}
	flush(len(msg))
	h.size = len(msg)
	return h, nil
}

// validFieldName reports whether b is an RFC 5322 field name: printable
// US-ASCII except colon (and we do not allow trailing white space either).
func validFieldName(b []byte) bool {
	for _, c := range b {
		if c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

var addressParser = mail.AddressParser{WordDecoder: &mime.WordDecoder{
	// Display names in any charset are fine: only the address matters here.
	CharsetReader: func(charset string, input io.Reader) (io.Reader, error) { return input, nil },
}}

// fromAddress returns the single author address of the From header.
func (h header) fromAddress() (string, error) {
	switch len(h.from) {
	case 0:
		return "", &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0},
			Message: "Message refused: it has no From header"}
	case 1:
	default:
		return "", &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0},
			Message: "Message refused: it has more than one From header"}
	}
	return oneAddress("From", h.from[0])
}

// oneAddress returns the one address of a field that must hold exactly one,
// its domain in lower-case A-label form.
func oneAddress(field, value string) (string, error) {
	list, err := addressParser.ParseList(value)
	if err != nil || len(list) != 1 {
		return "", &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0},
			Message: "Message refused: the " + field + " header must hold exactly one valid address"}
	}
	return normalizeHeaderAddress(field, list[0].Address)
}

// normalizeHeaderAddress returns addr, an address from the header field
// named field, with its domain in lower-case A-label form.
func normalizeHeaderAddress(field, addr string) (string, error) {
	at := strings.LastIndexByte(addr, '@')
	domain, ok := normalizeDomain(addr[at+1:], true)
	if at < 0 || !ok {
		return "", &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0},
			Message: "Message refused: the " + field + " header's domain is not a valid domain name"}
	}
	return addr[:at+1] + domain, nil
}

// maxOtherSenders bounds the Sender, Resent-From and Resent-Sender
// addresses checked in one message: each is a policy lookup, and honest mail
// has one or two.
const maxOtherSenders = 20

// otherSenders returns the addresses, besides From's, that the header names
// as who sent the message: Sender's, and every Resent-From's and
// Resent-Sender's. Each must be an identity the credential may use, as
// From's must, for each is shown to recipients as the sender or taken by
// receivers as the one responsible:
//
//   - Sender: Outlook shows "Sender on behalf of From"; a credential
//     restricted to other.org must not appear to send for example.com.
//   - Resent-From and Resent-Sender: the purported responsible address of
//     Sender ID (RFC 4407 §2), which receivers implementing it take as the
//     sender, is the first Resent-Sender, else the first Resent-From,
//     before Sender and From. Every resent field is checked, not only the
//     newest block's: readers differ in which one they take, and a client
//     resending through Sesame adds only its own block (resending a message
//     that was resent before is refused unless every address passes).
//
// Like From, a field Sesame cannot read is refused rather than skipped (a
// reader more lenient than net/mail could still show it), and so is a second
// Sender field (RFC 5322 §3.6 allows one). Resent-From may hold a list
// (RFC 5322 §3.6.6), and resent blocks may repeat. The result holds each
// address once, without from (already checked), domains in A-label form.
func (h header) otherSenders(from string) ([]string, error) {
	var out []string
	add := func(addr string) {
		if strings.EqualFold(addr, from) {
			return
		}
		for _, a := range out {
			if strings.EqualFold(a, addr) {
				return
			}
		}
		out = append(out, addr)
	}
	switch len(h.sender) {
	case 0:
	case 1:
		addr, err := oneAddress("Sender", h.sender[0])
		if err != nil {
			return nil, err
		}
		add(addr)
	default:
		return nil, &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0},
			Message: "Message refused: it has more than one Sender header"}
	}
	for _, v := range h.resent {
		list, err := addressParser.ParseList(v)
		if err != nil || len(list) == 0 {
			return nil, &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0},
				Message: "Message refused: a Resent-From or Resent-Sender header holds no valid address"}
		}
		for _, a := range list {
			addr, err := normalizeHeaderAddress("Resent-From or Resent-Sender", a.Address)
			if err != nil {
				return nil, err
			}
			add(addr)
			if len(out) > maxOtherSenders {
				return nil, &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0},
					Message: fmt.Sprintf("Message refused: its Sender, Resent-From and Resent-Sender headers name more than %d addresses", maxOtherSenders)}
			}
		}
	}
	return out, nil
}
