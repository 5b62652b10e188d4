package relay

// Delivery status notifications: the bounce (Action "failed") and the delay
// warning (Action "delayed") Sesame sends to the envelope sender.
//
// A DSN is a multipart/report (RFC 6522) of three parts:
//
//  1. text/plain: what happened, in words, for the person who sent the mail;
//  2. message/delivery-status (RFC 3464 §2): the same, for programs;
//  3. text/rfc822-headers (RFC 6522 §4): the header of the original message,
//     copied byte for byte, at most maxReturnedHeader octets.
//
// Every line ends in CRLF and none is longer than 998 octets (RFC 5322
// §2.1.1), because the DSN is queued and sent like any other message. Text
// that came from outside (remote replies, host names, addresses) is cleaned
// of control characters first, so it can never start a field or a part of
// its own. The DSN is 7-bit except for two things copied from the original
// as they are, which both exist only in SMTPUTF8 mail (RFC 6531, RFC 6532):
// 8-bit octets in the returned header (the part and the message are then
// labelled 8bit), and a UTF-8 sender address in To.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// dsnRecipient is one recipient reported in a DSN.
type dsnRecipient struct {
	Address    string // final recipient (RFC 822 address as sent in RCPT TO)
	Action     string // "failed" or "delayed" (RFC 3464 §2.3.3)
	Status     string // RFC 3463 code, e.g. "5.1.1", "4.4.7"
	RemoteMTA  string // host name of the server that answered, "" if none was reached
	Diagnostic string // the remote's reply as one line, e.g. "550 5.1.1 No such user"; "" if none
	// OwnDiagnostic marks Diagnostic as Sesame's own reason (a DNS answer,
	// a refusal of ours), written with the "X-Sesame" type: RFC 3464 keeps
	// "smtp" for what a server replied.
	OwnDiagnostic bool
	LastAttempt   time.Time // zero if never attempted
	RetryUntil    time.Time // for "delayed": when Sesame gives up (Will-Retry-Until); zero otherwise
}

// dsnParams is everything one DSN says.
type dsnParams struct {
	Hostname    string         // Reporting-MTA, and the domain of From (MAILER-DAEMON@Hostname) and Message-ID
	QueueID     string         // the original message's queue id (in the text and an X-Sesame-Queue-ID field)
	Sender      string         // envelope sender of the original message: the DSN goes To it
	ArrivalDate time.Time      // when the original was received
	Now         time.Time      // Date of the DSN
	Recipients  []dsnRecipient // all with the same Action
	Original    []byte         // the original message as queued (CRLF line ends); only its header is returned
	MessageID   string         // the DSN's own Message-ID, with angle brackets, e.g. "<ID@hostname>"
}

const (
	actionFailed  = "failed"
	actionDelayed = "delayed"

	// maxLineLen is the longest line allowed, without its CRLF (RFC 5322
	// §2.1.1, RFC 5321 §4.5.3.1.6).
	maxLineLen = 998
	// foldWidth is where fields and text we write are wrapped when their
	// words allow (RFC 5322 §2.1.1 "SHOULD be no more than 78").
	foldWidth = 78
	// textWidth is the width of the paragraphs in the human-readable part.
	textWidth = 72
	// maxReturnedHeader caps the returned header, so a DSN for a message
	// with a huge header stays small.
	maxReturnedHeader = 64 << 10
	// maxDiagnostic caps a remote reply in the DSN; replies this long are
	// noise, and a short DSN is read.
	maxDiagnostic = 2000
	// maxAddressLen caps an encoded address: with its field name it must
	// fit one line, and an address cannot be folded.
	maxAddressLen = 900
)

