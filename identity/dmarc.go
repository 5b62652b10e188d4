package identity

import (
	"cmp"
	"context"
	"fmt"
	"strings"

	"github.com/miekg/dns"
	"golang.org/x/net/publicsuffix"

	"github.com/sesame-mail/sesame/store"
)

// checkDMARC wants exactly one DMARC record for domain, with a policy
// receivers understand: its own at _dmarc.DOMAIN or, when it has none, its
// organizational domain's, which receivers use then (RFC 7489 §6.6.3).
// Which policy is the operator's choice. A domain without any is missing
// one for a bulk sender, whom Gmail, Yahoo and Outlook.com require to have
// it, and warned otherwise.
func (c *Checker) checkDMARC(ctx context.Context, domain string, r Record, found []string) Finding {
	f := Finding{Record: r, Found: found}
	records, at, policyTag, err := c.applicableDMARC(ctx, domain, found)
	if err != nil {
		return Finding{Record: r, Status: StatusUnknown, LookupErr: err,
			Advice: fmt.Sprintf("DNS lookup of %s TXT (the organizational domain's DMARC record, which applies to %s when it has none): %v", at, domain, err)}
	}
	if at != r.Name {
		f.Found = records
	}
	switch {
	case len(records) == 0 && c.cfg.BulkSender:
		f.Status = StatusMissing
		f.Advice = publish(r) + "; Gmail, Yahoo and Outlook.com refuse or junk bulk mail from a domain without DMARC ([identity] bulk_sender is on)"
	case len(records) == 0:
		f.Status = StatusWarning
		f.Advice = publish(r) + "; Gmail, Yahoo and Outlook.com require DMARC of bulk senders (5,000 messages a day and more), " +
			"and it keeps others from using the domain in From"
	case len(records) > 1:
		// RFC 7489 §6.6.3: with more than one, no DMARC policy applies.
		f.Status = StatusWrong
		f.Advice = fmt.Sprintf("%s has %d DMARC records, so receivers apply none (RFC 7489 §6.6.3); keep one", at, len(records))
	default:
		p := policyOf(records[0], policyTag)
		switch p {
		case "none", "quarantine", "reject":
			f.Status, f.dmarc = StatusOK, records[0]
			if at != r.Name {
				f.Advice = fmt.Sprintf("%s has no DMARC record of its own; receivers apply the one of its organizational domain, %s, with %s=%s",
					domain, at, policyTag, p)
			}
			if p == "none" {
				f.Advice = strings.TrimPrefix(f.Advice+"; ", "; ") + "policy none: receivers deliver mail that fails DMARC as before and only report it; " +
					"once the reports show no sender of yours failing, move to p=quarantine, then p=reject"
			}
		default:
			has := policyTag + "=" + p
			if p == "" {
				has = "no p="
			}
			f.Status = StatusWrong
			f.Advice = fmt.Sprintf("the DMARC record at %s has %s, not a policy receivers know (RFC 7489 §6.3); "+
				"give p=none (reports only), p=quarantine or p=reject, e.g. %q", at, has, r.Value)
		}
	}
	return f
}

// applicableDMARC returns the DMARC records that apply to domain, given
// the TXT values found at _dmarc.DOMAIN: those, or when there are none the
// organizational domain's (RFC 7489 §6.6.3); where they were found; and the
// tag whose policy applies: "p", or "sp" for the organizational domain's
// (§6.3). The error is a lookup of the organizational domain's that failed.
func (c *Checker) applicableDMARC(ctx context.Context, domain string, own []string) (records []string, at, policyTag string, err error) {
	records, at, policyTag = dmarcRecords(own), "_dmarc."+domain, "p"
	if org := orgDomain(domain); len(records) == 0 && org != domain {
		ans, err := c.dns.Lookup(ctx, "_dmarc."+org, dns.TypeTXT)
		if err != nil {
			return nil, "_dmarc." + org, "", err
		}
		if orgRecords := dmarcRecords(txtValues(ans.Records)); len(orgRecords) > 0 {
			return orgRecords, "_dmarc." + org, "sp", nil
		}
	}
	return records, at, policyTag, nil
}

// policyOf returns the policy a DMARC record gives by tag ("p", or "sp"
// falling back to "p"), as written.
func policyOf(record, tag string) string {
	t, _ := tags(record)
	if tag == "sp" && t["sp"] != "" {
		return t["sp"]
	}
	return t["p"]
}

