package report

// Delivery status notifications: the message/delivery-status part (RFC
// 3464 §2) and message/global-delivery-status (RFC 6533 §6).

import (
	"fmt"
	"strings"
	"time"
)

// DSN is a delivery status notification: what a mail server reports about
// the delivery of one message to some of its recipients.
type DSN struct {
	ReportingMTA string // Reporting-MTA without its type, e.g. "mx.example.net"
	// OriginalEnvelopeID is the envelope id (the ENVID parameter of MAIL
	// FROM, RFC 3461 §4.4) the message was sent with, "" if none.
	OriginalEnvelopeID string
	ArrivalDate        time.Time   // Arrival-Date; zero if absent or unreadable
	Recipients         []Recipient // at least one
}

// Recipient is what a DSN says about one recipient.
type Recipient struct {
	// FinalRecipient is the address the reporting server tried, without
	// its type or angle brackets, e.g. "user@example.com"; a "utf-8"
	// address is decoded from its \x{HEX} form (RFC 6533 §3). Never empty.
	FinalRecipient string
	// OriginalRecipient is the address as the sender gave it (the ORCPT
	// parameter, RFC 3461 §4.2), without type or brackets; "" if absent.
	OriginalRecipient string
	// Action is failed, delayed, delivered, relayed or expanded (RFC 3464
	// §2.3.3), lower case; "" if the report leaves it out, as a few
	// servers do (then Status's class tells a failure from a delay).
	Action string
	// Status is the class.subject.detail status code (RFC 3463) without
	// its comment, e.g. "5.1.1".
	Status string
	// RemoteMTA is the server that gave the Diagnostic, without its type,
	// e.g. "mx.example.com"; "" if the report names none.
	RemoteMTA string
	// Diagnostic is Diagnostic-Code without its type: for "smtp", the
	// server's reply, e.g. "550 5.1.1 <x@example.com>: Recipient address
	// rejected"; "" if absent.
	Diagnostic  string
	LastAttempt time.Time // Last-Attempt-Date; zero if absent or unreadable
}

// actions are the values of the Action field (RFC 3464 §2.3.3).
var actions = map[string]bool{"failed": true, "delayed": true, "delivered": true, "relayed": true, "expanded": true}

// parseDSN reads the content of a message/delivery-status part (mt is its
// media type): a group of per-message fields, then a group of fields per
// recipient, separated by blank lines (RFC 3464 §2.1).
func parseDSN(mt string, data []byte) (*DSN, error) {
	if isBlank(data) {
		return nil, errorf("the %s part is empty", mt)
	}
	groups, err := scanGroups(data, MaxRecipients+1, maxGroupFields)
	if err != nil {
		return nil, limitErr("the %s part has more than %d recipients", mt, MaxRecipients)
	}
	if len(groups) == 0 {
		return nil, errorf("the %s part has no fields", mt)
	}
	d := &DSN{}
	for _, f := range groups[0] {
		switch f.name {
		case "reporting-mta": // §2.2.2
			d.ReportingMTA = first(d.ReportingMTA, mtaName(f.value))
		case "original-envelope-id": // §2.2.1
			d.OriginalEnvelopeID = first(d.OriginalEnvelopeID, f.value)
		case "arrival-date": // §2.2.5
			if d.ArrivalDate.IsZero() {
				d.ArrivalDate = parseDate(f.value)
			}
		}
	}
	rcpts := groups[1:]
	if get(groups[0], "final-recipient") != "" {
		// No blank line between the per-message fields and the first
		// recipient's: the group is both.
		rcpts = groups
	}
	if len(rcpts) == 0 {
		return nil, errorf("the %s part has no per-recipient fields, only %s", mt, fieldNames(groups[0]))
	}
	if len(rcpts) > MaxRecipients {
		return nil, limitErr("the %s part has more than %d recipients", mt, MaxRecipients)
	}
	d.Recipients = make([]Recipient, 0, len(rcpts))
	for i, g := range rcpts {
		r, err := parseRecipient(g)
		if err != nil {
			return nil, errorf("%s, recipient %d: %v", mt, i+1, err)
		}
		d.Recipients = append(d.Recipients, r)
	}
	return d, nil
}

// parseRecipient reads the per-recipient fields of one recipient (RFC 3464
// §2.3). The error it returns follows "recipient N: ".
func parseRecipient(g []field) (Recipient, error) {
	var r Recipient
	var finalField, statusField, actionField string
	finalSeen := false
	for _, f := range g {
		switch f.name {
		case "final-recipient": // §2.3.2
			if !finalSeen {
				finalSeen, finalField = true, f.value
				r.FinalRecipient = typedAddress(f.value)
			}
		case "original-recipient": // §2.3.1
			r.OriginalRecipient = first(r.OriginalRecipient, typedAddress(f.value))
		case "action": // §2.3.3
			actionField = first(actionField, f.value)
		case "status": // §2.3.4
			statusField = first(statusField, f.value)
		case "remote-mta": // §2.3.5
			r.RemoteMTA = first(r.RemoteMTA, mtaName(f.value))
		case "diagnostic-code": // §2.3.6
			r.Diagnostic = first(r.Diagnostic, diagnostic(f.value))
		case "last-attempt-date": // §2.3.7
			if r.LastAttempt.IsZero() {
				r.LastAttempt = parseDate(f.value)
			}
		}
	}
	if r.FinalRecipient == "" {
		if finalSeen {
			return r, fmt.Errorf("Final-Recipient %s has no address", excerpt(finalField))
		}
		return r, fmt.Errorf("no Final-Recipient field among %s", fieldNames(g))
	}
	who := excerpt(r.FinalRecipient)
	// RFC 3464 requires Action, but a few servers leave it out; the
	// Status still tells a failure from a delay.
	r.Action = strings.ToLower(stripComments(actionField))
	if r.Action != "" && !actions[r.Action] {
		return r, fmt.Errorf("%s: Action %s is not failed, delayed, delivered, relayed or expanded", who, excerpt(r.Action))
	}
	code, ok := status(statusField)
	switch {
	case statusField == "":
		return r, fmt.Errorf("%s has no Status field", who)
	case !ok:
		return r, fmt.Errorf("%s: Status %s is not a class.subject.detail code", who, excerpt(statusField))
	}
	r.Status = code
	return r, nil
}

// first returns a if it is set, else b: of a field given twice, the first
// counts.
func first(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// fieldNames lists the names of fs for an error message: at most 8, each
// cut to 30 characters.
func fieldNames(fs []field) string {
	if len(fs) == 0 {
		return "none"
	}
	var names []string
	for i, f := range fs {
		if i == 8 {
			names = append(names, "...")
			break
		}
		n := f.name
		if len(n) > 30 {
			n = n[:30] + "..."
		}
		names = append(names, n)
	}
	return strings.Join(names, ", ")
}