// buildDSN returns the DSN message bytes (CRLF line ends only, no line over 998 octets, 7-bit clean except
// the returned original header which is copied verbatim).
//
// A UTF-8 Sender is written in To as it is (RFC 6532 §3.2); such a sender
// exists only in SMTPUTF8 mail, and the DSN to it goes out with SMTPUTF8.
func buildDSN(p dsnParams) ([]byte, error) {
	action, err := checkDSN(p)
	if err != nil {
		return nil, err
	}
	header, eightBit := returnedHeader(p.Original)
	text := dsnText(p, action)
	status := deliveryStatus(p)
	// The boundary depends only on this DSN's identity, so a DSN built
	// twice is the same bytes; candidates that occur in a part are skipped
	// (RFC 2046 §5.1.1).
	boundary := dsnBoundary(p.QueueID+"\x00"+p.MessageID+"\x00"+p.Now.Format(time.RFC3339Nano), text, status, header)

	subject := "Undelivered Mail Returned to Sender"
	if action == actionDelayed {
		subject = "Delayed Mail (still being retried)"
	}
	var b bytes.Buffer
	w := func(s string) { b.WriteString(s + "\r\n") }
	w("From: Mail Delivery System <MAILER-DAEMON@" + p.Hostname + ">")
	w("To: <" + p.Sender + ">")
	w("Subject: " + subject)
	w("Date: " + p.Now.Format(time.RFC1123Z))
	w("Message-ID: " + p.MessageID)
	w("MIME-Version: 1.0")
	// RFC 3834 §5: autoresponders and vacation programs must not answer.
	w("Auto-Submitted: auto-replied")
	w("Content-Type: multipart/report; report-type=delivery-status;")
	w("\tboundary=\"" + boundary + "\"")
	if eightBit {
		// RFC 2045 §6.4: a multipart is labelled with its widest part.
		w("Content-Transfer-Encoding: 8bit")
	}
	w("X-Sesame-Queue-ID: " + p.QueueID)
	w("")
	w("This is a delivery status notification in MIME format.")
	w("")
	w("--" + boundary)
	w("Content-Type: text/plain; charset=us-ascii")
	w("Content-Description: Notification")
	w("")
	b.Write(text)
	w("")
	w("--" + boundary)
	w("Content-Type: message/delivery-status")
	w("Content-Description: Delivery report")
	w("")
	b.Write(status)
	w("")
	w("--" + boundary)
	w("Content-Type: text/rfc822-headers")
	if eightBit {
		w("Content-Transfer-Encoding: 8bit")
	}
	w("Content-Description: Header of the original message")
	w("")
	b.Write(header)
	// The CRLF before a delimiter belongs to the delimiter (RFC 2046
	// §5.1.1), so each part's content ends where it ended above.
	w("")
	w("--" + boundary + "--")
	return b.Bytes(), nil
}

// checkDSN validates p and returns the Action its recipients share.
func checkDSN(p dsnParams) (string, error) {
	if p.Sender == "" || p.Sender == "<>" {
		// RFC 3464 §1.1 / RFC 5321 §4.5.5: never a DSN to the null sender,
		// or two MTAs could bounce bounces at each other forever.
		return "", errors.New("dsn: null sender: a DSN is never sent to <>")
	}
	if len(p.Sender) > maxAddressLen || !utf8.ValidString(p.Sender) || strings.IndexFunc(p.Sender, controlRune) >= 0 {
		return "", fmt.Errorf("dsn: invalid sender %q", p.Sender)
	}
	if !reportableHost(p.Hostname) {
		return "", fmt.Errorf("dsn: invalid hostname %q", p.Hostname)
	}
	if p.QueueID == "" || len(p.QueueID) > 200 || !printableToken(p.QueueID) {
		return "", fmt.Errorf("dsn: invalid queue id %q", p.QueueID)
	}
	id := p.MessageID
	if len(id) < 3 || len(id) > maxAddressLen || id[0] != '<' || id[len(id)-1] != '>' || !printableToken(id) {
		return "", fmt.Errorf("dsn: invalid Message-ID %q: want <id@host>", id)
	}
	if p.Now.IsZero() {
		return "", errors.New("dsn: no date (Now is zero)")
	}
	if len(p.Recipients) == 0 {
		return "", errors.New("dsn: no recipients to report")
	}
	action := p.Recipients[0].Action
	for i, r := range p.Recipients {
		if r.Action != actionFailed && r.Action != actionDelayed {
			return "", fmt.Errorf("dsn: recipient %d (%q): action %q, want %q or %q", i, r.Address, r.Action, actionFailed, actionDelayed)
		}
		if r.Action != action {
			// One DSN has one subject and one explanation: a bounce and a
			// delay warning go out as two DSNs.
			return "", fmt.Errorf("dsn: recipient %d (%q): action %q differs from %q", i, r.Address, r.Action, action)
		}
		if r.Address == "" {
			return "", fmt.Errorf("dsn: recipient %d: empty address", i)
		}
		if !validStatus(r.Status) {
			return "", fmt.Errorf("dsn: recipient %d (%q): invalid status %q, want class.subject.detail (RFC 3463)", i, r.Address, r.Status)
		}
	}
	return action, nil
}

