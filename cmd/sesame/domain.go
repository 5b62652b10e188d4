package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/net/idna"

	"github.com/sesame-mail/sesame/config"
	"github.com/sesame-mail/sesame/dkim"
	"github.com/sesame-mail/sesame/identity"
	"github.com/sesame-mail/sesame/store"
)

// identityConfig is the identity package's view of the configuration.
func (e *env) identityConfig() identity.Config {
	c := e.cfg
	var dns []string
	for _, s := range c.Relay.DNSServers {
		a, _ := config.DNSServerAddr(s) // validated by config
		dns = append(dns, a)
	}
	return identity.Config{
		Hostname:              c.Hostname,
		SourceIPs:             sourceAddrs(c),
		DNSServers:            dns,
		PublicURL:             c.PublicURL(),
		MailFromSubdomain:     c.Identity.MailFromSubdomain,
		DMARCReportAddress:    c.Identity.DMARCReportAddress,
		BulkSender:            c.Identity.BulkSender,
		SignedReturnPath:      len(c.Inbound.Listen) > 0, // serve gives verified domains a return path then
		PendingCheckInterval:  c.Identity.PendingCheckInterval.Duration,
		VerifiedCheckInterval: c.Identity.VerifiedCheckInterval.Duration,
		PendingTimeout:        c.Identity.PendingTimeout.Duration,
		FailedAfterChecks:     c.Identity.FailedAfterChecks,
		AddressLinkTTL:        c.Identity.AddressLinkTTL.Duration,
		RotateEvery:           c.DKIM.RotateEvery.Duration,
		RotationGrace:         c.DKIM.RotationGrace.Duration,
		Now:                   time.Now,
	}
}

// domainName turns an operator's domain argument into its lower-case A-label form.
func domainName(arg string) (string, error) {
	d, err := idna.Registration.ToASCII(strings.TrimSuffix(strings.ToLower(arg), "."))
	if err != nil || !strings.Contains(d, ".") {
		return "", fmt.Errorf("%q is not a domain name such as example.com", arg)
	}
	return d, nil
}

// domainOutput is what domain add, show and verify print with --json.
type domainOutput struct {
	Domain  string         `json:"domain"`
	Status  string         `json:"status"`
	Records []recordOutput `json:"records"`
}

type recordOutput struct {
	identity.Record
	Check  string   `json:"check,omitempty"` // ok, missing, wrong, unknown; "" when not looked up
	Found  []string `json:"found,omitempty"`
	Advice string   `json:"advice,omitempty"`
}

func (e *env) domainRecords(d store.Domain, findings []identity.Finding) (domainOutput, error) {
	out := domainOutput{Domain: d.Name, Status: d.Status, Records: []recordOutput{}}
	if findings != nil {
		for _, f := range findings {
			out.Records = append(out.Records, recordOutput{Record: f.Record, Check: f.Status, Found: f.Found, Advice: f.Advice})
		}
		return out, nil
	}
	recs, err := e.identityConfig().Records(d)
	if err != nil {
		return out, err
	}
	for _, r := range recs {
		out.Records = append(out.Records, recordOutput{Record: r})
	}
	return out, nil
}

// printRecords writes the records, with what a check found when it ran.
func (e *env) printRecords(out domainOutput) {
	for _, r := range out.Records {
		need := "recommended"
		switch {
		case r.Required:
			need = "required"
		case strings.Contains(r.Name, "._domainkey."):
			need = "key rotation" // a new key waiting, or a replaced one in its grace period
		}
		check := ""
		if r.Check != "" {
			check = "[" + r.Check + "] "
		}
		fmt.Fprintf(e.stdout, "  %s%s  %s  (%s: %s)\n       %s\n", check, r.Type, r.Name, need, r.Purpose, r.Value)
		if r.Check != "" && r.Check != "ok" && r.Advice != "" {
			fmt.Fprintf(e.stdout, "       -> %s\n", clean(r.Advice)) // may quote what DNS holds
		}
		fmt.Fprintln(e.stdout)
	}
}

