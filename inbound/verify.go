package inbound

// Who may send a complaint. An ARF report names a message and a recipient,
// and both are easy to learn (the queue id is in the Received field of
// every delivered message), so a report proves nothing by its content. It
// counts when it comes from a configured reporter address (a feedback
// loop's sending network) or carries a valid DKIM signature of a feedback
// reporter, checked DMARC-style:
//
//   - the report's From address is a configured reporter: an address
//     ("staff@hotmail.com") or a domain ("arf.mail.yahoo.com", any address
//     in it, not in its subdomains);
//   - a DKIM signature verifies whose d= is that From domain or a parent of
//     it (relaxed alignment, RFC 7489 §3.1.1), and has a dot: a public
//     suffix signs nothing.
//
// The From check is what makes a mailbox provider's signature safe to
// trust: its users' own mail is signed with the same d= (hotmail.com), but
// none of them may send as staff@hotmail.com, nor as anyone in a domain
// kept for the feedback loop. DKIM keys are looked up only for aligned
// domains of a configured reporter, so a forger cannot make Sesame query
// DNS servers of its choosing.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/netip"
	"strings"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/miekg/dns"

	"github.com/sesame-mail/sesame/dnsclient"
)

// maxSignatures bounds the DKIM signatures verified in one report.
const maxSignatures = 4

// Resolver looks up DNS records: dnsclient.Client, asking the configured
// servers ([relay] dns_servers), so tests can point it at their own.
type Resolver interface {
	Lookup(ctx context.Context, name string, qtype uint16) (dnsclient.Answer, error)
}

// reporter is one entry of Config.FeedbackReporters.
type reporter struct {
	address string // lower case; "" for a whole domain
	domain  string // lower case
}

func parseReporters(list []string) []reporter {
	var out []reporter
	for _, e := range list {
		e = strings.ToLower(strings.TrimSpace(e))
		if _, domain, ok := strings.Cut(e, "@"); ok {
			out = append(out, reporter{address: e, domain: domain})
		} else if e != "" {
			out = append(out, reporter{domain: strings.TrimSuffix(e, ".")})
		}
	}
	return out
}

// reporterOf returns the configured reporter the From address from is.
func reporterOf(reporters []reporter, from string) (reporter, bool) {
	from = strings.ToLower(from)
	local, domain, ok := strings.Cut(from, "@")
	if !ok || local == "" || domain == "" {
		return reporter{}, false
	}
	for _, r := range reporters {
		if r.address == from || (r.address == "" && r.domain == domain) {
			return r, true
		}
	}
	return reporter{}, false
}

// aligned reports whether a signature of d vouches for domain: d is domain
// or a parent of it, and not a single label.
func aligned(d, domain string) bool {
	d = strings.TrimSuffix(strings.ToLower(d), ".")
	return strings.Contains(d, ".") && (domain == d || strings.HasSuffix(domain, "."+d))
}

// errTemporary wraps a verification that could not be finished for now
// (a DNS failure): the reporter should send the report again later.
var errTemporary = errors.New("temporary failure")

// verifyComplaint says whether the ARF report raw, sent by client, comes
// from a feedback reporter: the proof, or why there is none. The error,
// which wraps errTemporary, is for a check that could not be finished.
func (s *Server) verifyComplaint(ctx context.Context, raw []byte, client netip.Addr) (proof string, ok bool, err error) {
	for _, p := range s.reporterIPs {
		if p.Contains(client) {
			return fmt.Sprintf("sent from %s, a feedback reporter address (%s)", client, p), true, nil
		}
	}
	from, err := headerFrom(raw)
	if err != nil {
		return err.Error(), false, nil
	}
	r, ok := reporterOf(s.reporters, from)
	if !ok {
		return fmt.Sprintf("From <%s> is not a feedback reporter ([inbound] feedback_reporters) and %s is not a reporter address ([inbound] feedback_reporter_ips)",
			printable(from), client), false, nil
	}
	verifs, err := dkim.VerifyWithOptions(bytes.NewReader(raw), &dkim.VerifyOptions{
		LookupTXT:        s.keyLookup(ctx, r.domain),
		MaxVerifications: maxSignatures,
	})
	if err != nil && !errors.Is(err, dkim.ErrTooManySignatures) {
		return "DKIM: " + printable(err.Error()), false, nil
	}
	var failures []string
	temporary := false
	for _, v := range verifs {
		if !aligned(v.Domain, r.domain) {
			failures = append(failures, fmt.Sprintf("d=%s: not the reporter's domain", printable(v.Domain)))
			continue
		}
		if v.Err == nil {
			return fmt.Sprintf("DKIM signature d=%s of feedback reporter <%s>", printable(v.Domain), printable(from)), true, nil
		}
		temporary = temporary || dkim.IsTempFail(v.Err)
		failures = append(failures, fmt.Sprintf("d=%s: %s", printable(v.Domain), printable(v.Err.Error())))
	}
	switch {
	case temporary:
		return "", false, fmt.Errorf("%w: DKIM key of %s: %s", errTemporary, r.domain, strings.Join(failures, "; "))
	case len(verifs) == 0:
		return fmt.Sprintf("From <%s> is a feedback reporter, but the report has no DKIM signature", printable(from)), false, nil
	}
	if len(failures) > 3 {
		failures = append(failures[:3], "...")
	}
	return fmt.Sprintf("From <%s> is a feedback reporter, but no DKIM signature of %s verifies (%s)",
		printable(from), r.domain, strings.Join(failures, "; ")), false, nil
}

// keyLookup is the DKIM verifier's TXT lookup: through the configured
// resolver, and only for the selectors of domains aligned with the
// reporter's (the others fail at once, as keys that do not exist).
func (s *Server) keyLookup(ctx context.Context, domain string) func(string) ([]string, error) {
	return func(name string) ([]string, error) {
		name = strings.TrimSuffix(strings.ToLower(name), ".")
		_, d, ok := strings.Cut(name, "._domainkey.")
		if !ok || !aligned(d, domain) {
			return nil, &net.DNSError{Err: "not looked up: not the feedback reporter's domain", Name: name, IsNotFound: true}
		}
		if s.dns == nil {
			return nil, &net.DNSError{Err: "no DNS resolver configured", Name: name, IsNotFound: true}
		}
		ans, err := s.dns.Lookup(ctx, name, dns.TypeTXT)
		if err != nil {
			// Temporary for go-msgauth: a tempfail, and a 451 for the reporter.
			return nil, &net.DNSError{Err: err.Error(), Name: name, IsTemporary: true}
		}
		// miekg/dns escapes quotes, backslashes and control bytes in the
		// strings; a DKIM key record has none (tags and base64), and one
		// that had would fail to verify: unverified, never wrongly verified.
		var txts []string
		for _, rr := range ans.Records {
			if t, ok := rr.(*dns.TXT); ok {
				txts = append(txts, strings.Join(t.Txt, ""))
			}
		}
		if len(txts) == 0 {
			return nil, &net.DNSError{Err: "no TXT record", Name: name, IsNotFound: true}
		}
		return txts, nil
	}
}

// headerFrom returns the address of the one From field of the message.
func headerFrom(raw []byte) (string, error) {
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return "", fmt.Errorf("the header cannot be read: %s", printable(err.Error()))
	}
	froms := msg.Header["From"]
	if len(froms) != 1 {
		return "", fmt.Errorf("the report has %d From fields, not one", len(froms))
	}
	list, err := mail.ParseAddressList(froms[0])
	if err != nil || len(list) != 1 {
		return "", fmt.Errorf("the From field %s is not one address", excerpt(froms[0]))
	}
	return list[0].Address, nil
}
