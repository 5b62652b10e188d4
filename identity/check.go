package identity

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/miekg/dns"
	"github.com/sesame-mail/sesame/dnsclient"
	"github.com/sesame-mail/sesame/store"
)

// Finding statuses.
const (
	StatusOK      = "ok"      // published and right
	StatusMissing = "missing" // not published
	StatusWrong   = "wrong"   // published, but receivers would not get what Sesame needs
	StatusUnknown = "unknown" // the lookup failed, or the record cannot be judged here
)

// Finding is a Record as found in DNS.
type Finding struct {
	Record
	Status string   `json:"status"` // StatusOK, StatusMissing, StatusWrong or StatusUnknown
	Found  []string `json:"found"`  // the values seen at the name
	Advice string   `json:"advice"` // what to do, or "" when nothing is to be done
	// LookupErr is why the lookup failed (Status is then StatusUnknown):
	// not a verdict on the record but on the DNS servers, so a caller may
	// treat it apart from a record Sesame cannot judge.
	LookupErr error `json:"-"`
}

// Checker looks up the records of a domain and judges them. It is safe for
// concurrent use.
type Checker struct {
	cfg Config
	// dns has no cache: a check must see what the operator has just
	// published, not what was there an hour ago.
	dns *dnsclient.Client
}

// NewChecker returns a Checker that asks cfg.DNSServers (or the servers of
// /etc/resolv.conf), which must be recursive.
func NewChecker(cfg Config) (*Checker, error) {
	cfg = cfg.withDefaults()
	c, err := dnsclient.New(cfg.DNSServers, cfg.DNSTimeout)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	if _, err := cfg.sourceIPs(); err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	return &Checker{cfg: cfg, dns: c}, nil
}

// Check looks up every Record of d and says whether each is present and
// right, in the order of Records. A failed lookup makes its finding
// StatusUnknown, not an error; the error is for records that cannot be made
// (a damaged key) or a context that ended.
func (c *Checker) Check(ctx context.Context, d store.Domain) ([]Finding, error) {
	recs, err := c.cfg.Records(d)
	if err != nil {
		return nil, err
	}
	findings := make([]Finding, len(recs))
	var wg sync.WaitGroup
	for i, r := range recs {
		wg.Go(func() { findings[i] = c.check(ctx, d.Name, r) })
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("identity: check %s: %w", d.Name, err)
	}
	return findings, nil
}

func (c *Checker) check(ctx context.Context, domain string, r Record) Finding {
	qtype := dns.TypeTXT
	if r.Type == "MX" {
		qtype = dns.TypeMX
	}
	// No records, and no error, when the name does not exist or has none of
	// that type. The error says why no server gave a usable answer
	// (SERVFAIL, timeout, …): that is not an answer about the record.
	ans, err := c.dns.Lookup(ctx, r.Name, qtype)
	if err != nil {
		return Finding{Record: r, Status: StatusUnknown, LookupErr: err,
			Advice: fmt.Sprintf("DNS lookup of %s %s: %v", r.Name, dns.TypeToString[qtype], err) +
				"; Sesame looks again at its next check, or run sesame domain verify " + domain}
	}
	rrs := ans.Records
	switch r.kind {
	case kindDKIM:
		return checkDKIM(r, txtValues(rrs))
	case kindSPF:
		return c.checkSPF(r, txtValues(rrs))
	case kindMailFrom:
		return c.checkMX(r, rrs)
	default:
		return checkDMARC(r, txtValues(rrs))
	}
}

// txtValues returns the text of each TXT record, its strings joined
// without separator as RFC 6376 §3.6.2.2 and RFC 7208 §3.3 say: a DKIM key
// is longer than the 255 bytes of one string.
func txtValues(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		if t, ok := rr.(*dns.TXT); ok {
			var b strings.Builder
			for _, s := range t.Txt {
				b.WriteString(unescapeTXT(s))
			}
			out = append(out, b.String())
		}
	}
	return out
}

// unescapeTXT undoes the presentation-format escapes miekg/dns puts in the
// strings of a TXT record it received (RFC 1035 §5.1): "\DDD" for a byte
// given in decimal, "\X" for X itself. A tab folded into a DKIM key arrives
// as "\009".
func unescapeTXT(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 == len(s) {
			b.WriteByte(c)
			continue
		}
		if i+3 < len(s) && isDigit(s[i+1]) && isDigit(s[i+2]) && isDigit(s[i+3]) {
			if n := int(s[i+1]-'0')*100 + int(s[i+2]-'0')*10 + int(s[i+3]-'0'); n <= 255 {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i+1])
		i++
	}
	return b.String()
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func publish(r Record) string {
	if r.Type == "TXT" {
		return fmt.Sprintf("publish %s %s %q", r.Type, r.Name, r.Value)
	}
	return fmt.Sprintf("publish %s %s %s", r.Type, r.Name, r.Value)
}

