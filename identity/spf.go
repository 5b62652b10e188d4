package identity

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/miekg/dns"

	"github.com/sesame-mail/sesame/dnsclient"
)

// SPF limits of RFC 7208 §4.6.4: a receiver that meets more terms that ask
// DNS, or more of them that find nothing, gives up with a permerror, and
// the domain fails SPF wherever it is checked.
const (
	spfMaxLookups     = 10 // include, a, mx, ptr, exists and redirect, nested includes too
	spfMaxVoidLookups = 2  // of those, lookups answered NXDOMAIN or with no records
	spfMaxMXPTRNames  = 10 // address lookups for the names of one mx or ptr term
)

// spfResult is what an SPF record yields for one of Sesame's addresses.
type spfResult int

const (
	spfPass      spfResult = iota
	spfNotPass             // fail, softfail, neutral or none: receivers do not accept Sesame
	spfUnsure              // depends on terms Sesame does not evaluate
	spfPermError           // receivers give up on the record (RFC 7208 §2.6.7)
	spfTempError           // a lookup failed; receivers would try again later
)

// spfTarget is a sender to judge an SPF record for: one of Sesame's
// configured outbound addresses, or (when none is configured) its host name.
type spfTarget struct {
	ip   netip.Addr
	name string // what to add to the record for it: "ip4:…", "ip6:…" or "a:HOSTNAME"
}

func (c *Checker) spfTargets() []spfTarget {
	ips, _ := c.cfg.sourceIPs() // checked by NewChecker
	if len(ips) == 0 {
		return []spfTarget{{name: "a:" + c.cfg.Hostname}}
	}
	var out []spfTarget
	for _, ip := range ips {
		out = append(out, spfTarget{ip: ip, name: spfMechanism(ip)})
	}
	return out
}

// checkSPF wants exactly one SPF record at the name that passes each of
// Sesame's addresses when a receiver evaluates it, includes and all.
func (c *Checker) checkSPF(ctx context.Context, r Record, txts []string) Finding {
	f := Finding{Record: r}
	for _, v := range txts {
		if isSPF(v) {
			f.Found = append(f.Found, v)
		}
	}
	targets := c.spfTargets()
	var mechs []string
	for _, t := range targets {
		mechs = append(mechs, t.name)
	}
	switch len(f.Found) {
	case 0:
		f.Status, f.Advice = StatusMissing, publish(r)
		return f
	case 1:
	default:
		// RFC 7208 §4.5: more than one record is a permerror, and
		// receivers treat the domain as having no SPF at all.
		f.Status = StatusWrong
		f.Advice = fmt.Sprintf("%s has %d SPF records, which receivers treat as an error (RFC 7208 §4.5) and ignore all of them; "+
			"merge them into one v=spf1 record that keeps their mechanisms and adds %s", r.Name, len(f.Found), strings.Join(mechs, " "))
		return f
	}

	terms, err := parseSPF(f.Found[0])
	if err != nil {
		f.Status = StatusWrong
		f.Advice = fmt.Sprintf("the SPF record at %s is invalid (%v), which receivers treat as an error (RFC 7208 §4.6); fix it, e.g. %q",
			r.Name, err, r.Value)
		return f
	}
	var missing, unsure, unevaluated []string
	var permErr string
	answers := spfAnswers{} // the targets ask mostly the same questions
	for _, t := range targets {
		e := &spfEval{ctx: ctx, c: c, target: t, answers: answers}
		res := e.checkHost(r.Name, terms)
		switch res {
		case spfNotPass:
			missing = append(missing, t.name)
		case spfUnsure:
			unsure = append(unsure, t.name)
			for _, s := range e.skipped {
				if !slices.Contains(unevaluated, s) {
					unevaluated = append(unevaluated, s)
				}
			}
		case spfPermError:
			if permErr == "" {
				permErr = e.why
			}
		case spfTempError:
			f.Status, f.LookupErr = StatusUnknown, e.err
			f.Advice = fmt.Sprintf("evaluating the SPF record at %s for %s: %s; Sesame looks again at its next check", r.Name, t.name, e.why)
			return f
		}
	}
	// Sesame's terms go first, where nothing before them can decide, and
	// where a receiver reaches them before any lookup.
	rest := strings.Fields(f.Found[0])[1:]
	fixed := strings.Join(slices.Concat([]string{"v=spf1"}, missing, unsure, rest), " ")
	switch {
	case permErr != "":
		f.Status = StatusWrong
		f.Advice = fmt.Sprintf("receivers give up on the SPF record at %s with a permanent error (%s), so SPF fails for all its mail; "+
			"remove terms (or replace an include by the ip4:/ip6: terms it stands for) until it is right", r.Name, permErr)
		others := slices.DeleteFunc(slices.Clone(rest), func(w string) bool { return slices.Contains(mechs, w) })
		if first := slices.Concat(mechs, others); !slices.Equal(first, rest) {
			f.Advice += fmt.Sprintf("; putting Sesame's terms first lets receivers match Sesame before any lookup: %q",
				strings.Join(slices.Concat([]string{"v=spf1"}, first), " "))
		}
	case len(missing) > 0:
		f.Status = StatusWrong
		f.Advice = fmt.Sprintf("the SPF record at %s does not allow Sesame's %s; change it to %q", r.Name, strings.Join(missing, " "), fixed)
	case len(unsure) > 0:
		f.Status = StatusUnknown
		f.Advice = fmt.Sprintf("whether the SPF record at %s allows %s depends on %s, which Sesame cannot evaluate; "+
			"make sure it does, or change the record to %q", r.Name, strings.Join(unsure, " "), strings.Join(unevaluated, " "), fixed)
		if !targets[0].ip.IsValid() {
			f.Advice += "; with Sesame's outbound addresses in relay.source_ips (or [[ip]]), Sesame could check ip4:/ip6: terms"
		}
	default:
		f.Status = StatusOK
	}
	return f
}