// dsnText is the human-readable part: what happened to which recipient
// and whether the sender needs to act.
func dsnText(p dsnParams, action string) []byte {
	var b bytes.Buffer
	para := func(s string) {
		for _, l := range wrapWords("", "", s, textWidth) {
			b.WriteString(l + "\r\n")
		}
		b.WriteString("\r\n")
	}
	para("This is the mail delivery system at " + p.Hostname + ".")
	if action == actionFailed {
		para("Your message could not be delivered to the recipients listed below. " +
			"Delivery has been given up, so the message will not be tried again. " +
			"The delivery report and the header of your message are attached.")
	} else {
		until := "for a while"
		if u := commonRetryUntil(p.Recipients); !u.IsZero() {
			until = "until " + u.Format(time.RFC1123Z)
		}
		para("Your message has not yet been delivered to the recipients listed below. " +
			"This is only a warning: the mail system keeps trying " + until +
			", and will write to you again if it gives up. " +
			"You do not need to do anything now, and should not send the message again.")
	}
	b.WriteString("Queue ID: " + p.QueueID + "\r\n")
	for _, r := range p.Recipients {
		b.WriteString("\r\n<" + encodeAddress(r.Address) + ">\r\n")
		for _, l := range wrapWords("    ", "    ", recipientReason(r), foldWidth) {
			b.WriteString(l + "\r\n")
		}
	}
	return b.Bytes()
}

// commonRetryUntil is the give-up time all recipients share, or zero.
func commonRetryUntil(rs []dsnRecipient) time.Time {
	t := rs[0].RetryUntil
	for _, r := range rs[1:] {
		if !r.RetryUntil.Equal(t) {
			return time.Time{}
		}
	}
	return t
}

// recipientReason says in one sentence why r was not delivered.
func recipientReason(r dsnRecipient) string {
	diag := cleanText(r.Diagnostic, maxDiagnostic)
	host := remoteHost(r.RemoteMTA)
	switch {
	case diag != "" && host != "":
		return "host " + host + " said: " + diag
	case diag != "":
		return diag
	}
	if d := statusMeaning(r.Status); d != "" {
		return r.Status + " " + d
	}
	return "status " + r.Status
}

// statusMeaning describes the RFC 3463 subject and detail of the codes a
// relay reports most (§3.2–§3.8), for a recipient without a remote reply.
func statusMeaning(status string) string {
	_, sd, _ := strings.Cut(status, ".")
	switch sd {
	case "1.1":
		return "(the mailbox does not exist)"
	case "1.2":
		return "(the recipient's domain does not exist or accepts no mail)"
	case "2.2":
		return "(the mailbox is full)"
	case "3.4":
		return "(the message is too big)"
	case "4.1":
		return "(no answer from the recipient's mail server)"
	case "4.2":
		return "(the connection to the recipient's mail server broke)"
	case "4.3":
		return "(the recipient's domain could not be looked up)"
	case "4.4":
		return "(no mail server found for the recipient's domain)"
	case "4.7":
		return "(the message was not delivered in time)"
	case "7.1":
		return "(the message was refused by policy)"
	}
	return ""
}