// tags parses a DKIM or DMARC tag list ("v=DKIM1; k=rsa; p=...", RFC 6376
// §3.2, RFC 7489 §6.4). Tag names are case-sensitive; whitespace around
// names and values is dropped, and so is whitespace inside values, which
// only base64 values may contain (folded, §3.6.1).
func tags(s string) (map[string]string, []string) {
	m := make(map[string]string)
	var order []string
	for _, part := range strings.Split(s, ";") {
		name, value, ok := strings.Cut(part, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" {
			continue
		}
		if _, dup := m[name]; !dup {
			order = append(order, name)
		}
		m[name] = strings.Join(strings.Fields(value), "")
	}
	return m, order
}

// checkDKIM wants a key record at the selector name carrying the same
// public key (p=) as r.
func checkDKIM(r Record, found []string) Finding {
	f := Finding{Record: r, Found: found}
	want, _ := tags(r.Value)
	if len(found) == 0 {
		f.Status, f.Advice = StatusMissing, publish(r)
		return f
	}
	var why string
	matches := 0
	for _, v := range found {
		got, _ := tags(v)
		p, hasP := got["p"]
		switch {
		case !hasP:
			why = "is not a DKIM key record (it has no p= tag)"
		case got["v"] != "" && got["v"] != "DKIM1":
			// RFC 6376 §3.6.1: v=, if present, must be "DKIM1".
			why = "has v=" + got["v"] + ", which verifiers reject; it must be v=DKIM1"
		case p == "":
			why = "has an empty p=, which means the key is revoked (RFC 6376 §3.6.1)"
		case p != want["p"] || cmp.Or(got["k"], "rsa") != want["k"]: // k= defaults to rsa (§3.6.1)
			why = "holds another key than Sesame's for this selector"
		default:
			matches++
		}
	}
	switch {
	case matches == 0:
		f.Status = StatusWrong
		f.Advice = fmt.Sprintf("the TXT record at %s %s; replace it with %q", r.Name, why, r.Value)
	case len(found) > 1:
		// RFC 6376 §3.6.2.2: with several records a verifier may pick any
		// one, so the others make verification fail at random.
		f.Status = StatusOK
		f.Advice = fmt.Sprintf("%s has %d TXT records; remove all but %q: verifiers may use any one of them (RFC 6376 §3.6.2.2)",
			r.Name, len(found), r.Value)
	default:
		f.Status = StatusOK
	}
	return f
}

// checkDMARC wants exactly one DMARC record; its policy is the operator's
// choice.
func checkDMARC(r Record, found []string) Finding {
	f := Finding{Record: r, Found: found}
	n := 0
	for _, v := range found {
		// RFC 7489 §6.6.3: records that do not start with v=DMARC1 are
		// not DMARC records.
		if t, order := tags(v); len(order) > 0 && order[0] == "v" && t["v"] == "DMARC1" {
			n++
		}
	}
	switch {
	case n == 0:
		f.Status, f.Advice = StatusMissing, publish(r)
	case n > 1:
		// RFC 7489 §6.6.3: with more than one, no DMARC policy applies.
		f.Status = StatusWrong
		f.Advice = fmt.Sprintf("%s has %d DMARC records, so receivers apply none (RFC 7489 §6.6.3); keep one", r.Name, n)
	default:
		f.Status = StatusOK
	}
	return f
}

// checkMX wants an MX record of the MAIL FROM domain that points at Sesame.
func (c *Checker) checkMX(r Record, rrs []dns.RR) Finding {
	f := Finding{Record: r}
	ours := false
	for _, rr := range rrs {
		mx, ok := rr.(*dns.MX)
		if !ok {
			continue
		}
		host := strings.ToLower(strings.TrimSuffix(mx.Mx, "."))
		if host == "" {
			host = "." // a null MX (RFC 7505)
		}
		f.Found = append(f.Found, strconv.Itoa(int(mx.Preference))+" "+host)
		ours = ours || host == c.cfg.Hostname
	}
	switch {
	case len(f.Found) == 0:
		f.Status, f.Advice = StatusMissing, publish(r)
	case !ours:
		f.Status = StatusWrong
		f.Advice = fmt.Sprintf("the MX records of %s do not point at %s, so bounces would not come back to Sesame; replace them with MX %s",
			r.Name, c.cfg.Hostname, r.Value)
	case len(f.Found) > 1:
		f.Status = StatusOK
		f.Advice = fmt.Sprintf("%s has other MX records besides %s; bounces sent to them do not reach Sesame: remove them", r.Name, c.cfg.Hostname)
	default:
		f.Status = StatusOK
	}
	return f
}

// spfResult is what an SPF record yields for one of Sesame's addresses.
type spfResult int