// DMARCPolicy returns the DMARC policy receivers apply to mail From: an
// address in domain: "none", "quarantine" or "reject"; "" when none
// applies (no record, several, or one without a valid policy). The error
// is a lookup that failed: the policy is then not known.
func (c *Checker) DMARCPolicy(ctx context.Context, domain string) (string, error) {
	ans, err := c.dns.Lookup(ctx, "_dmarc."+domain, dns.TypeTXT)
	if err != nil {
		return "", fmt.Errorf("identity: DMARC policy of %s: %w", domain, err)
	}
	records, _, tag, err := c.applicableDMARC(ctx, domain, txtValues(ans.Records))
	if err != nil {
		return "", fmt.Errorf("identity: DMARC policy of %s: %w", domain, err)
	}
	if len(records) != 1 {
		return "", nil
	}
	switch p := policyOf(records[0], tag); p {
	case "none", "quarantine", "reject":
		return p, nil
	}
	return "", nil
}

// dmarcRecords returns the values that are DMARC records: those that start
// with v=DMARC1 (RFC 7489 §6.6.3).
func dmarcRecords(values []string) []string {
	var out []string
	for _, v := range values {
		if t, order := tags(v); len(order) > 0 && order[0] == "v" && t["v"] == "DMARC1" {
			out = append(out, v)
		}
	}
	return out
}

// orgDomain is the organizational domain of name (RFC 7489 §3.2): the
// public suffix and one label more, by the Public Suffix List; name itself
// when it is a public suffix.
func orgDomain(name string) string {
	org, err := publicsuffix.EffectiveTLDPlusOne(strings.ToLower(strings.TrimSuffix(name, ".")))
	if err != nil {
		return name
	}
	return org
}

// aligned says whether domain a is aligned with the From domain from in
// mode "s" (strict: the same name) or "r" (relaxed: the same
// organizational domain), RFC 7489 §3.1.
func aligned(a, from, mode string) bool {
	if strings.EqualFold(a, from) {
		return true
	}
	return mode != "s" && strings.EqualFold(orgDomain(a), orgDomain(from))
}

// Audit returns Check's findings followed by how the domain's mail fares in
// the DMARC evaluation receivers make (RFC 7489 §3.1): whether the DKIM d=
// and the return path (MAIL FROM) domain Sesame uses are aligned with the
// From domain, under the adkim= and aspf= of the DMARC record that applies.
// It is what `sesame domain check` reports.
func (c *Checker) Audit(ctx context.Context, d store.Domain) ([]Finding, error) {
	findings, err := c.Check(ctx, d)
	if err != nil {
		return nil, err
	}
	var policy string
	for _, f := range findings {
		if f.kind == kindDMARC {
			policy = f.dmarc
		}
	}
	return append(findings, c.alignment(d.Name, policy)...), nil
}

// alignment judges the DKIM and SPF alignment of mail From: domain under
// the DMARC record policy ("" when there is none: receivers that evaluate
// DMARC at all then use the defaults, relaxed).
func (c *Checker) alignment(domain, policy string) []Finding {
	t, _ := tags(policy)
	adkim, aspf := cmp.Or(t["adkim"], "r"), cmp.Or(t["aspf"], "r")
	mode := map[string]string{"s": "strict", "r": "relaxed"}

	// Sesame signs with the keys of the From domain: d= is the domain
	// itself, aligned in either mode.
	dk := Finding{Record: Record{Type: "DKIM", Name: domain, Value: "d=" + domain,
		Purpose: fmt.Sprintf("alignment: Sesame signs mail from %s with d=%s, which DMARC wants aligned with the From domain (RFC 7489 §3.1.1, %s)",
			domain, domain, cmp.Or(mode[adkim], "relaxed"))},
		Status: StatusOK}

	rp := domain
	how := "the return path is the envelope sender the application gives, which Sesame takes to be in " + domain
	if c.cfg.SignedReturnPath {
		rp = c.cfg.MailFromSubdomain + "." + domain
		how = "mail from " + domain + " leaves with the return path b+TOKEN@" + rp
	}
	sp := Finding{Record: Record{Type: "SPF", Name: rp, Value: "MAIL FROM " + rp,
		Purpose: fmt.Sprintf("alignment: %s; receivers check SPF for it, and DMARC wants it aligned with the From domain (RFC 7489 §3.1.2, %s)",
			how, cmp.Or(mode[aspf], "relaxed"))},
		Status: StatusOK}
	if !aligned(rp, domain, aspf) {
		var keep []string
		for _, part := range strings.Split(policy, ";") {
			if name, _, _ := strings.Cut(part, "="); strings.TrimSpace(name) != "aspf" && strings.TrimSpace(part) != "" {
				keep = append(keep, strings.TrimSpace(part))
			}
		}
		sp.Status = StatusWarning
		sp.Advice = fmt.Sprintf("aspf=s in the DMARC record of %s asks for strict SPF alignment, which the return path %s never has, "+
			"so DMARC passes on the DKIM signature alone and fails where a forwarder breaks it; drop aspf=s (relaxed is the default): %q",
			domain, rp, strings.Join(keep, "; "))
	}
	return []Finding{dk, sp}
}
