package identity

import (
	"cmp"
	"context"
	"fmt"
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
	StatusWarning = "warning" // receivers accept the mail, but the domain falls short of what they advise
)

// Finding is a Record as found in DNS.
type Finding struct {
	Record
	Status string   `json:"status"` // StatusOK, StatusMissing, StatusWrong, StatusUnknown or StatusWarning
	Found  []string `json:"found"`  // the values seen at the name
	Advice string   `json:"advice"` // what to do, or "" when nothing is to be done
	// dmarc is, for the DMARC record, the one record that applies to the
	// domain (its own, or its organizational domain's), for Audit.
	dmarc string
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
		return c.checkSPF(ctx, r, txtValues(rrs))
	case kindMailFrom:
		return c.checkMX(r, rrs)
	default:
		return c.checkDMARC(ctx, domain, r, txtValues(rrs))
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