const (
	spfPass    spfResult = iota
	spfNotPass           // fail, softfail, neutral or none: receivers do not accept Sesame
	spfUnsure            // depends on terms Sesame does not evaluate
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
// Sesame's addresses.
func (c *Checker) checkSPF(r Record, txts []string) Finding {
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
	for _, t := range targets {
		res, skipped := evalSPF(terms, t, c.cfg.Hostname)
		switch res {
		case spfNotPass:
			missing = append(missing, t.name)
		case spfUnsure:
			unsure = append(unsure, t.name)
			for _, s := range skipped {
				if !slices.Contains(unevaluated, s) {
					unevaluated = append(unevaluated, s)
				}
			}
		}
	}
	// Sesame's terms go first, where nothing before them can decide.
	fixed := strings.Join(slices.Concat([]string{"v=spf1"}, missing, unsure, strings.Fields(f.Found[0])[1:]), " ")
	switch {
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

// isSPF reports whether a TXT record is an SPF record: "v=spf1" alone or
// followed by a space (RFC 7208 §4.5).
func isSPF(v string) bool {
	return len(v) >= 6 && strings.EqualFold(v[:6], "v=spf1") && (len(v) == 6 || v[6] == ' ')
}

// spfTerm is one directive or modifier of an SPF record (RFC 7208 §4.6.1).
type spfTerm struct {
	text      string // as written
	qualifier byte   // '+', '-', '~' or '?'; 0 for a modifier
	name      string // mechanism or modifier name, lower case
	arg       string // domain-spec or IP network, without the CIDR length of a/mx
	prefix    netip.Prefix
}

// parseSPF splits an SPF record into terms. A syntax error is what
// receivers call a permerror.
func parseSPF(record string) ([]spfTerm, error) {
	var terms []spfTerm
	for _, word := range strings.Fields(record)[1:] {
		// A modifier is name=value, its name starting with a letter; a
		// mechanism has no '=' before any ':' or '/'.
		if i := strings.IndexByte(word, '='); i > 0 && !strings.ContainsAny(word[:i], ":/") {
			terms = append(terms, spfTerm{text: word, name: strings.ToLower(word[:i]), arg: word[i+1:]})
			continue
		}
		t := spfTerm{text: word, qualifier: '+'}
		rest := word
		if strings.IndexByte("+-~?", rest[0]) >= 0 {
			t.qualifier, rest = rest[0], rest[1:]
		}
		name, arg, _ := strings.Cut(rest, ":")
		if i := strings.IndexByte(name, '/'); i >= 0 {
			name = name[:i] // "a/24", "mx/24"
		}
		t.name = strings.ToLower(name)
		switch t.name {
		case "ip4", "ip6":
			var err error
			if t.prefix, err = parseNetwork(arg, t.name == "ip4"); err != nil {
				return nil, fmt.Errorf("%s: %w", word, err)
			}
		case "a", "mx", "ptr":
			t.arg, _, _ = strings.Cut(arg, "/")
		case "include", "exists":
			if arg == "" {
				return nil, fmt.Errorf("%s needs a domain", word)
			}
			t.arg = arg
		case "all":
		default:
			return nil, fmt.Errorf("unknown mechanism %q", word)
		}
		terms = append(terms, t)
	}
	return terms, nil
}

func parseNetwork(s string, v4 bool) (netip.Prefix, error) {
	var p netip.Prefix
	var err error
	if strings.Contains(s, "/") {
		p, err = netip.ParsePrefix(s)
	} else {
		var ip netip.Addr
		if ip, err = netip.ParseAddr(s); err == nil {
			p = netip.PrefixFrom(ip, ip.BitLen())
		}
	}
	if err != nil {
		return netip.Prefix{}, err
	}
	if p.Addr().Is4() != v4 {
		return netip.Prefix{}, fmt.Errorf("%s is of the wrong IP version", s)
	}
	return p, nil
}

// evalSPF runs the record's directives for t in order, as a receiver would
// (RFC 7208 §4.6.2), as far as it can without DNS, and returns the terms it
// could not evaluate on the way. Such a term (an include, say) might match;
// after one, a later match decides only if the unevaluated term could not
// have given another result.
func evalSPF(terms []spfTerm, t spfTarget, hostname string) (spfResult, []string) {
	var skipped []string
	var mayPass, mayNotPass bool // an earlier unevaluated term might have matched with this result
	redirect := false
	for _, term := range terms {
		if term.qualifier == 0 {
			if term.name == "redirect" {
				redirect = true
				skipped = append(skipped, term.text)
			}
			continue
		}
		var matches, known bool
		switch term.name {
		case "all":
			matches, known = true, true
		case "ip4", "ip6":
			// Sesame's host name: its addresses may or may not be listed.
			known = t.ip.IsValid()
			matches = known && term.prefix.Contains(t.ip)
		case "a":
			// The host name that sends stands for its addresses, whatever
			// they are.
			if strings.EqualFold(strings.TrimSuffix(term.arg, "."), hostname) {
				matches, known = true, true
			}
		}
		if !known {
			skipped = append(skipped, term.text)
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
		if term.qualifier == '+' {
			if mayNotPass {
				return spfUnsure, skipped
			}
			return spfPass, nil
		}
		if mayPass {
			return spfUnsure, skipped
		}
		return spfNotPass, nil
	}
	// RFC 7208 §6.1: redirect applies only when no mechanism matched.
	if redirect || mayPass {
		return spfUnsure, skipped
	}
	return spfNotPass, nil
}
