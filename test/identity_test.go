package test

// Verified identities, sender authorization, the sandbox and sending quotas
// (issue 4), end to end: the DKIM records are published in the instance's
// DNS server (testkit.Zone) and looked up by Sesame over real DNS; the
// address verification mail goes through Sesame's own queue to the MX sinks
// of mx_test.go, and its link is opened with net/http; mail is submitted
// with go-smtp's client (and swaks), and the exact replies are checked.
//
// Every test here runs its own installation, in parallel with the others.

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/http"
	"net/mail"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"
	"golang.org/x/net/html"

	"github.com/sesame-mail/sesame/testkit"
)

const (
	otherDomain    = "other.example"    // a second sending domain
	personalDomain = "personal.example" // a domain without keys, where one address is verified
	stranger       = "stranger@example.net"
)

// identityZone adds to mxZone the mail exchangers of the identity tests'
// extra domains: mail to personal.example goes to mx2 (127.0.0.3).
var identityZone = []string{
	"personal.example. 60 IN MX 10 mx2.example.net.",
	"other.example. 60 IN MX 10 mx2.example.net.",
}

// SES's throttling replies, which Sesame copies word for word.
const (
	dailyQuotaText = "4.7.0 Throttling failure: Daily message quota exceeded."
	sendRateText   = "4.7.0 Throttling failure: Maximum sending rate exceeded."
)

// newIdentityEnv is an installation delivering by MX with settings on top
// of the harness's; serve is not started, and nothing is added.
func newIdentityEnv(t *testing.T, settings map[string]any) *mxEnv {
	t.Helper()
	e := newMXEnvNoDomain(t, mxOptions{})
	e.zone.Add(t, identityZone...)
	e.inst.configure(settings)
	return e
}

// ---------------------------------------------------------------- SMTP

// reply is how a submission ended: the stage that was refused (MAIL, RCPT
// or DATA; "" when the message was accepted) and the server's reply.
type reply struct {
	stage string
	code  int
	text  string // enhanced status code and text: "5.7.1 Message rejected: ..."
}

func (r reply) String() string {
	stage := "accepted"
	if r.stage != "" {
		stage = "refused at " + r.stage
	}
	return fmt.Sprintf("%s: %d %s", stage, r.code, r.text)
}

// outgoing is one message to submit.
type outgoing struct {
	user    creds
	envFrom string   // MAIL FROM
	from    string   // From header
	to      []string // RCPT TO
	token   string
}

func (o outgoing) data() []byte {
	lines := []string{
		"From: " + o.from,
		"To: " + strings.Join(o.to, ", "),
		"Subject: " + o.token,
		"Date: " + time.Now().Format(time.RFC1123Z),
		fmt.Sprintf("Message-ID: <%s@client.test>", o.token),
		"MIME-Version: 1.0",
		"Content-Type: text/plain; charset=utf-8",
		"",
		"Sent by go-smtp for the identity tests.",
		"Token: " + o.token,
		"",
	}
	return []byte(strings.Join(lines, "\r\n"))
}

