package inbound

// What a report means, and whether to believe it. Nothing a stranger sends
// to port 25 changes state without proof (verify.go for complaints), and
// no report costs more than a bounded amount of work: a few fields
// examined, one store lookup, a share of the sender's processing budget
// (budget.go).

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/mail"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/emersion/go-smtp"

	"github.com/sesame-mail/sesame/relay"
	"github.com/sesame-mail/sesame/report"
	"github.com/sesame-mail/sesame/store"
	"github.com/sesame-mail/sesame/verp"
)

// Limits on the work one report gets (docs/operations.md lists them). The
// parser has its own, larger ones (report.MaxRecipients and others).
const (
	// maxReportRecipients is the per-recipient groups of a DSN examined.
	// With a return path per recipient a genuine DSN names one recipient
	// (a few when a mailbox forwards); the rest are counted, not read.
	maxReportRecipients = 100
	// maxReceivedFields is the Received fields of a complaint's original
	// header searched for Sesame's queue id, topmost first.
	maxReceivedFields = 100
	// maxComplaintAddresses is the Original-Rcpt-To (or To) addresses of a
	// complaint compared with the message's recipients.
	maxComplaintAddresses = 100
	// defaultReportTimeout bounds examining one report (DNS included).
	defaultReportTimeout = 30 * time.Second
)

// Verdicts, the label of the reports metric.
const (
	verdictVerified   = "verified"
	verdictUnverified = "unverified"
	verdictOverBudget = "over_budget" // kept unexamined: the client was over its budget
	verdictNone       = "none"        // nothing to verify: unparsed, or nothing to record
)

// envelope is what the SMTP transaction says about a report.
type envelope struct {
	client netip.Addr
	tokens []verp.Token // the return paths among the recipients
	rcpts  []string
}

// outcome is what examining one report made of it.
type outcome struct {
	msg     store.InboundMessage
	events  []store.Event
	sups    []store.Suppression
	lookups int    // store lookups made
	verdict string // for the metric
	// retry, when set, is the answer to give instead of storing the
	// report: its check could not be finished now (a DNS failure).
	retry *smtp.SMTPError
}

// examine reads one report within the client's budget: a client whose
// budget is spent gets its report stored unexamined.
func (s *Server) examine(ctx context.Context, raw []byte, env envelope) outcome {
	start := time.Now()
	if !s.budget.allow(env.client, start) {
		o := outcome{verdict: verdictOverBudget}
		o.msg = store.InboundMessage{ReceivedAt: s.cfg.Now(), Raw: raw, Status: store.InboundUnverified,
			Verification: fmt.Sprintf("not examined: %s has used its report processing budget; it earns %.0f ms a second, up to %s",
				env.client, 1000*s.cfg.ReportBudgetRate, s.cfg.ReportBudget),
			Detail: "kept for the operator; nothing recorded"}
		s.metrics.InboundReport("", o.verdict, 0, 0)
		return o
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ReportTimeout)
	defer cancel()
	o := s.process(ctx, raw, env)
	took := time.Since(start)
	s.budget.charge(env.client, took, time.Now())
	s.metrics.InboundReport(o.msg.Kind, o.verdict, o.lookups, took)
	return o
}

// process reads one report and says what it means.
func (s *Server) process(ctx context.Context, raw []byte, env envelope) outcome {
	o := outcome{verdict: verdictNone}
	o.msg = store.InboundMessage{ReceivedAt: s.cfg.Now(), Raw: raw}
	rep, err := report.Parse(raw)
	if err != nil {
		o.msg.Status, o.msg.Detail = store.InboundUnparsed, err.Error()
		return o
	}
	o.msg.Kind = string(rep.Kind)
	switch rep.Kind {
	case report.KindDSN:
		s.bounces(ctx, &o, rep, env)
	case report.KindARF:
		s.complaint(ctx, &o, rep, raw, env)
	}
	switch {
	case o.retry != nil || o.msg.Verification == "":
	case o.msg.Verified:
		o.verdict = verdictVerified
	default:
		o.verdict = verdictUnverified
	}
	return o
}