// spfEval evaluates SPF records for one sender the way a receiver does
// (RFC 7208 §4.6, check_host()), asking DNS for include, a, mx, ptr,
// exists and redirect, and counting those lookups against the limits
// receivers apply. Where it cannot know the answer (a macro, or an address
// term without Sesame's address) it notes the term and carries on, as far
// as the outcome does not depend on it.
type spfEval struct {
	ctx     context.Context
	c       *Checker
	target  spfTarget
	answers spfAnswers // earlier answers, shared by the evaluations of one record; nil: none kept

	lookups int      // terms that asked DNS
	voids   int      // of those, the ones that found nothing
	skipped []string // terms that could not be evaluated
	why     string   // for a permerror or temperror: what happened
	err     error    // for a temperror: the lookup error
}

// spfAnswers keeps DNS answers for the evaluations of one record for each
// of Sesame's addresses, which ask mostly the same questions. Each
// evaluation still counts its lookups as a receiver would make them.
type spfAnswers map[dns.Question]dnsclient.Answer

// checkHost evaluates the record terms of domain (RFC 7208 §4.6.2): the
// first mechanism that matches decides, else redirect=, else neutral.
func (e *spfEval) checkHost(domain string, terms []spfTerm) spfResult {
	var mayPass, mayNotPass bool // an earlier unevaluated term might have matched with this result
	var redirect string
	for _, term := range terms {
		if term.qualifier == 0 {
			if term.name == "redirect" {
				redirect = term.arg
			}
			continue
		}
		matches, known, res := e.mechanism(domain, term)
		if res == spfPermError || res == spfTempError {
			return res
		}
		if !known {
			e.skipped = append(e.skipped, term.text)
			if term.qualifier == '+' {
				mayPass = true
			} else {
				mayNotPass = true
			}
			continue
		}
		if !matches {
			continue
		}
		switch {
		case term.qualifier == '+' && mayNotPass, term.qualifier != '+' && mayPass:
			return spfUnsure
		case term.qualifier == '+':
			return spfPass
		}
		return spfNotPass
	}
	if redirect == "" {
		// RFC 7208 §4.7: no match and no redirect is neutral.
		if mayPass {
			return spfUnsure
		}
		return spfNotPass
	}
	// RFC 7208 §6.1: redirect applies only when no mechanism matched, and
	// the target's result is the result; a target without a record is a
	// permerror.
	res := e.include(redirect, "redirect="+redirect)
	if res == spfUnsure && strings.Contains(redirect, "%") {
		e.skipped = append(e.skipped, "redirect="+redirect)
	}
	switch {
	case res == spfNotPass && mayPass, res == spfPass && mayNotPass:
		return spfUnsure
	case res == spfNone:
		e.why = fmt.Sprintf("redirect=%s names a domain without an SPF record (RFC 7208 §6.1)", redirect)
		return spfPermError
	}
	return res
}

// spfNone is include's result for a domain without an SPF record; it never
// leaves the evaluator.
const spfNone spfResult = -1