// submit sends o with go-smtp's client over STARTTLS with AUTH PLAIN, on a
// connection of its own (so it sees the credential as it is now), and
// returns how it ended.
func submit(t *testing.T, addr string, o outgoing) reply {
	t.Helper()
	c, err := smtp.DialStartTLS(addr, insecureTLS())
	if err != nil {
		t.Fatalf("connect to %s: %v", addr, err)
	}
	defer c.Close()
	c.CommandTimeout = 30 * time.Second
	c.SubmissionTimeout = 30 * time.Second
	if err := c.Auth(sasl.NewPlainClient("", o.user.Username, o.user.Password)); err != nil {
		t.Fatalf("AUTH PLAIN as %s: %v", o.user.Name, err)
	}
	refused := func(stage string, err error) reply {
		t.Helper()
		var se *smtp.SMTPError
		if !errors.As(err, &se) {
			t.Fatalf("%s: %v", stage, err)
		}
		text := strings.ReplaceAll(se.Message, "\n", " ")
		if se.EnhancedCode != (smtp.EnhancedCode{}) && se.EnhancedCode != smtp.NoEnhancedCode {
			text = fmt.Sprintf("%d.%d.%d %s", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], text)
		}
		return reply{stage: stage, code: se.Code, text: text}
	}
	if err := c.Mail(o.envFrom, nil); err != nil {
		return refused("MAIL", err)
	}
	for _, rcpt := range o.to {
		if err := c.Rcpt(rcpt, nil); err != nil {
			return refused("RCPT", err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return refused("DATA", err)
	}
	if _, err := w.Write(o.data()); err != nil {
		t.Fatalf("writing the message: %v", err)
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return refused("DATA", err)
	}
	c.Quit()
	return reply{code: 250, text: resp.StatusText}
}

// send submits o through e's serve.
func (e *mxEnv) submit(t *testing.T, o outgoing) reply {
	t.Helper()
	if o.token == "" {
		o.token = newToken()
	}
	return submit(t, e.inst.smtpAddr, o)
}

// wantAccepted fails the test unless r is Sesame's 250 with a queue id.
func wantAccepted(t *testing.T, what string, r reply) {
	t.Helper()
	if r.stage != "" || !strings.HasPrefix(r.text, "2.0.0 Ok: queued as ") {
		t.Fatalf("%s: %s; want 250 2.0.0 Ok: queued as ID", what, r)
	}
}

// wantRefused fails the test unless r is a refusal at stage with code and
// exactly text.
func wantRefused(t *testing.T, what string, r reply, stage string, code int, text string) {
	t.Helper()
	if r.stage != stage || r.code != code || r.text != text {
		t.Errorf("%s:\n\tgot  %s\n\twant refused at %s: %d %s", what, r, stage, code, text)
		return
	}
	t.Logf("%s: %s", what, r)
}

// wantRefusedPrefix is wantRefused for a text that goes on after prefix.
func wantRefusedPrefix(t *testing.T, what string, r reply, stage string, code int, prefix string) {
	t.Helper()
	if r.stage != stage || r.code != code || !strings.HasPrefix(r.text, prefix) {
		t.Errorf("%s:\n\tgot  %s\n\twant refused at %s: %d %s...", what, r, stage, code, prefix)
		return
	}
	t.Logf("%s: %s", what, r)
}

// ---------------------------------------------------------------- CLI

type addressInfo struct {
	Address string `json:"address"`
	Status  string `json:"status"`
}

func (e *mxEnv) addressStatus(t *testing.T, addr string) string {
	t.Helper()
	var list []addressInfo
	e.inst.adminJSON(t, &list, "address", "list")
	for _, a := range list {
		if strings.EqualFold(a.Address, addr) {
			return a.Status
		}
	}
	return ""
}

// userInfo is what `sesame user show NAME --json` prints.
type userInfo struct {
	Name        string   `json:"name"`
	Username    string   `json:"username"`
	Sandbox     bool     `json:"sandbox"`
	DailyQuota  int      `json:"daily_quota"`
	MaxSendRate float64  `json:"max_send_rate"`
	Sent24h     int      `json:"sent_last_24h"`
	Allowed     []string `json:"allowed_identities"`
}

func (e *mxEnv) userShow(t *testing.T, name string) userInfo {
	t.Helper()
	var u userInfo
	e.inst.adminJSON(t, &u, "user", "show", name)
	if u.Name != name {
		t.Fatalf("sesame user show %s --json: name %q", name, u.Name)
	}
	return u
}

// waitDomainStatus polls `sesame domain list --json` until domain has
// status want, for at most timeout.
func (e *mxEnv) waitDomainStatus(t *testing.T, domain, want string, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		got := e.inst.domainStatus(t, domain)
		if got == want {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("domain %s is still %q after %s, want %s; domain list:\n%s",
				domain, got, timeout, want, e.inst.mustAdmin(t, "domain", "list"))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// dkimCheck returns what `sesame domain show DOMAIN --json` found for the
// domain's DKIM records, and the domain's status.
func (e *mxEnv) dkimCheck(t *testing.T, domain string) (status string, checks []string) {
	t.Helper()
	var d domainInfo
	e.inst.adminJSON(t, &d, "domain", "show", domain)
	for _, r := range d.dkimRecords() {
		checks = append(checks, r.Check)
	}
	if len(checks) == 0 {
		t.Fatalf("sesame domain show %s --json lists no required DKIM record: %+v", domain, d)
	}
	return d.Status, checks
}

// ---------------------------------------------------------------- links

// verifyLinkRE matches a verification link in a message's text.
var verifyLinkRE = regexp.MustCompile(`https?://[^\s"'<>]+/verify/[^\s"'<>]+`)

// messageText returns the decoded text of every text part of a message
// (quoted-printable and base64 undone), so a link folded by the transfer
// encoding is whole again.
func messageText(data []byte) string {
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		return string(data)
	}
	var b strings.Builder
	decodePart(&b, msg.Header, msg.Body)
	return b.String()
}

func decodePart(b *strings.Builder, h map[string][]string, body io.Reader) {
	get := func(k string) string {
		for hk, v := range h {
			if strings.EqualFold(hk, k) && len(v) > 0 {
				return v[0]
			}
		}
		return ""
	}
	mt, params, err := mime.ParseMediaType(get("Content-Type"))
	if err != nil {
		mt = "text/plain"
	}
	if strings.HasPrefix(mt, "multipart/") {
		mr := multipart.NewReader(body, params["boundary"])
		for {
			p, err := mr.NextPart()
			if err != nil {
				return
			}
			// NextPart undoes quoted-printable itself and drops the header.
			decodePart(b, p.Header, p)
		}
	}
	switch strings.ToLower(strings.TrimSpace(get("Content-Transfer-Encoding"))) {
	case "quoted-printable":
		body = quotedprintable.NewReader(body)
	case "base64":
		body = base64.NewDecoder(base64.StdEncoding, &stripSpace{r: body})
	}
	text, _ := io.ReadAll(body)
	b.Write(text)
	b.WriteString("\n")
}

// stripSpace drops the line breaks of a base64 body.
type stripSpace struct{ r io.Reader }

func (s *stripSpace) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	out := p[:0]
	for _, c := range p[:n] {
		if c != '\r' && c != '\n' && c != ' ' && c != '\t' {
			out = append(out, c)
		}
	}
	if len(out) == 0 && err == nil && n > 0 {
		return s.Read(p)
	}
	return len(out), err
}

// verificationLink waits for the verification message to addr at sink and
// returns its link, which must be under the configured public URL. The
// message must come from the null sender: nothing may bounce back to it.
func (e *mxEnv) verificationLink(t *testing.T, sink *mxSink, addr string) string {
	t.Helper()
	return e.newVerificationLink(t, sink, addr)
}

// newVerificationLink is verificationLink for a message whose link is none
// of old.
func (e *mxEnv) newVerificationLink(t *testing.T, sink *mxSink, addr string, old ...string) string {
	t.Helper()
	match := func(m *testkit.Message) bool {
		if !slices.ContainsFunc(m.To, func(to string) bool { return strings.EqualFold(to, addr) }) {
			return false
		}
		links := verifyLinkRE.FindAllString(messageText(m.Data), -1)
		return len(links) > 0 && !slices.ContainsFunc(links, func(l string) bool { return slices.Contains(old, l) })
	}
	m := mustWait(t, sink, "the verification message to "+addr, match)
	if m.From != "" {
		t.Errorf("verification message to %s has MAIL FROM <%s>, want the null sender <>", addr, m.From)
	}
	links := verifyLinkRE.FindAllString(messageText(m.Data), -1)
	prefix := "http://" + e.inst.httpAddr + "/verify/"
	for _, l := range links {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	t.Fatalf("verification message to %s has links %q, none under http.public_url %s\n%s", addr, links, prefix, m.Data)
	return ""
}

// httpClient does not follow redirects: the tests look at each answer.
var httpClient = &http.Client{
	Timeout:       10 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// open requests link with method (form is sent with POST) and returns the
// status and body.
func open(t *testing.T, method, link string, form url.Values) (int, string) {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, link, body)
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, link, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// confirmForm opens link with GET, as a person clicking it does, and
// returns the fields of the page's POST form, whose action must be the link
// itself.
func confirmForm(t *testing.T, link string) url.Values {
	t.Helper()
	status, page := open(t, http.MethodGet, link, nil)
	if status != http.StatusOK {
		t.Fatalf("GET %s: status %d, want 200\n%s", link, status, page)
	}
	doc, err := html.Parse(strings.NewReader(page))
	if err != nil {
		t.Fatalf("GET %s: the page is not HTML: %v\n%s", link, err, page)
	}
	attr := func(n *html.Node, key string) (string, bool) {
		for _, a := range n.Attr {
			if strings.EqualFold(a.Key, key) {
				return a.Val, true
			}
		}
		return "", false
	}
	var form *html.Node
	var find func(*html.Node)
	find = func(n *html.Node) {
		if form != nil {
			return
		}
		if n.Type == html.ElementNode && n.Data == "form" {
			if m, _ := attr(n, "method"); strings.EqualFold(m, "post") {
				form = n
				return
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			find(c)
		}
	}
	find(doc)
	if form == nil {
		t.Fatalf("GET %s: the page has no <form method=post>:\n%s", link, page)
	}
	base, _ := url.Parse(link)
	action, _ := attr(form, "action")
	target, err := base.Parse(action)
	if err != nil || target.String() != base.String() {
		t.Errorf("GET %s: the form posts to %q, want the link itself", link, action)
	}
	fields := url.Values{}
	var collect func(*html.Node)
	collect = func(n *html.Node) {
		if n.Type == html.ElementNode && (n.Data == "input" || n.Data == "button") {
			name, ok := attr(n, "name")
			value, _ := attr(n, "value")
			if typ, _ := attr(n, "type"); ok && name != "" && !strings.EqualFold(typ, "checkbox") {
				fields.Set(name, value)
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			collect(c)
		}
	}
	collect(form)
	return fields
}

// verifyAddress runs `sesame address add ADDR`, waits for the message at
// sink, and confirms the link as a person does: GET, then POST the form.
func (e *mxEnv) verifyAddress(t *testing.T, sink *mxSink, addr string) string {
	t.Helper()
	e.inst.mustAdmin(t, "address", "add", addr)
	if got := e.addressStatus(t, addr); got != "pending" {
		t.Errorf("after address add, address list says %s is %q, want pending", addr, got)
	}
	link := e.verificationLink(t, sink, addr)
	form := confirmForm(t, link)
	if got := e.addressStatus(t, addr); got != "pending" {
		t.Fatalf("after GET %s alone, %s is %q; want pending (a link scanner must not verify)", link, addr, got)
	}
	status, body := open(t, http.MethodPost, link, form)
	if status != http.StatusOK && status != http.StatusSeeOther && status != http.StatusFound {
		t.Fatalf("POST %s: status %d, want 200 (or a redirect)\n%s", link, status, body)
	}
	if got := e.addressStatus(t, addr); got != "verified" {
		t.Fatalf("after POST %s, %s is %q, want verified", link, addr, got)
	}
	return link
}

// wrongDKIMValue is a DKIM key record with a key Sesame does not have.
func wrongDKIMValue(t *testing.T) string {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
}

// ---------------------------------------------------------------- tests

// TestIdentityDomainVerification: a pending domain may not send; `domain
// verify` fails (exit 1, still pending) without the DKIM record and with a
// record holding another key; once the right record is in DNS it succeeds,
// and mail from the domain is accepted, delivered and DKIM-verified.
func TestIdentityDomainVerification(t *testing.T) {
	t.Parallel()
	e := newIdentityEnv(t, nil)
	d := e.inst.addPendingDomain(t, senderDomain)
	e.user = e.inst.createUser(t, "app")
	e.start(t)
	msgFrom := outgoing{user: e.user, envFrom: sender, from: sender, to: []string{recipient}}

	verifyFails := func(t *testing.T, what string) {
		t.Helper()
		code, out, errOut := e.inst.adminStatus(t, "domain", "verify", senderDomain)
		if code != 1 {
			t.Errorf("domain verify %s %s: exit status %d, want 1\nstdout: %s\nstderr: %s", senderDomain, what, code, out, errOut)
		}
		if got := e.inst.domainStatus(t, senderDomain); got != "pending" {
			t.Errorf("after domain verify %s: status %q, want pending", what, got)
		}
		wantRefused(t, "send as a pending domain "+what, e.submit(t, msgFrom), "MAIL", 554, notVerifiedText(sender))
	}

	t.Run("before verification", func(t *testing.T) {
		wantRefused(t, "send as a pending domain", e.submit(t, msgFrom), "MAIL", 554, notVerifiedText(sender))
		verifyFails(t, "without records")
		if status, checks := e.dkimCheck(t, senderDomain); status != "pending" || checks[0] != "missing" {
			t.Errorf("domain show: status %q, DKIM checks %q; want pending and [missing]", status, checks)
		}
	})
	t.Run("wrong key", func(t *testing.T) {
		for _, r := range d.dkimRecords() {
			e.zone.SetTXT(r.Name, wrongDKIMValue(t))
		}
		verifyFails(t, "with another key published")
		if status, checks := e.dkimCheck(t, senderDomain); status != "pending" || checks[0] != "wrong" {
			t.Errorf("domain show: status %q, DKIM checks %q; want pending and [wrong]", status, checks)
		}
		code, out, _ := e.inst.adminStatus(t, "domain", "check", senderDomain)
		if code == 0 || !strings.Contains(out, "WRONG") {
			t.Errorf("domain check with another key: exit %d, output lacks WRONG:\n%s", code, out)
		}
	})
	t.Run("after verification", func(t *testing.T) {
		e.inst.publishDKIM(d)
		v := e.inst.verifyDomain(t, senderDomain)
		for _, r := range v.dkimRecords() {
			if r.Check != "ok" {
				t.Errorf("domain verify --json: record %s check %q, want ok", r.Name, r.Check)
			}
		}
		if list := string(e.inst.mustAdmin(t, "domain", "list")); !regexp.MustCompile(`(?m)^example\.com\s+verified\s`).MatchString(list) {
			t.Errorf("domain list does not show %s verified in its STATUS column:\n%s", senderDomain, list)
		}
		// A real client, then the MX and an independent DKIM verifier.
		tok := newToken()
		e.send(t, tok, recipient)
		msg := mustWait(t, e.mx1, "the message from the verified domain", carrying(tok))
		verifyDKIM(t, msg, senderDomain, d.dkimRecords())
		wantAccepted(t, "go-smtp as the verified domain", e.submit(t, msgFrom))
	})
	t.Run("DNS guidance", func(t *testing.T) {
		// domain show lists SPF, the MAIL FROM subdomain (MX and SPF) and
		// DMARC as recommended records, besides the required DKIM ones.
		var shown domainInfo
		e.inst.adminJSON(t, &shown, "domain", "show", senderDomain)
		want := map[string]func(v string) bool{
			"TXT " + senderDomain:            func(v string) bool { return strings.HasPrefix(v, "v=spf1 ") },
			"MX bounce." + senderDomain:      func(v string) bool { return v == "10 sesame.test" },
			"TXT bounce." + senderDomain:     func(v string) bool { return strings.HasPrefix(v, "v=spf1 ") },
			"TXT _dmarc." + senderDomain:     func(v string) bool { return strings.Contains(v, "p=none") && strings.Contains(v, "rua=mailto:") },
			"TXT " + d.dkimRecords()[0].Name: func(v string) bool { return v == d.dkimRecords()[0].Value },
		}
		for _, r := range shown.Records {
			key := r.Type + " " + r.Name
			ok, listed := want[key]
			if !listed {
				continue
			}
			delete(want, key)
			if !ok(r.Value) {
				t.Errorf("domain show: %s has the value %q", key, r.Value)
			}
			if dkim := strings.Contains(r.Name, "._domainkey."); r.Required != dkim {
				t.Errorf("domain show: %s required=%v, want %v (only DKIM records are required)", key, r.Required, dkim)
			}
			if r.Check == "" {
				t.Errorf("domain show: %s has no check result; domain show looks every record up", key)
			}
		}
		for key := range want {
			t.Errorf("domain show --json lists no %s record: %+v", key, shown.Records)
		}

		// domain check is the doctor: it fails while a record is missing...
		code, out, _ := e.inst.adminStatus(t, "domain", "check", senderDomain)
		if code == 0 || !strings.Contains(out, "MISSING") || !strings.Contains(out, "_dmarc."+senderDomain) {
			t.Errorf("domain check without SPF, MX and DMARC: exit %d; want non-zero and MISSING naming _dmarc.%s:\n%s", code, senderDomain, out)
		}
		// ...and passes once the operator published everything it listed.
		for _, r := range shown.Records {
			switch r.Type {
			case "TXT":
				e.zone.SetTXT(r.Name, r.Value)
			case "MX":
				e.zone.Add(t, r.Name+". 60 IN MX "+r.Value+".")
			}
		}
		code, out, errOut := e.inst.adminStatus(t, "domain", "check", senderDomain)
		if code != 0 {
			t.Errorf("domain check with every record published: exit %d, want 0\n%s%s", code, out, errOut)
		}
		var checked domainInfo
		e.inst.adminJSON(t, &checked, "domain", "check", senderDomain)
		for _, r := range checked.Records {
			if r.Check != "ok" {
				t.Errorf("domain check --json with every record published: %s %s is %q", r.Type, r.Name, r.Check)
			}
		}
	})
	type verifyRun struct {
		n, code     int
		status, out string
	}
	var verifyExits []verifyRun
	t.Run("record removed, verified by hand", func(t *testing.T) {
		// failed_after_checks is 3 (the default): the first two checks
		// without the record leave the domain verified, the third makes it
		// failed. domain verify is such a check.
		for _, r := range d.dkimRecords() {
			e.zone.Remove(r.Name, dns.TypeTXT)
		}
		for n := 1; n <= 3; n++ {
			code, out, errOut := e.inst.adminStatus(t, "domain", "verify", senderDomain)
			status := e.inst.domainStatus(t, senderDomain)
			want := "verified"
			if n == 3 {
				want = "failed"
			}
			if status != want {
				t.Errorf("after check %d without the record: status %q, want %s", n, status, want)
			}
			if n < 3 {
				wantAccepted(t, fmt.Sprintf("send after %d failed checks of 3", n), e.submit(t, msgFrom))
			}
			verifyExits = append(verifyExits, verifyRun{n: n, status: status, code: code, out: out + errOut})
		}
		wantRefused(t, "send as a domain that failed", e.submit(t, msgFrom), "MAIL", 554, notVerifiedText(sender))
		e.inst.publishDKIM(d)
		e.inst.verifyDomain(t, senderDomain)
		wantAccepted(t, "send once the record is back and verified", e.submit(t, msgFrom))
	})
	t.Run("verify exits 1 while the record is missing", func(t *testing.T) {
		for _, v := range verifyExits {
			if v.code != 1 {
				t.Errorf("domain verify %s, check %d without the DKIM record (status %s): exit %d, want 1\n%s",
					senderDomain, v.n, v.status, v.code, v.out)
			}
		}
	})
	if e.zone.CountType(d.dkimRecords()[0].Name, dns.TypeTXT) == 0 {
		t.Errorf("Sesame never asked the test's DNS server for %s TXT", d.dkimRecords()[0].Name)
	}
}

// TestIdentityDomainLifecycle runs with short check intervals: a verified
// domain whose record disappears becomes failed after failed_after_checks
// checks and may no longer send; a domain pending longer than
// pending_timeout becomes failed (the 72-hour default, shortened) and can
// still be verified; an address verification link expires.
func TestIdentityDomainLifecycle(t *testing.T) {
	t.Parallel()
	e := newIdentityEnv(t, map[string]any{
		"identity.verified_check_interval": "1s",
		"identity.failed_after_checks":     2,
		"identity.pending_check_interval":  "1s",
		"identity.pending_timeout":         "2s",
		"identity.address_link_ttl":        "2s",
	})
	// Both domains are there before serve starts, so its first round of
	// checks sees them.
	d := e.inst.addDomain(t, senderDomain)
	stable := e.inst.addDomain(t, "stable.example")
	// Published, but never verified by hand: serve's checks verify it.
	e.inst.publishDKIM(e.inst.addPendingDomain(t, "auto.example"))
	lateAdded := time.Now()
	late := e.inst.addPendingDomain(t, otherDomain)
	e.user = e.inst.createUser(t, "app")
	e.start(t)
	// Not failed before pending_timeout is over.
	if status := e.inst.domainStatus(t, otherDomain); time.Since(lateAdded) < 1500*time.Millisecond && status != "pending" {
		t.Errorf("%s is %q %s after it was added; want pending until pending_timeout (2s)", otherDomain, status, time.Since(lateAdded))
	}

	t.Run("record removed after verification", func(t *testing.T) {
		t.Parallel()
		msgFrom := outgoing{user: e.user, envFrom: sender, from: sender, to: []string{recipient}}
		wantAccepted(t, "send while the record is published", e.submit(t, msgFrom))
		question := d.dkimRecords()[0].Name
		before := e.zone.CountType(question, dns.TypeTXT)
		for _, r := range d.dkimRecords() {
			e.zone.Remove(r.Name, dns.TypeTXT)
		}
		took := e.waitDomainStatus(t, senderDomain, "failed", 15*time.Second)
		checks := e.zone.CountType(question, dns.TypeTXT) - before
		t.Logf("failed %s after the record was removed, after %d lookups", took.Round(100*time.Millisecond), checks)
		if checks < 2 {
			t.Errorf("the domain failed after %d lookups of its DKIM record; failed_after_checks is 2", checks)
		}
		if status, checks := e.dkimCheck(t, senderDomain); status != "failed" || checks[0] != "missing" {
			t.Errorf("domain show: status %q, DKIM checks %q; want failed and [missing]", status, checks)
		}
		wantRefused(t, "send as a domain that failed", e.submit(t, msgFrom), "MAIL", 554, notVerifiedText(sender))
		// The operator hears of it in the log.
		logged := false
		for _, line := range strings.Split(e.inst.serveLg.String(), "\n") {
			if strings.Contains(line, senderDomain) && (strings.Contains(line, "failed") || strings.Contains(line, "no longer verified")) {
				logged = true
			}
		}
		if !logged {
			t.Errorf("serve logged no line saying that %s failed", senderDomain)
		}
	})
	t.Run("verified by the server", func(t *testing.T) {
		t.Parallel()
		took := e.waitDomainStatus(t, "auto.example", "verified", 10*time.Second)
		t.Logf("serve verified auto.example %s after the test started looking", took.Round(100*time.Millisecond))
		addr := "app@auto.example"
		wantAccepted(t, "send as the domain serve verified", e.submit(t, outgoing{user: e.user, envFrom: addr, from: addr, to: []string{recipient}}))
	})
	t.Run("DNS failure is not a missing record", func(t *testing.T) {
		t.Parallel()
		// While the DNS server answers SERVFAIL for the DKIM record, the
		// checks (every second; 2 failures would do) prove nothing either
		// way: the domain stays verified and keeps sending.
		name := stable.dkimRecords()[0].Name
		before := e.zone.CountType(name, dns.TypeTXT)
		e.zone.Fail(name, dns.RcodeServerFailure)
		time.Sleep(3500 * time.Millisecond)
		checks := e.zone.CountType(name, dns.TypeTXT) - before
		status := e.inst.domainStatus(t, "stable.example")
		e.zone.Fail(name, dns.RcodeSuccess)
		if checks < 2 {
			t.Fatalf("serve asked for %s TXT %d times in 3.5s with verified_check_interval 1s; want at least 2", name, checks)
		}
		if status != "verified" {
			t.Errorf("after %d checks answered SERVFAIL, stable.example is %q, want verified", checks, status)
		}
		addr := "app@stable.example"
		wantAccepted(t, "send after the DNS failure", e.submit(t, outgoing{user: e.user, envFrom: addr, from: addr, to: []string{recipient}}))
	})
	t.Run("pending expires", func(t *testing.T) {
		t.Parallel()
		other := "app@" + otherDomain
		msgFrom := outgoing{user: e.user, envFrom: other, from: other, to: []string{recipient}}
		e.waitDomainStatus(t, otherDomain, "failed", 15*time.Second)
		t.Logf("pending domain failed %s after it was added (pending_timeout 2s)", time.Since(lateAdded).Round(100*time.Millisecond))
		wantRefused(t, "send as a domain whose verification expired", e.submit(t, msgFrom), "MAIL", 554, notVerifiedText(other))
		// Publishing the record late and verifying again works.
		e.inst.publishDKIM(late)
		e.inst.verifyDomain(t, otherDomain)
		tok := newToken()
		msgFrom.token = tok
		wantAccepted(t, "send after verifying the expired domain", e.submit(t, msgFrom))
		verifyDKIM(t, mustWait(t, e.mx1, "the message", carrying(tok)), otherDomain, late.dkimRecords())
	})
	t.Run("address link expires", func(t *testing.T) {
		t.Parallel()
		const addr = "late-reader@example.net"
		added := time.Now()
		e.inst.mustAdmin(t, "address", "add", addr)
		link := e.verificationLink(t, e.mx1, addr)
		time.Sleep(time.Until(added.Add(3 * time.Second))) // address_link_ttl is 2s
		if status, body := open(t, http.MethodGet, link, nil); status != http.StatusGone {
			t.Errorf("GET of an expired link: status %d, want 410\n%s", status, body)
		}
		if status, body := open(t, http.MethodPost, link, url.Values{}); status != http.StatusGone {
			t.Errorf("POST to an expired link: status %d, want 410\n%s", status, body)
		}
		if got := e.addressStatus(t, addr); got != "pending" {
			t.Errorf("after its link expired, %s is %q, want pending", addr, got)
		}
		// address add again sends a fresh link, which works (within 2s).
		e.inst.mustAdmin(t, "address", "add", addr)
		fresh := e.newVerificationLink(t, e.mx1, addr, link)
		status, body := open(t, http.MethodPost, fresh, url.Values{})
		if status != http.StatusOK && status != http.StatusSeeOther && status != http.StatusFound {
			t.Errorf("POST to the fresh link: status %d\n%s", status, body)
		}
		if got := e.addressStatus(t, addr); got != "verified" {
			t.Errorf("after POST to the fresh link, %s is %q, want verified", addr, got)
		}
	})
}

// TestIdentitySenderAuthorization: the envelope sender and the From header
// are checked each against the identities the credential may use; `user
// allow` restricts a credential to some; a verified address in a domain
// without keys sends signed for dkim.fallback_domain.
func TestIdentitySenderAuthorization(t *testing.T) {
	t.Parallel()
	e := newIdentityEnv(t, map[string]any{"dkim.fallback_domain": senderDomain})
	d := e.inst.addDomain(t, senderDomain)
	od := e.inst.addDomain(t, otherDomain)
	e.inst.addPendingDomain(t, "pending.example")
	app := e.inst.createUser(t, "app")
	shop := e.inst.createUser(t, "shop")
	e.inst.mustAdmin(t, "user", "allow", "shop", senderDomain)
	e.start(t)
	records := append(d.dkimRecords(), od.dkimRecords()...)

	if u := e.userShow(t, "shop"); !slices.Equal(u.Allowed, []string{senderDomain}) {
		t.Errorf("user show shop: allowed_identities %q, want [%s]", u.Allowed, senderDomain)
	}
	if u := e.userShow(t, "app"); len(u.Allowed) != 0 {
		t.Errorf("user show app: allowed_identities %q, want none (every verified identity)", u.Allowed)
	}

	t.Run("envelope allowed, From header not", func(t *testing.T) {
		for _, from := range []string{"ceo@unverified.example", "ceo@pending.example"} {
			r := e.submit(t, outgoing{user: app, envFrom: sender, from: from, to: []string{recipient}})
			wantRefused(t, "MAIL FROM "+sender+", From: "+from, r, "DATA", 554, notVerifiedText(from))
		}
	})
	t.Run("From header allowed, envelope not", func(t *testing.T) {
		for _, env := range []string{"bounces@unverified.example", "bounces@pending.example"} {
			r := e.submit(t, outgoing{user: app, envFrom: env, from: sender, to: []string{recipient}})
			wantRefused(t, "MAIL FROM "+env+", From: "+sender, r, "MAIL", 554, notVerifiedText(env))
		}
	})
	t.Run("restricted credential", func(t *testing.T) {
		other := "news@" + otherDomain
		wantAccepted(t, "app (unrestricted) as "+other,
			e.submit(t, outgoing{user: app, envFrom: other, from: other, to: []string{recipient}}))
		wantRefused(t, "shop (allowed example.com) as "+other,
			e.submit(t, outgoing{user: shop, envFrom: other, from: other, to: []string{recipient}}),
			"MAIL", 554, notVerifiedText(other))
		wantRefused(t, "shop with the envelope in example.com, From: "+other,
			e.submit(t, outgoing{user: shop, envFrom: sender, from: other, to: []string{recipient}}),
			"DATA", 554, notVerifiedText(other))
		tok := newToken()
		wantAccepted(t, "shop as "+sender,
			e.submit(t, outgoing{user: shop, envFrom: sender, from: sender, to: []string{recipient}, token: tok}))
		verifyDKIM(t, mustWait(t, e.mx1, "shop's message", carrying(tok)), senderDomain, records)

		// Domains and the From header's domain are compared without case.
		upper := "App@Example.COM"
		wantAccepted(t, "shop as "+upper,
			e.submit(t, outgoing{user: shop, envFrom: upper, from: "App@EXAMPLE.com", to: []string{recipient}}))

		// Restricted to one address of a verified domain.
		const billing = "billing@" + senderDomain
		e.inst.mustAdmin(t, "user", "allow", "shop", billing)
		wantAccepted(t, "shop (allowed "+billing+") as "+billing,
			e.submit(t, outgoing{user: shop, envFrom: billing, from: billing, to: []string{recipient}}))
		wantRefused(t, "shop (allowed "+billing+") as "+sender,
			e.submit(t, outgoing{user: shop, envFrom: sender, from: sender, to: []string{recipient}}),
			"MAIL", 554, notVerifiedText(sender))
		wantRefused(t, "shop (allowed "+billing+") with From: "+sender,
			e.submit(t, outgoing{user: shop, envFrom: billing, from: sender, to: []string{recipient}}),
			"DATA", 554, notVerifiedText(sender))

		// No identities: every verified one again.
		e.inst.mustAdmin(t, "user", "allow", "shop")
		if u := e.userShow(t, "shop"); len(u.Allowed) != 0 {
			t.Errorf("after user allow shop (no identities): allowed_identities %q, want none", u.Allowed)
		}
		wantAccepted(t, "shop as "+other+" after the restriction is lifted",
			e.submit(t, outgoing{user: shop, envFrom: other, from: other, to: []string{recipient}}))
	})
	t.Run("verified address in a domain without keys", func(t *testing.T) {
		addr := "ceo@" + personalDomain
		msgFrom := outgoing{user: app, envFrom: addr, from: addr, to: []string{recipient}}
		wantRefused(t, "as "+addr+" before it is verified", e.submit(t, msgFrom), "MAIL", 554, notVerifiedText(addr))
		e.verifyAddress(t, e.mx2, addr) // personal.example's MX is mx2
		tok := newToken()
		msgFrom.token = tok
		wantAccepted(t, "as the verified address "+addr, e.submit(t, msgFrom))
		// Signed for the fallback domain, as SES signs for amazonses.com.
		verifyDKIM(t, mustWait(t, e.mx1, "the message", carrying(tok)), senderDomain, records)
		other := "someone-else@" + personalDomain
		wantRefused(t, "as another address of "+personalDomain,
			e.submit(t, outgoing{user: app, envFrom: other, from: other, to: []string{recipient}}),
			"MAIL", 554, notVerifiedText(other))
	})
}

// TestIdentitySandbox: a sandboxed credential may send only to verified
// addresses and to addresses in verified domains; the address verification
// link verifies on POST only, once; a made-up token is unknown.
func TestIdentitySandbox(t *testing.T) {
	t.Parallel()
	e := newIdentityEnv(t, map[string]any{
		"policy.sandbox_new_users":     true,
		"policy.sandbox_max_send_rate": 100.0, // the rate has its own test
	})
	d := e.inst.addDomain(t, senderDomain)
	e.inst.addPendingDomain(t, "pending.example")
	user := e.inst.createUser(t, "newbie")
	e.start(t)
	if u := e.userShow(t, "newbie"); !u.Sandbox || u.DailyQuota != 200 || u.MaxSendRate != 100 {
		t.Errorf("user show newbie: sandbox %v, daily_quota %d, max_send_rate %v; want true, 200 (the default), 100",
			u.Sandbox, u.DailyQuota, u.MaxSendRate)
	}
	to := func(rcpt string) outgoing {
		return outgoing{user: user, envFrom: sender, from: sender, to: []string{rcpt}, token: newToken()}
	}
	const friend = "friend@example.net"

	t.Run("to a non-verified recipient", func(t *testing.T) {
		r := e.submit(t, to(stranger))
		wantRefusedPrefix(t, "sandbox to "+stranger, r, "RCPT", 554, notVerifiedText(stranger)+" (credential newbie is in the sandbox")
		r = e.submit(t, to(friend))
		wantRefusedPrefix(t, "sandbox to "+friend+" before it is verified", r, "RCPT", 554, notVerifiedText(friend)+" (credential newbie")
		r = e.submit(t, to("someone@pending.example"))
		wantRefusedPrefix(t, "sandbox to an address in a pending domain", r, "RCPT", 554, notVerifiedText("someone@pending.example"))
	})
	var link string
	t.Run("to a verified address", func(t *testing.T) {
		link = e.verifyAddress(t, e.mx1, friend) // GET alone leaves it pending: checked inside
		o := to(friend)
		wantAccepted(t, "sandbox to the verified address "+friend, e.submit(t, o))
		verifyDKIM(t, mustWait(t, e.mx1, "the message to "+friend, carrying(o.token)), senderDomain, d.dkimRecords())
	})
	t.Run("to an address in a verified domain", func(t *testing.T) {
		o := to("colleague@" + senderDomain)
		wantAccepted(t, "sandbox to colleague@"+senderDomain, e.submit(t, o))
		mustWait(t, e.senderMX, "the message to colleague@"+senderDomain, carrying(o.token))
	})
	t.Run("link used twice", func(t *testing.T) {
		if link == "" {
			t.Skip("no link: the verification failed")
		}
		if status, body := open(t, http.MethodPost, link, url.Values{}); status != http.StatusNotFound {
			t.Errorf("second POST to a used link: status %d, want 404\n%s", status, body)
		}
		if status, body := open(t, http.MethodGet, link, nil); status != http.StatusNotFound {
			t.Errorf("GET of a used link: status %d, want 404\n%s", status, body)
		}
		if got := e.addressStatus(t, friend); got != "verified" {
			t.Errorf("after the used link was opened again, %s is %q, want verified", friend, got)
		}
	})
	t.Run("made-up token", func(t *testing.T) {
		for _, tok := range []string{"made-up-token", strings.Repeat("A", 43), "0123456789abcdef0123456789abcdef"} {
			u := "http://" + e.inst.httpAddr + "/verify/" + tok
			if status, body := open(t, http.MethodGet, u, nil); status != http.StatusNotFound {
				t.Errorf("GET %s: status %d, want 404\n%s", u, status, body)
			}
			if status, body := open(t, http.MethodPost, u, url.Values{}); status != http.StatusNotFound {
				t.Errorf("POST %s: status %d, want 404\n%s", u, status, body)
			}
		}
	})
	t.Run("address delete", func(t *testing.T) {
		e.inst.mustAdmin(t, "address", "delete", friend)
		if got := e.addressStatus(t, friend); got != "" {
			t.Errorf("after address delete, address list still has %s (%s)", friend, got)
		}
		wantRefusedPrefix(t, "sandbox to the deleted address "+friend, e.submit(t, to(friend)),
			"RCPT", 554, notVerifiedText(friend))
	})
}

// TestIdentityPromoteAndRate: the sandbox sends one recipient a second (the
// second message within a second gets SES's rate reply; after a second it
// passes); `user promote` lets the credential send to anyone, and `user
// sandbox` takes that back.
func TestIdentityPromoteAndRate(t *testing.T) {
	t.Parallel()
	e := newIdentityEnv(t, map[string]any{"policy.sandbox_new_users": true}) // sandbox rate 1/s, the default
	e.inst.addDomain(t, senderDomain)
	user := e.inst.createUser(t, "ratey")
	e.start(t)
	to := func(rcpt string) outgoing {
		return outgoing{user: user, envFrom: sender, from: sender, to: []string{rcpt}, token: newToken()}
	}
	colleague := "colleague@" + senderDomain

	t.Run("second message within a second", func(t *testing.T) {
		first := time.Now()
		wantAccepted(t, "first message", e.submit(t, to(colleague)))
		r := e.submit(t, to(colleague))
		if elapsed := time.Since(first); elapsed >= 900*time.Millisecond {
			t.Skipf("the two submissions took %s; too slow to test a rate of 1 a second", elapsed)
		}
		wantRefused(t, "second message within a second", r, "DATA", 454, sendRateText)
		time.Sleep(1100 * time.Millisecond)
		wantAccepted(t, "a message more than a second later", e.submit(t, to(colleague)))
	})
	t.Run("promote and sandbox again", func(t *testing.T) {
		time.Sleep(1100 * time.Millisecond) // a fresh second of sandbox rate
		wantRefusedPrefix(t, "sandboxed to "+stranger, e.submit(t, to(stranger)), "RCPT", 554, notVerifiedText(stranger))

		e.inst.mustAdmin(t, "user", "promote", "ratey")
		if u := e.userShow(t, "ratey"); u.Sandbox || u.DailyQuota != 50000 || u.MaxSendRate != 14 {
			t.Errorf("after promote: sandbox %v, daily_quota %d, max_send_rate %v; want false, 50000, 14 (the production defaults)",
				u.Sandbox, u.DailyQuota, u.MaxSendRate)
		}
		o := to(stranger)
		wantAccepted(t, "promoted to "+stranger, e.submit(t, o))
		mustWait(t, e.mx1, "the message to "+stranger, carrying(o.token))
		// Production rate: 14 a second, so a second message at once passes.
		wantAccepted(t, "promoted, a second message at once", e.submit(t, to(stranger)))

		e.inst.mustAdmin(t, "user", "sandbox", "ratey")
		if u := e.userShow(t, "ratey"); !u.Sandbox {
			t.Errorf("after user sandbox: user show says sandbox false")
		}
		wantRefusedPrefix(t, "back in the sandbox, to "+stranger, e.submit(t, to(stranger)), "RCPT", 554,
			notVerifiedText(stranger)+" (credential ratey is in the sandbox")
	})
}

// TestIdentityDailyQuota: quotas count recipients. With a sandbox quota of
// 5 a day, the 6th recipient is refused with SES's reply, before and after
// a restart, and `user show` reports the usage. (The literal 201st message
// of a default sandbox day is account.TestSandboxRateAndDailyQuota, with a
// test clock; here the quota is set low so the test sends only a few.) A
// promoted credential gets the production quota, and `user quota` sets its
// own.
func TestIdentityDailyQuota(t *testing.T) {
	t.Parallel()
	e := newIdentityEnv(t, map[string]any{
		"policy.sandbox_new_users":     true,
		"policy.sandbox_daily_quota":   5,
		"policy.sandbox_max_send_rate": 100.0,
	})
	e.inst.addDomain(t, senderDomain)
	user := e.inst.createUser(t, "counted")
	e.start(t)
	rcpts := func(names ...string) outgoing {
		o := outgoing{user: user, envFrom: sender, from: sender, token: newToken()}
		for _, n := range names {
			o.to = append(o.to, n+"@"+senderDomain)
		}
		return o
	}
	wantSent := func(t *testing.T, when string, sent, quota int) {
		t.Helper()
		if u := e.userShow(t, "counted"); u.Sent24h != sent || u.DailyQuota != quota {
			t.Errorf("user show %s: sent_last_24h %d of daily_quota %d, want %d of %d", when, u.Sent24h, u.DailyQuota, sent, quota)
		}
	}

	wantAccepted(t, "3 recipients", e.submit(t, rcpts("a", "b", "c")))
	wantAccepted(t, "1 more (4)", e.submit(t, rcpts("d")))
	wantRefused(t, "2 more (would be 6)", e.submit(t, rcpts("e", "f")), "DATA", 454, dailyQuotaText)
	wantAccepted(t, "1 more (5)", e.submit(t, rcpts("e")))
	wantRefused(t, "the 6th recipient of the day", e.submit(t, rcpts("f")), "DATA", 454, dailyQuotaText)
	wantSent(t, "at the quota", 5, 5)

	e.stopGracefully(t)
	wantSent(t, "while serve is stopped", 5, 5)
	e.start(t)
	wantRefused(t, "the 6th recipient after a restart", e.submit(t, rcpts("f")), "DATA", 454, dailyQuotaText)
	wantSent(t, "after the restart", 5, 5)

	// Out of the sandbox the production quota applies; `user quota` sets
	// the credential's own.
	e.inst.mustAdmin(t, "user", "promote", "counted")
	e.inst.mustAdmin(t, "user", "quota", "counted", "--daily", "6", "--rate", "50")
	if u := e.userShow(t, "counted"); u.DailyQuota != 6 || u.MaxSendRate != 50 {
		t.Errorf("after user quota --daily 6 --rate 50: daily_quota %d, max_send_rate %v", u.DailyQuota, u.MaxSendRate)
	}
	wantAccepted(t, "the 6th recipient with a quota of 6", e.submit(t, rcpts("f")))
	wantRefused(t, "the 7th recipient with a quota of 6", e.submit(t, rcpts("g")), "DATA", 454, dailyQuotaText)
	wantSent(t, "with its own quota", 6, 6)
}