// deliveryStatus is the message/delivery-status part (RFC 3464 §2.1): the
// per-message fields, then one block of fields per recipient, blocks
// separated by an empty line.
func deliveryStatus(p dsnParams) []byte {
	var b bytes.Buffer
	w := func(s string) { b.WriteString(s + "\r\n") }
	w("Reporting-MTA: dns; " + p.Hostname) // §2.2.2
	w("X-Sesame-Queue-ID: " + p.QueueID)   // an extension field, §2.4
	if !p.ArrivalDate.IsZero() {
		w("Arrival-Date: " + p.ArrivalDate.Format(time.RFC1123Z)) // §2.2.5
	}
	for _, r := range p.Recipients {
		w("")
		w("Final-Recipient: " + typedAddress(r.Address)) // §2.3.2
		w("Action: " + r.Action)                         // §2.3.3
		w("Status: " + r.Status)                         // §2.3.4
		if host := remoteHost(r.RemoteMTA); host != "" {
			w("Remote-MTA: dns; " + host) // §2.3.5
		}
		if diag := cleanText(r.Diagnostic, maxDiagnostic); diag != "" {
			// §2.3.6; folded like any header field (§2.1.1), at its spaces.
			kind := "smtp"
			if r.OwnDiagnostic {
				kind = "X-Sesame"
			}
			for _, l := range wrapWords("Diagnostic-Code: "+kind+"; ", " ", diag, foldWidth) {
				w(l)
			}
		}
		if !r.LastAttempt.IsZero() {
			w("Last-Attempt-Date: " + r.LastAttempt.Format(time.RFC1123Z)) // §2.3.7
		}
		if r.Action == actionDelayed && !r.RetryUntil.IsZero() {
			w("Will-Retry-Until: " + r.RetryUntil.Format(time.RFC1123Z)) // §2.3.9
		}
	}
	return b.Bytes()
}

// typedAddress is addr with its RFC 3464 §2.1.2 address type: "rfc822" for
// an ASCII address, else "utf-8" with the utf-8-addr-xtext encoding of RFC
// 6533 §3, which keeps this part 7-bit.
func typedAddress(addr string) string {
	for i := 0; i < len(addr); i++ {
		if addr[i] >= utf8.RuneSelf {
			return "utf-8; " + encodeAddress(addr)
		}
	}
	return "rfc822; " + encodeAddress(addr)
}