// include fetches and evaluates the record of domain, for include: or
// redirect= (named by term), after counting the lookup.
func (e *spfEval) include(domain, term string) spfResult {
	if res := e.count(term); res != spfPass {
		return res
	}
	if strings.Contains(domain, "%") {
		return spfUnsure // a macro: Sesame does not expand them
	}
	ans, res := e.lookup(term, domain, dns.TypeTXT)
	if res != spfPass {
		return res
	}
	var records []string
	for _, v := range txtValues(ans) {
		if isSPF(v) {
			records = append(records, v)
		}
	}
	switch len(records) {
	case 0:
		if res := e.void(term); res != spfPass {
			return res
		}
		return spfNone
	case 1:
	default:
		e.why = fmt.Sprintf("%s: %s has %d SPF records (RFC 7208 §4.5)", term, domain, len(records))
		return spfPermError
	}
	terms, err := parseSPF(records[0])
	if err != nil {
		e.why = fmt.Sprintf("%s: the record of %s is invalid: %v", term, domain, err)
		return spfPermError
	}
	return e.checkHost(strings.ToLower(strings.TrimSuffix(domain, ".")), terms)
}

// mechanism says whether term matches the target. known is false when
// Sesame cannot tell; res is spfPermError or spfTempError when the
// evaluation ends there, else spfPass.
func (e *spfEval) mechanism(domain string, term spfTerm) (matches, known bool, res spfResult) {
	ip := e.target.ip
	target := term.arg
	if target == "" {
		target = domain
	}
	switch term.name {
	case "all":
		return true, true, spfPass
	case "ip4", "ip6":
		return ip.IsValid() && term.prefix.Contains(ip), ip.IsValid(), spfPass
	case "include":
		switch r := e.include(target, term.text); r {
		case spfPass:
			return true, true, spfPass
		case spfNotPass:
			return false, true, spfPass
		case spfUnsure:
			return false, false, spfPass
		case spfNone:
			// RFC 7208 §5.2: an include of a domain without a record is
			// a permerror.
			e.why = fmt.Sprintf("%s names a domain without an SPF record (RFC 7208 §5.2)", term.text)
			return false, false, spfPermError
		default:
			return false, false, r
		}
	}
	if r := e.count(term.text); r != spfPass {
		return false, false, r
	}
	if strings.Contains(target, "%") {
		return false, false, spfPass // a macro: Sesame does not expand them
	}
	switch term.name {
	case "a":
		if !ip.IsValid() {
			// The host name that sends stands for its addresses, whatever
			// they are; another name may or may not hold them.
			ours := strings.EqualFold(strings.TrimSuffix(target, "."), e.c.cfg.Hostname)
			return ours, ours, spfPass
		}
		addrs, r := e.addresses(term.text, target, true)
		return containsAddr(addrs, ip, term), true, r
	case "mx":
		if !ip.IsValid() {
			return false, false, spfPass
		}
		ans, r := e.lookup(term.text, target, dns.TypeMX)
		if r != spfPass {
			return false, false, r
		}
		if len(ans) == 0 {
			return false, true, e.void(term.text)
		}
		if len(ans) > spfMaxMXPTRNames {
			e.why = fmt.Sprintf("%s: %s has %d MX records, more than the %d receivers look up (RFC 7208 §4.6.4)", term.text, target, len(ans), spfMaxMXPTRNames)
			return false, false, spfPermError
		}
		for _, rr := range ans {
			mx, ok := rr.(*dns.MX)
			if !ok || mx.Mx == "." {
				continue
			}
			addrs, r := e.addresses(term.text, mx.Mx, false)
			if r != spfPass {
				return false, false, r
			}
			if containsAddr(addrs, ip, term) {
				return true, true, spfPass
			}
		}
		return false, true, spfPass
	case "ptr":
		if !ip.IsValid() {
			return false, false, spfPass
		}
		names, r := e.validatedNames(term.text)
		if r != spfPass {
			return false, false, r
		}
		want := strings.ToLower(strings.TrimSuffix(target, "."))
		for _, n := range names {
			if n == want || strings.HasSuffix(n, "."+want) {
				return true, true, spfPass
			}
		}
		return false, true, spfPass
	case "exists":
		ans, r := e.lookup(term.text, target, dns.TypeA)
		if r != spfPass {
			return false, false, r
		}
		if len(ans) == 0 {
			return false, true, e.void(term.text)
		}
		return true, true, spfPass
	}
	return false, false, spfPass
}

