package identity

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/sesame-mail/sesame/store"
)

// Config is what identity needs from the configuration.
type Config struct {
	Hostname              string        // Sesame's host name: MX target of the MAIL FROM subdomain, link host fallback
	SourceIPs             []string      // outbound IPs (relay.source_ips and [[ip]]), which the SPF record must allow
	DNSServers            []string      // "ip:port"; empty: those of /etc/resolv.conf
	DNSTimeout            time.Duration // one query to one server; default 5s
	PublicURL             string        // base of verification links, e.g. "https://relay.example.com"; default "https://" + Hostname
	MailFromSubdomain     string        // default "bounce": the MAIL FROM domain is bounce.DOMAIN
	DMARCReportAddress    string        // rua= address; "" means "dmarc-reports@DOMAIN"
	PendingCheckInterval  time.Duration // default 5m
	VerifiedCheckInterval time.Duration // default 24h
	PendingTimeout        time.Duration // default 72h: pending longer than this → failed
	FailedAfterChecks     int           // default 3: a verified domain failing this many checks in a row → failed
	AddressLinkTTL        time.Duration // default 24h
	RotateEvery           time.Duration // rotate each DKIM key after it has signed this long; 0: never
	RotationGrace         time.Duration // default 7 days: a replaced key's record stays published this long
	Logger                *slog.Logger  // default: discard
	// SystemSigner DKIM-signs the verification mail, which comes from
	// no-reply@Hostname; nil leaves it unsigned.
	SystemSigner SystemSigner
	Now          func() time.Time

	// BulkSender holds domains to the rules Gmail, Yahoo and Outlook.com
	// set for bulk senders: without a DMARC record a domain is then
	// missing one, not only warned about it.
	BulkSender bool
	// SignedReturnPath says that mail from a verified domain leaves with a
	// return path in MailFromSubdomain.DOMAIN (the inbound listener is
	// on); otherwise it keeps the application's own envelope sender.
	SignedReturnPath bool
}

// SystemSigner signs the mail Sesame writes itself (dkim.SystemSigner): it
// returns msg with a signature on top, or as it was when it cannot sign.
type SystemSigner interface {
	Sign(ctx context.Context, msg []byte) []byte
}