// bounces records the failed recipients of a DSN. A DSN counts only on the
// return path of the recipient it reports on: the return path's HMAC
// proves Sesame made it for that message and recipient, which a forger
// who learnt a queue id or a Message-ID cannot do. Only that recipient's
// failure is recorded; others the DSN names are noted. The one store
// lookup is of the return path's message.
func (s *Server) bounces(ctx context.Context, o *outcome, rep *report.Report, env envelope) {
	m := &o.msg
	rcpts := rep.DSN.Recipients
	var notes []string
	if n := len(rcpts) - maxReportRecipients; n > 0 {
		rcpts = rcpts[:maxReportRecipients]
		notes = append(notes, fmt.Sprintf("%d recipients past the first %d not examined", n, maxReportRecipients))
	}
	var failures []report.Recipient
	for _, r := range rcpts {
		if failed(r) {
			failures = append(failures, r)
		}
	}
	if len(failures) == 0 {
		m.Status, m.Detail = store.InboundIgnored, "no failed recipient: nothing to record"
		return
	}
	if len(env.tokens) == 0 {
		m.Status = store.InboundUnverified
		m.Verification = fmt.Sprintf("a DSN counts only on the return path of the recipient it reports on; this one came to %s",
			printable(strings.Join(env.rcpts, ", ")))
		m.Detail = "failure of " + addressList(failures) + " not recorded"
		return
	}
	// The return paths of one message (a DSN is about one); those of
	// another message in the same transaction are not looked up.
	qid := env.tokens[0].QueueID
	sends, err := s.st.SendEvents(ctx, qid, "")
	o.lookups++
	if err != nil {
		m.Status, m.Detail = store.InboundUnmatched, "looking up the original message failed: "+err.Error()
		return
	}
	ours := map[string]store.Event{} // lower-case recipient → send event, for each return path
	for _, t := range env.tokens {
		if t.QueueID != qid {
			notes = append(notes, "a return path of another message in the same transaction not examined")
			continue
		}
		for _, e := range sends {
			if t.Matches(e.Recipient) {
				ours[strings.ToLower(e.Recipient)] = e
			}
		}
	}
	m.Verified = true
	if len(ours) == 0 {
		m.Verification = "came to a signed return path of message " + qid
		m.Status = store.InboundUnmatched
		m.Detail = join(append(notes, "no message of ours found for the return path (older than events.retention?)"))
		return
	}
	names := slices.Sorted(maps.Keys(ours))
	m.Verification = "came to the signed return path of " + strings.Join(names, ", ")
	var others []report.Recipient
	done := map[string]bool{}
	for _, r := range failures {
		send, ok := ours[strings.ToLower(r.FinalRecipient)]
		if !ok && r.OriginalRecipient != "" {
			send, ok = ours[strings.ToLower(r.OriginalRecipient)]
		}
		if !ok {
			others = append(others, r)
			continue
		}
		if done[send.Recipient] {
			continue
		}
		done[send.Recipient] = true
		reply := r.Diagnostic
		if reply == "" {
			reply = "status " + r.Status
		}
		bt := relay.ClassifyBounce(r.Status, reply)
		o.events = append(o.events, store.Event{At: m.ReceivedAt, Type: store.EventBounce, BounceType: bt, Credential: send.Credential,
			QueueID: send.QueueID, MessageID: send.MessageID, Recipient: send.Recipient, RemoteMTA: r.RemoteMTA, Reply: reply})
		if bt == store.BounceHard {
			o.sups = append(o.sups, store.Suppression{Address: send.Recipient, Credential: send.Credential,
				Reason: store.SuppressBounce, Detail: reply, CreatedAt: m.ReceivedAt})
		}
		notes = append(notes, fmt.Sprintf("%s: %s bounce of %s", send.Recipient, bt, send.QueueID))
	}
	if len(others) > 0 {
		notes = append(notes, "failure of "+addressList(others)+" not recorded: not the return path's recipient")
	}
	m.Detail = join(notes)
	if len(o.events) == 0 {
		// Every failure named is someone else's: nothing here proves them.
		m.Verified, m.Status = false, store.InboundUnverified
		m.Verification = fmt.Sprintf("the DSN reports on %s, but came to the return path of %s",
			addressList(others), strings.Join(names, ", "))
		return
	}
	m.Status = store.InboundProcessed
}

// complaint records the complaint of a verified ARF report against the
// recipient of the message it is about, found with one store lookup.
func (s *Server) complaint(ctx context.Context, o *outcome, rep *report.Report, raw []byte, env envelope) {
	m := &o.msg
	fb := rep.Feedback
	switch strings.ToLower(fb.Type) {
	case "abuse", "fraud", "virus", "other", "":
	default: // not-spam, auth-failure: nothing against the recipient
		m.Status, m.Detail = store.InboundIgnored, "feedback type "+fb.Type
		return
	}
	proof, ok, err := s.verifyComplaint(ctx, raw, env.client)
	if errors.Is(err, errTemporary) {
		s.log.Warn("inbound: a complaint could not be verified now; asked the reporter to send it again", "client", env.client, "err", err)
		o.retry = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 3},
			Message: "Temporary failure checking the report's DKIM signature; try again later"}
		return
	}
	m.Verified, m.Verification = ok, proof
	if !ok {
		m.Status, m.Detail = store.InboundUnverified, fmt.Sprintf("complaint (%s) not recorded", fb.Type)
		return
	}

	// The message: through a return path (the report's Original-Mail-From,
	// or the address it came to), else Sesame's Received field, else the
	// Message-ID. One of them, once.
	var token *verp.Token
	if t, err := s.signer.Parse(fb.OriginalMailFrom); err == nil {
		token = &t
	} else if len(env.tokens) > 0 {
		token = &env.tokens[0]
	}
	queueID, messageID := "", ""
	switch {
	case token != nil:
		queueID = token.QueueID
	case receivedQueueID(rep.Original.Received) != "":
		queueID = receivedQueueID(rep.Original.Received)
	case rep.Original.MessageID != "":
		messageID = "<" + rep.Original.MessageID + ">"
	default:
		m.Status, m.Detail = store.InboundUnmatched,
			fmt.Sprintf("complaint (%s) names no message of ours: no return path, Sesame Received field or Message-ID", fb.Type)
		return
	}
	sends, err := s.st.SendEvents(ctx, queueID, messageID)
	o.lookups++
	if err != nil {
		m.Status, m.Detail = store.InboundUnmatched, "looking up the original message failed: "+err.Error()
		return
	}
	send, ok := complained(sends, token, complaintAddresses(rep))
	if !ok {
		m.Status, m.Detail = store.InboundUnmatched, fmt.Sprintf("complaint (%s) about no message of ours", fb.Type)
		return
	}
	reply := "complaint: " + fb.Type
	if fb.UserAgent != "" {
		reply += " (" + fb.UserAgent + ")"
	}
	o.events = append(o.events, store.Event{At: m.ReceivedAt, Type: store.EventComplaint, Credential: send.Credential,
		QueueID: send.QueueID, MessageID: send.MessageID, Recipient: send.Recipient, RemoteMTA: fb.ReportingMTA, Reply: reply})
	o.sups = append(o.sups, store.Suppression{Address: send.Recipient, Credential: send.Credential,
		Reason: store.SuppressComplaint, Detail: reply, CreatedAt: m.ReceivedAt})
	m.Status, m.Detail = store.InboundProcessed, fmt.Sprintf("%s: complaint about %s", send.Recipient, send.QueueID)
}