// count counts one term that asks DNS, and fails the evaluation past the
// limit.
func (e *spfEval) count(term string) spfResult {
	e.lookups++
	if e.lookups > spfMaxLookups {
		e.why = fmt.Sprintf("it needs more than %d DNS lookups (include, a, mx, ptr, exists and redirect count, nested ones too; RFC 7208 §4.6.4), the %dth being %s",
			spfMaxLookups, e.lookups, term)
		return spfPermError
	}
	return spfPass
}

// void counts a lookup that found nothing, and fails the evaluation past the
// limit.
func (e *spfEval) void(term string) spfResult {
	e.voids++
	if e.voids > spfMaxVoidLookups {
		e.why = fmt.Sprintf("more than %d of its lookups find nothing (NXDOMAIN or no records; RFC 7208 §4.6.4), the last for %s",
			spfMaxVoidLookups, term)
		return spfPermError
	}
	return spfPass
}

// lookup asks DNS for name's records of type qtype; a failure is a
// temperror for term.
func (e *spfEval) lookup(term, name string, qtype uint16) ([]dns.RR, spfResult) {
	if _, ok := dns.IsDomainName(name); !ok || name == "" {
		e.why = fmt.Sprintf("%s: %q is not a domain name", term, name)
		return nil, spfPermError
	}
	q := dns.Question{Name: dns.CanonicalName(name), Qtype: qtype}
	ans, known := e.answers[q]
	var err error
	if !known {
		if ans, err = e.c.dns.Lookup(e.ctx, name, qtype); err == nil && e.answers != nil {
			e.answers[q] = ans
		}
	}
	if err != nil {
		e.err = err
		e.why = fmt.Sprintf("%s: DNS lookup of %s %s: %v", term, name, dns.TypeToString[qtype], err)
		return nil, spfTempError
	}
	return ans.Records, spfPass
}

// addresses looks up name's addresses of the target's family; counted
// says whether an empty answer is a void lookup (it is for an a term, not
// for the hosts of an mx term).
func (e *spfEval) addresses(term, name string, counted bool) ([]netip.Addr, spfResult) {
	qtype := dns.TypeA
	if e.target.ip.Is6() {
		qtype = dns.TypeAAAA
	}
	ans, r := e.lookup(term, name, qtype)
	if r != spfPass {
		return nil, r
	}
	if len(ans) == 0 && counted {
		return nil, e.void(term)
	}
	return rrAddrs(ans), spfPass
}

// validatedNames returns the target's PTR names that resolve back to it
// (RFC 7208 §5.5), looking up at most the first 10.
func (e *spfEval) validatedNames(term string) ([]string, spfResult) {
	rev, err := dns.ReverseAddr(e.target.ip.String())
	if err != nil {
		return nil, spfPass
	}
	ans, r := e.lookup(term, rev, dns.TypePTR)
	if r == spfTempError {
		// RFC 7208 §5.5: a DNS error in the PTR lookup makes ptr not match.
		return nil, spfPass
	}
	if r != spfPass {
		return nil, r
	}
	if len(ans) == 0 {
		return nil, e.void(term)
	}
	var out []string
	for i, rr := range ans {
		p, ok := rr.(*dns.PTR)
		if !ok || i >= spfMaxMXPTRNames {
			continue
		}
		addrs, r := e.addresses(term, p.Ptr, false)
		if r == spfPermError {
			return nil, r
		}
		// RFC 7208 §5.5: a name whose lookup fails is skipped.
		if r == spfPass && slices.Contains(addrs, e.target.ip) {
			out = append(out, strings.ToLower(strings.TrimSuffix(p.Ptr, ".")))
		}
	}
	return out, spfPass
}

func rrAddrs(rrs []dns.RR) []netip.Addr {
	var out []netip.Addr
	for _, rr := range rrs {
		var ip netip.Addr
		switch v := rr.(type) {
		case *dns.A:
			ip, _ = netip.AddrFromSlice(v.A.To4())
		case *dns.AAAA:
			ip, _ = netip.AddrFromSlice(v.AAAA)
		}
		if ip.IsValid() {
			out = append(out, ip.Unmap())
		}
	}
	return out
}

// containsAddr says whether ip is within the term's CIDR length of one of
// addrs.
func containsAddr(addrs []netip.Addr, ip netip.Addr, term spfTerm) bool {
	bits := term.v4
	if ip.Is6() {
		bits = term.v6
	}
	for _, a := range addrs {
		if p, err := a.Prefix(bits); err == nil && a.Is4() == ip.Is4() && p.Contains(ip) {
			return true
		}
	}
	return false
}