// withDefaults returns c with every unset field at its default.
func (c Config) withDefaults() Config {
	set := func(d *time.Duration, def time.Duration) {
		if *d <= 0 {
			*d = def
		}
	}
	set(&c.DNSTimeout, 5*time.Second)
	set(&c.PendingCheckInterval, 5*time.Minute)
	set(&c.VerifiedCheckInterval, 24*time.Hour)
	set(&c.PendingTimeout, 72*time.Hour)
	set(&c.AddressLinkTTL, 24*time.Hour)
	set(&c.RotationGrace, 7*24*time.Hour)
	if c.FailedAfterChecks < 1 {
		c.FailedAfterChecks = 3
	}
	if c.MailFromSubdomain == "" {
		c.MailFromSubdomain = "bounce"
	}
	c.Hostname = strings.ToLower(strings.TrimSuffix(c.Hostname, "."))
	if c.PublicURL == "" {
		c.PublicURL = "https://" + c.Hostname
	}
	c.PublicURL = strings.TrimSuffix(c.PublicURL, "/")
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Record kinds, which tell Check how to judge a record.
const (
	kindDKIM     = "dkim"
	kindSPF      = "spf"
	kindMailFrom = "mailfrom-mx"
	kindDMARC    = "dmarc"
)

// Record is a DNS record the operator should publish, and why.
type Record struct {
	Type     string `json:"type"`
	Name     string `json:"name"` // without the trailing dot
	Value    string `json:"value"`
	Purpose  string `json:"purpose"`
	Required bool   `json:"required"` // needed for the domain to be verified
	kind     string
}

// Records lists what to publish for d, without asking DNS: one DKIM TXT
// record per key (required), the SPF record of the domain, the MX and SPF
// records of the MAIL FROM subdomain, and the DMARC record.
func (c Config) Records(d store.Domain) ([]Record, error) {
	c = c.withDefaults()
	if c.Hostname == "" {
		return nil, fmt.Errorf("identity: records for %s: no host name configured; set hostname in the configuration", d.Name)
	}
	var recs []Record
	for _, k := range d.Keys {
		r, err := keyRecord(d.Name, k) // required while it signs (rotation.go)
		if err != nil {
			return nil, err
		}
		recs = append(recs, r)
	}
	spf, err := c.spfRecord()
	if err != nil {
		return nil, fmt.Errorf("identity: records for %s: %w", d.Name, err)
	}
	mailFrom := c.MailFromSubdomain + "." + d.Name
	recs = append(recs,
		Record{
			Type: "TXT", Name: d.Name, Value: spf, kind: kindSPF,
			Purpose: "SPF (RFC 7208): lets receivers accept Sesame's servers for envelope senders in " + d.Name +
				"; if the domain has an SPF record already, add these mechanisms to it instead of publishing a second one",
		},
		Record{
			Type: "MX", Name: mailFrom, Value: "10 " + c.Hostname, kind: kindMailFrom,
			Purpose: "MAIL FROM domain: bounces to " + mailFrom + " come back to Sesame",
		},
		Record{
			Type: "TXT", Name: mailFrom, Value: spf, kind: kindSPF,
			Purpose: "SPF of the MAIL FROM domain (RFC 7208); it aligns with " + d.Name + " for DMARC (RFC 7489 §3.1.2)",
		},
	)
	rua := c.DMARCReportAddress
	if rua == "" {
		rua = "dmarc-reports@" + d.Name
	}
	purpose := "DMARC (RFC 7489): tells receivers to check that mail from " + d.Name +
		" is aligned with DKIM or SPF; p=none only asks for reports, tighten it once the reports are clean"
	if rd := store.AddressDomain(rua); rd != d.Name && !strings.HasSuffix(d.Name, "."+rd) {
		// RFC 7489 §7.1: receivers send reports to another domain only if
		// that domain agrees to take them.
		purpose += "; reports go to another domain, so " + rd + " must publish TXT " + d.Name +
			"._report._dmarc." + rd + ` "v=DMARC1" (RFC 7489 §7.1)`
	}
	recs = append(recs, Record{
		Type: "TXT", Name: "_dmarc." + d.Name, Value: "v=DMARC1; p=none; rua=mailto:" + rua, kind: kindDMARC,
		Purpose: purpose,
	})
	return recs, nil
}

// spfRecord is the SPF record that authorizes Sesame: its outbound
// addresses, or its host name's addresses when none is configured.
func (c Config) spfRecord() (string, error) {
	ips, err := c.sourceIPs()
	if err != nil {
		return "", err
	}
	if len(ips) == 0 {
		return "v=spf1 a:" + c.Hostname + " ~all", nil
	}
	var b strings.Builder
	b.WriteString("v=spf1")
	for _, ip := range ips {
		b.WriteString(" " + spfMechanism(ip))
	}
	// ~all (softfail) rather than -all: a receiver should not reject mail
	// outright while the operator is still finding every server that sends
	// for the domain; DMARC enforcement is the place to be strict.
	b.WriteString(" ~all")
	return b.String(), nil
}

// spfMechanism is the SPF term that allows ip: "ip4:…" or "ip6:…".
func spfMechanism(ip netip.Addr) string {
	if ip.Is4() {
		return "ip4:" + ip.String()
	}
	return "ip6:" + ip.String()
}

// sourceIPs returns the configured outbound addresses, whatever their range:
// they are the addresses Sesame's connections come from, so they are what
// the SPF record must allow and what Check judges it against. (Behind NAT
// receivers see another address; docs/dns.md says what to do then.)
func (c Config) sourceIPs() ([]netip.Addr, error) {
	var out []netip.Addr
	for _, s := range c.SourceIPs {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("source IP %q: %w", s, err)
		}
		out = append(out, ip.Unmap())
	}
	return out, nil
}