// newDomain is a pending domain with new DKIM keys: RSA, and Ed25519 when
// [dkim] ed25519 is on.
func (e *env) newDomain(name string, now time.Time) (store.Domain, error) {
	d := store.Domain{Name: name, CreatedAt: now, Status: store.IdentityPending, StatusSince: now}
	algs := []string{store.AlgRSA}
	if e.cfg.DKIM.Ed25519 {
		algs = append(algs, store.AlgEd25519)
	}
	for _, alg := range algs {
		k, err := dkim.NewKey(alg, now)
		if err != nil {
			return store.Domain{}, err
		}
		d.Keys = append(d.Keys, k)
	}
	return d, nil
}

func domainAdd(e *env, args []string) error {
	name, err := domainName(args[0])
	if err != nil {
		return err
	}
	d, err := e.newDomain(name, time.Now())
	if err != nil {
		return err
	}
	err = e.withStore(func(ctx context.Context, st *store.SQLite) error { return st.CreateDomain(ctx, d) })
	if errors.Is(err, store.ErrExists) {
		return fmt.Errorf("domain %s exists already; \"sesame domain show %s\" prints its records", name, name)
	}
	if err != nil {
		return err
	}
	out, err := e.domainRecords(d, nil)
	if err != nil {
		return err
	}
	if e.json {
		return e.printJSON(out)
	}
	fmt.Fprintf(e.stdout, "Added %s; it is pending until its DKIM records are published. Publish these DNS records:\n\n", name)
	e.printRecords(out)
	fmt.Fprintf(e.stdout, "Then run \"sesame domain verify %s\" (a running server also checks every %s).\n"+
		"\"sesame domain check %s\" says what is still missing.\n", name, e.cfg.Identity.PendingCheckInterval, name)
	return nil
}

// checkDomain loads a domain and looks its records up.
func (e *env) checkDomain(name string) (store.Domain, []identity.Finding, error) {
	var d store.Domain
	var findings []identity.Finding
	err := e.withStore(func(ctx context.Context, st *store.SQLite) (err error) {
		if d, err = st.Domain(ctx, name); err != nil {
			return err
		}
		checker, err := identity.NewChecker(e.identityConfig())
		if err != nil {
			return err
		}
		findings, err = checker.Check(ctx, d)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return d, nil, fmt.Errorf("no domain %s; add it with \"sesame domain add %s\"", name, name)
	}
	return d, findings, err
}

func domainShow(e *env, args []string) error {
	name, err := domainName(args[0])
	if err != nil {
		return err
	}
	d, findings, err := e.checkDomain(name)
	if err != nil {
		return err
	}
	out, err := e.domainRecords(d, findings)
	if err != nil {
		return err
	}
	if e.json {
		return e.printJSON(out)
	}
	fmt.Fprintf(e.stdout, "%s: %s since %s\n\n", d.Name, d.Status, d.StatusSince.UTC().Format(time.DateTime))
	e.printRecords(out)
	return nil
}

func domainCheck(e *env, args []string) error {
	system := e.cfg.SystemDomain()
	if len(args) == 0 {
		if system == "" {
			return fmt.Errorf("hostname %q names no domain to sign Sesame's own mail; set [dkim] system_domain, or give a DOMAIN", e.cfg.Hostname)
		}
		args = []string{system}
	}
	name, err := domainName(args[0])
	if err != nil {
		return err
	}
	var d store.Domain
	var findings []identity.Finding
	err = e.withStore(func(ctx context.Context, st *store.SQLite) (err error) {
		if d, err = st.Domain(ctx, name); err != nil {
			return err
		}
		checker, err := identity.NewChecker(e.identityConfig())
		if err != nil {
			return err
		}
		findings, err = checker.Audit(ctx, d)
		return err
	})
	if errors.Is(err, store.ErrNotFound) && name == system {
		return fmt.Errorf("no domain %s, the system domain: Sesame's own mail (address verification, DSNs) goes unsigned; "+
			"add it with \"sesame domain add %s\" (or set [dkim] system_domain)", name, name)
	}
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("no domain %s; add it with \"sesame domain add %s\"", name, name)
	}
	if err != nil {
		return err
	}
	out, err := e.domainRecords(d, findings)
	if err != nil {
		return err
	}
	if name == system && !e.json {
		fmt.Fprintf(e.stdout, "%s is the system domain: its keys sign Sesame's own mail (address verification, DSNs).\n", name)
	}
	return e.reportFindings(name, "record(s)", "Every record of "+name+" is in place.", findings, out)
}