// complaintAddresses are the recipients a complaint names: its
// Original-Rcpt-To fields, else the original To field, at most
// maxComplaintAddresses.
func complaintAddresses(rep *report.Report) []string {
	addrs := rep.Feedback.OriginalRcptTo
	if len(addrs) == 0 && rep.Original.To != "" {
		if list, err := mail.ParseAddressList(rep.Original.To); err == nil {
			for _, a := range list {
				addrs = append(addrs, a.Address)
			}
		} else {
			addrs = []string{rep.Original.To}
		}
	}
	if len(addrs) > maxComplaintAddresses {
		addrs = addrs[:maxComplaintAddresses]
	}
	return addrs
}

// complained picks the send event a complaint is about among sends: the
// return path's recipient, else the first address named that is among
// them, else the message's only recipient.
func complained(sends []store.Event, token *verp.Token, addrs []string) (store.Event, bool) {
	if token != nil {
		for _, e := range sends {
			if token.Matches(e.Recipient) {
				return e, true
			}
		}
		return store.Event{}, false
	}
	byAddr := make(map[string]store.Event, len(sends))
	for _, e := range sends {
		byAddr[strings.ToLower(e.Recipient)] = e
	}
	for _, a := range addrs {
		if e, ok := byAddr[strings.ToLower(bareAddress(a))]; ok {
			return e, true
		}
	}
	if len(sends) == 1 && len(addrs) == 0 {
		return sends[0], true
	}
	return store.Event{}, false
}

// failed reports whether a DSN recipient failed for good: Action failed
// (RFC 3464 §2.3.3), or, from a server that leaves Action out, a 5.x.x
// status.
func failed(r report.Recipient) bool {
	a := strings.ToLower(r.Action)
	return a == "failed" || (a == "" && strings.HasPrefix(r.Status, "5."))
}

// receivedID finds the queue id Sesame writes in its Received field
// ("by HOSTNAME (Sesame) with ESMTPSA id QUEUEID").
var receivedID = regexp.MustCompile(`\bwith ESMTPSA id ([A-Z0-9]{16})\b`)

// receivedQueueID is the queue id in the first of the Received fields
// (topmost first) that has one, among the first maxReceivedFields.
func receivedQueueID(fields []string) string {
	if len(fields) > maxReceivedFields {
		fields = fields[:maxReceivedFields]
	}
	for _, f := range fields {
		if m := receivedID.FindStringSubmatch(f); m != nil {
			return m[1]
		}
	}
	return ""
}

// bareAddress takes "Name <a@b>" or "<a@b>" to "a@b".
func bareAddress(a string) string {
	if i := strings.LastIndexByte(a, '<'); i >= 0 {
		a = a[i+1:]
	}
	return strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(a), ">"))
}

// addressList names the recipients of rs for a detail line: at most five,
// and how many more.
func addressList(rs []report.Recipient) string {
	var names []string
	for i, r := range rs {
		if i == 5 {
			names = append(names, fmt.Sprintf("and %d more", len(rs)-5))
			break
		}
		names = append(names, printable(r.FinalRecipient))
	}
	return strings.Join(names, ", ")
}

func join(notes []string) string { return strings.Join(notes, "; ") }

// printable is s made safe and short for a log line or the operator's
// list: what is not printable UTF-8 replaced by "?", cut after 200 bytes.
func printable(s string) string {
	const max = 200
	var b strings.Builder
	for _, r := range s {
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

// excerpt is s quoted, safe and short, for a detail line.
func excerpt(s string) string { return fmt.Sprintf("%q", printable(s)) }