// encodeAddress makes addr safe to write on a line: control characters are
// dropped (no address contains them, and RFC 6533 cannot encode most of
// them); in a non-ASCII address, what is not a QCHAR (RFC 6533 §3: "+",
// "=", "\", space, non-ASCII; invalid UTF-8 as U+FFFD) becomes \x{HEX}.
// The result is cut at maxAddressLen, between characters.
func encodeAddress(addr string) string {
	ascii := true
	for i := 0; i < len(addr); i++ {
		if addr[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	var b strings.Builder
	for _, r := range addr {
		var piece string
		switch {
		case controlRune(r):
			continue
		case ascii || (r > ' ' && r < 0x7f && r != '+' && r != '=' && r != '\\'):
			piece = string(r)
		case r < 0x100:
			// HEXPOINT: two digits below 0x100, else no leading zero.
			piece = fmt.Sprintf(`\x{%02X}`, r)
		default:
			piece = fmt.Sprintf(`\x{%X}`, r)
		}
		if b.Len()+len(piece) > maxAddressLen {
			break
		}
		b.WriteString(piece)
	}
	return b.String()
}

// returnedHeader is the header of the original message, up to and
// including the empty line that ends it (all of it when there is no body),
// copied byte for byte. It ends early, at a line boundary, before
// maxReturnedHeader octets, and before a line that is too long or holds a
// bare CR or LF, so the DSN keeps its promises whatever the original is.
// eightBit reports octets above 127 in it.
func returnedHeader(msg []byte) (header []byte, eightBit bool) {
	n := 0
	for n < len(msg) {
		end := bytes.Index(msg[n:], []byte("\r\n"))
		line := msg[n:]
		if end >= 0 {
			line = msg[n : n+end+2]
		}
		content := bytes.TrimSuffix(line, []byte("\r\n"))
		if len(content) > maxLineLen || bytes.ContainsAny(content, "\r\n") || n+len(line) > maxReturnedHeader {
			break
		}
		n += len(line)
		if len(content) == 0 {
			break // the empty line that ends the header
		}
	}
	header = msg[:n]
	for _, c := range header {
		if c >= utf8.RuneSelf {
			return header, true
		}
	}
	return header, false
}

// dsnBoundary is a multipart boundary derived from seed that occurs in none
// of parts (RFC 2046 §5.1.1).
func dsnBoundary(seed string, parts ...[]byte) string {
	for i := 0; ; i++ {
		sum := sha256.Sum256([]byte(seed + "\x00" + strconv.Itoa(i)))
		b := "sesame-dsn-" + hex.EncodeToString(sum[:12])
		clash := false
		for _, p := range parts {
			clash = clash || bytes.Contains(p, []byte(b))
		}
		if !clash {
			return b
		}
	}
}

// dsnStatus picks the Status for a failure from a reply: the enhanced code in the reply if it has one
// ("550 5.1.1 ..." → "5.1.1"), else derived from the basic code (5xx → "5.0.0", 4xx → "4.0.0"), else fallback.
//
// The reply may also be one of Sesame's own reasons, which start with the
// enhanced code ("5.1.2 no such domain"). An enhanced code whose class
// contradicts the basic code is ignored (RFC 3463 §2: they must agree).
func dsnStatus(reply string, fallback string) string {
	s := strings.TrimSpace(reply)
	if len(s) >= 3 && (len(s) == 3 || s[3] == ' ' || s[3] == '-') && asciiDigits(s[:3]) {
		class := s[0]
		if class != '4' && class != '5' {
			return fallback
		}
		rest := strings.TrimLeft(s[3:], " -")
		code, _, _ := strings.Cut(rest, " ")
		if validStatus(code) && code[0] == class {
			return code
		}
		return string(class) + ".0.0"
	}
	code, _, _ := strings.Cut(s, " ")
	if validStatus(code) {
		return code
	}
	return fallback
}

// validStatus reports whether s is an RFC 3463 §2 status code:
// class "." subject "." detail, class 2, 4 or 5, the others 1 to 3 digits.
func validStatus(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || (parts[0] != "2" && parts[0] != "4" && parts[0] != "5") {
		return false
	}
	for _, p := range parts[1:] {
		if len(p) < 1 || len(p) > 3 || !asciiDigits(p) {
			return false
		}
	}
	return true
}

func asciiDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

func controlRune(r rune) bool { return r < ' ' || r == 0x7f }

// printableToken reports whether s is printable ASCII without spaces.
func printableToken(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// reportableHost accepts what may follow "dns;" (RFC 3464 §2.2.2) and "@":
// letters, digits, "-", "_" and ".", at most 253 octets.
func reportableHost(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// cleanText makes remote-supplied text one line of printable ASCII: control
// characters (CR and LF included) become spaces, runs of spaces one space,
// and other octets "?" (RFC 3464 §2.1.1 wants US-ASCII fields). The result
// is cut at max octets, marked with "...".
func cleanText(s string, max int) string {
	s = strings.Join(strings.Fields(strings.Map(func(r rune) rune {
		switch {
		case controlRune(r):
			return ' '
		case r >= 0x7f:
			return '?'
		}
		return r
	}, s)), " ")
	if len(s) > max {
		s = strings.TrimRight(s[:max-3], " ") + "..."
	}
	return s
}

// remoteHost is a remote host name fit for "dns; host", or "".
func remoteHost(h string) string {
	return strings.ReplaceAll(cleanText(h, 255), " ", "")
}

// wrapWords breaks text, single-spaced words, into lines: first starts the first
// line and indent the others; a line ends before the word that would take
// it past width. A word longer than a line may be (maxLineLen octets) is
// cut, which in a folded field inserts a space; only garbage is that long.
func wrapWords(first, indent, text string, width int) []string {
	var lines []string
	line, empty := first, true
	for _, word := range strings.Fields(text) {
		if !empty && len(line)+1+len(word) > width {
			lines = append(lines, line)
			line, empty = indent, true
		}
		if !empty {
			line += " "
		}
		for len(line)+len(word) > maxLineLen {
			n := maxLineLen - len(line)
			if n <= 0 {
				lines = append(lines, line)
				line = indent
				continue
			}
			lines = append(lines, line+word[:n])
			line, word = indent, word[n:]
		}
		line += word
		empty = false
	}
	return append(lines, line)
}