func domainVerify(e *env, args []string) error {
	name, err := domainName(args[0])
	if err != nil {
		return err
	}
	var d store.Domain
	var findings []identity.Finding
	err = e.withStore(func(ctx context.Context, st *store.SQLite) error {
		checker, err := identity.NewChecker(e.identityConfig())
		if err != nil {
			return err
		}
		d, findings, err = identity.NewVerifier(e.identityConfig(), st, checker).Verify(ctx, name)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("no domain %s; add it with \"sesame domain add %s\"", name, name)
	}
	if err != nil {
		return err
	}
	var required []identity.Finding
	for _, f := range findings {
		if f.Required {
			required = append(required, f)
		}
	}
	out, err := e.domainRecords(d, required)
	if err != nil {
		return err
	}
	if e.json {
		if err := e.printJSON(out); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(e.stdout, "%s is %s.\n\n", d.Name, d.Status)
		e.printRecords(out)
	}
	if d.Status != store.IdentityVerified {
		return fmt.Errorf("%s is not verified (%s): publish the DKIM records above, then verify again", name, d.Status)
	}
	for _, f := range required {
		switch f.Status {
		case identity.StatusOK:
		case identity.StatusUnknown:
			// A lookup that failed proves nothing either way and is not counted.
			return fmt.Errorf("%s is still verified, but its DKIM record %s could not be looked up (DNS trouble); try again later", name, f.Name)
		default:
			// Still verified for a few checks, so a DNS hiccup does not stop
			// the mail; but what the operator asked about is not right.
			return fmt.Errorf("%s is still verified, but its DKIM record %s is %s; after %d failed checks in a row it fails and its mail is refused",
				name, f.Name, f.Status, e.cfg.Identity.FailedAfterChecks)
		}
	}
	return nil
}

func domainList(e *env, _ []string) error {
	var list []store.Domain
	err := e.withStore(func(ctx context.Context, st *store.SQLite) (err error) {
		list, err = st.ListDomains(ctx)
		return err
	})
	if err != nil {
		return err
	}
	if e.json {
		out := []domainOutput{}
		for _, d := range list {
			o, err := e.domainRecords(d, nil)
			if err != nil {
				return err
			}
			out = append(out, o)
		}
		return e.printJSON(out)
	}
	if len(list) == 0 {
		fmt.Fprintln(e.stdout, `No domains yet; add one with "sesame domain add DOMAIN".`)
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DOMAIN\tSTATUS\tSINCE\tLAST CHECKED\tDKIM SELECTORS")
	for _, d := range list {
		var sels []string
		for _, k := range d.Keys {
			switch k.State {
			case store.KeyPending:
				sels = append(sels, k.Selector+" (new: waiting for its record)")
			case store.KeyRetiring:
				sels = append(sels, k.Selector+" (replaced: publish until "+k.RetireAt.UTC().Format(time.DateOnly)+")")
			default:
				sels = append(sels, k.Selector)
			}
		}
		checked := "never"
		if !d.LastChecked.IsZero() {
			checked = d.LastChecked.UTC().Format(time.DateTime)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.Name, d.Status, d.StatusSince.UTC().Format(time.DateTime), checked,
			strings.Join(sels, ", "))
	}
	return tw.Flush()
}

// rotateOutput is what domain rotate prints with --json.
type rotateOutput struct {
	Domain   string          `json:"domain"`
	Selector string          `json:"selector"`
	Record   identity.Record `json:"record"`
}

func domainRotate(e *env, args []string) error {
	name, err := domainName(args[0])
	if err != nil {
		return err
	}
	alg := e.values["alg"]
	if alg != "" && alg != store.AlgRSA && alg != store.AlgEd25519 {
		return fmt.Errorf("--alg %q: expected rsa or ed25519", alg)
	}
	bits := 0
	if b := e.values["bits"]; b != "" {
		if bits, err = strconv.Atoi(b); err != nil || !slices.Contains(dkim.RSASizes, bits) {
			return fmt.Errorf("--bits %q: expected 2048, 3072 or 4096", b)
		}
		if alg == store.AlgEd25519 {
			return errors.New("--bits is for RSA keys; an Ed25519 key has one size")
		}
	}
	var k store.DKIMKey
	var rec identity.Record
	err = e.withStore(func(ctx context.Context, st *store.SQLite) (err error) {
		k, rec, err = identity.StartRotation(ctx, e.identityConfig(), st, name, alg, bits, "sesame domain rotate")
		return err
	})
	if err != nil {
		return err
	}
	if e.json {
		return e.printJSON(rotateOutput{Domain: name, Selector: k.Selector, Record: rec})
	}
	fmt.Fprintf(e.stdout, "Made a new DKIM key for %s, selector %s. Publish this DNS record, next to the current one:\n\n", name, k.Selector)
	e.printRecords(domainOutput{Records: []recordOutput{{Record: rec}}})
	fmt.Fprintf(e.stdout, "Mail is signed with the current key until the record is found: a running server looks every %s,\n"+
		"or run \"sesame domain verify %s\". Then the new key signs, and the old record must stay published for %s\n"+
		"(Sesame logs when it can be removed).\n", e.cfg.Identity.PendingCheckInterval, name, days(e.cfg.DKIM.RotationGrace.Duration))
	return nil
}

// days writes a whole number of days as "7 days", other durations as Go does.
func days(d time.Duration) string {
	if d%(24*time.Hour) != 0 {
		return d.String()
	}
	if n := d / (24 * time.Hour); n != 1 {
		return fmt.Sprintf("%d days", n)
	}
	return "1 day"
}

func domainDelete(e *env, args []string) error {
	name, err := domainName(args[0])
	if err != nil {
		return err
	}
	err = e.withStore(func(ctx context.Context, st *store.SQLite) error { return st.DeleteDomain(ctx, name) })
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("no domain %s; see \"sesame domain list\"", name)
	}
	if err != nil {
		return err
	}
	if !e.json {
		fmt.Fprintf(e.stdout, "Deleted %s and its keys; mail from it is refused from now on.\n", name)
	}
	return nil
}

// addressArg normalizes an address argument: lower case, A-label domain.
func addressArg(arg string) (string, error) {
	at := strings.LastIndexByte(arg, '@')
	if at <= 0 || strings.ContainsAny(arg, " \t\r\n<>\"") {
		return "", fmt.Errorf("%q is not an email address such as news@example.com", arg)
	}
	d, err := domainName(arg[at+1:])
	if err != nil {
		return "", fmt.Errorf("%q is not an email address: %v", arg, err)
	}
	return strings.ToLower(arg[:at]) + "@" + d, nil
}

func addressAdd(e *env, args []string) error {
	addr, err := addressArg(args[0])
	if err != nil {
		return err
	}
	force := e.flags["force"]
	var a store.Address
	var link string
	err = e.withStore(func(ctx context.Context, st *store.SQLite) (err error) {
		checker, err := identity.NewChecker(e.identityConfig())
		if err != nil {
			return err
		}
		idCfg := e.identityConfig()
		idCfg.SystemSigner = dkim.NewSystemSigner(dkim.NewDomainSigner(st), e.cfg.SystemDomain(), nil)
		a, link, err = identity.NewAddressVerifier(idCfg, st, st).AddSender(ctx, addr, checker, force)
		return err
	})
	var dm *identity.DMARCError
	if errors.As(err, &dm) && a.Address != "" {
		return fmt.Errorf("%s (%s) may not send: %v", addr, a.Status, dm)
	}
	if errors.As(err, &dm) {
		return fmt.Errorf("%s was not added: %v", addr, dm)
	}
	if err != nil {
		return err
	}
	if e.json {
		return e.printJSON(addressOutput(a))
	}
	if force && (a.DMARCPolicy == "quarantine" || a.DMARCPolicy == "reject") {
		fmt.Fprintf(e.stdout, "Warning: %s publishes DMARC p=%s, so receivers that check DMARC refuse or junk mail from %s sent through\n"+
			"Sesame. It is allowed to send anyway (--force).\n\n", store.AddressDomain(addr), a.DMARCPolicy, addr)
	}
	if link == "" {
		fmt.Fprintf(e.stdout, "%s is verified and may send.\n", addr)
		return nil
	}
	if a.DMARCCheckedAt.IsZero() {
		fmt.Fprintf(e.stdout, "The DMARC policy of %s could not be looked up; Sesame looks again later and refuses mail from %s\n"+
			"if it is p=quarantine or p=reject.\n\n", store.AddressDomain(addr), addr)
	}
	fmt.Fprintf(e.stdout, "A verification link was queued to %s; it works for %s. %s becomes a verified sender when its\n"+
		"owner opens the link and confirms. \"sesame address list\" shows the status.\n",
		addr, e.cfg.Identity.AddressLinkTTL, addr)
	return nil
}

type addressJSON struct {
	Address    string     `json:"address"`
	Status     string     `json:"status"`
	CreatedAt  time.Time  `json:"created_at"`
	VerifiedAt *time.Time `json:"verified_at"`
	LinkExpiry *time.Time `json:"link_expires,omitempty"`
	// The DMARC policy of the address's domain ("" for none or not known
	// yet), when it was looked up, and whether it may send whatever it is.
	DMARCPolicy    string     `json:"dmarc_policy"`
	DMARCCheckedAt *time.Time `json:"dmarc_checked_at"`
	Forced         bool       `json:"forced"`
}

func addressOutput(a store.Address) addressJSON {
	out := addressJSON{Address: a.Address, Status: a.Status, CreatedAt: a.CreatedAt.UTC(), DMARCPolicy: a.DMARCPolicy, Forced: a.Forced}
	if !a.DMARCCheckedAt.IsZero() {
		t := a.DMARCCheckedAt.UTC()
		out.DMARCCheckedAt = &t
	}
	if !a.VerifiedAt.IsZero() {
		t := a.VerifiedAt.UTC()
		out.VerifiedAt = &t
	}
	if a.TokenHash != "" {
		t := a.TokenExpires.UTC()
		out.LinkExpiry = &t
	}
	return out
}

func addressList(e *env, _ []string) error {
	var list []store.Address
	err := e.withStore(func(ctx context.Context, st *store.SQLite) (err error) {
		list, err = st.ListAddresses(ctx)
		return err
	})
	if err != nil {
		return err
	}
	if e.json {
		out := []addressJSON{}
		for _, a := range list {
			out = append(out, addressOutput(a))
		}
		return e.printJSON(out)
	}
	if len(list) == 0 {
		fmt.Fprintln(e.stdout, `No sender addresses; add one with "sesame address add ADDRESS".`)
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ADDRESS\tSTATUS\tADDED\tLINK EXPIRES\tDMARC")
	for _, a := range list {
		expires := "-"
		if a.TokenHash != "" {
			expires = a.TokenExpires.UTC().Format(time.DateTime)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", clean(a.Address), a.Status, a.CreatedAt.UTC().Format(time.DateTime), expires,
			dmarcColumn(a, e.cfg.Identity.AllowDMARCProtectedAddresses))
	}
	return tw.Flush()
}

func addressDelete(e *env, args []string) error {
	addr, err := addressArg(args[0])
	if err != nil {
		return err
	}
	err = e.withStore(func(ctx context.Context, st *store.SQLite) error { return st.DeleteAddress(ctx, addr) })
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("no sender address %s; see \"sesame address list\"", addr)
	}
	if err != nil {
		return err
	}
	if !e.json {
		fmt.Fprintf(e.stdout, "Deleted %s; mail from it is refused from now on (unless its domain is verified).\n", addr)
	}
	return nil
}

// dmarcColumn says what the DMARC policy of an address's domain means for
// its mail: "p=reject: refused" unless allowed (allowAll: by the
// configuration).
func dmarcColumn(a store.Address, allowAll bool) string {
	switch {
	case a.DMARCCheckedAt.IsZero():
		return "not looked up yet"
	case a.DMARCPolicy == "":
		return "none"
	case a.DMARCPolicy != "quarantine" && a.DMARCPolicy != "reject":
		return "p=" + a.DMARCPolicy
	case a.Forced:
		return "p=" + a.DMARCPolicy + ": allowed (--force)"
	case allowAll:
		return "p=" + a.DMARCPolicy + ": allowed (allow_dmarc_protected_addresses)"
	}
	return "p=" + a.DMARCPolicy + ": refused (see sesame address add --force)"
}
