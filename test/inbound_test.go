package test

// The feedback loop from the built binary, over real SMTP both ways: mail
// leaves with a per-recipient return path (VERP) to the MX sinks, and a
// test "mailbox provider" sends asynchronous DSNs and ARF complaint reports
// back to Sesame's inbound listener. The reports are written here in the
// shape Postfix and the providers' feedback loops send; the provider's
// feedback loop signs its complaints (DKIM, d=fbl.provider.test, its key
// in the instance's DNS server), as Yahoo's does.

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-smtp"

	"github.com/sesame-mail/sesame/testkit"
)

type inboundEnv struct {
	*mxEnv
	inboundAddr string
}

// fblDomain is the test provider's feedback loop: its reports come from
// feedback@fblDomain, signed by it.
const fblDomain = "fbl.provider.test"

// newInboundEnv starts serve with an inbound listener, the feedback address
// fbl@example.com and the test provider as its only feedback reporter;
// settings override more keys.
func newInboundEnv(t *testing.T, settings ...map[string]any) *inboundEnv {
	t.Helper()
	e := newMXEnv(t, mxOptions{})
	e.inst.unthrottled()
	addr := freeAddr(t, "127.0.0.1")
	e.inst.configure(map[string]any{
		"inbound.listen":             []string{addr},
		"inbound.feedback_addresses": []string{"fbl@example.com"},
		"inbound.feedback_reporters": []string{fblDomain},
	})
	for _, s := range settings {
		e.inst.configure(s)
	}
	e.start(t)
	return &inboundEnv{mxEnv: e, inboundAddr: addr}
}

// reportKey is a DKIM key of domain whose public half the instance's DNS
// server publishes.
type reportKey struct {
	domain string
	key    ed25519.PrivateKey
}

func (e *inboundEnv) reportKey(t *testing.T, domain string) reportKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	e.zone.SetTXT("fbl._domainkey."+domain, "v=DKIM1; k=ed25519; p="+base64.StdEncoding.EncodeToString(pub))
	return reportKey{domain, priv}
}

// sign puts a relaxed/relaxed DKIM signature of k on raw.
func (k reportKey) sign(t *testing.T, raw string) string {
	t.Helper()
	var b bytes.Buffer
	err := dkim.Sign(&b, strings.NewReader(toCRLF(raw)), &dkim.SignOptions{Domain: k.domain, Selector: "fbl", Signer: k.key,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed,
		HeaderKeys: []string{"From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type"}})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func toCRLF(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\n", "\r\n")
}

// deliver sends one message to rcpt and returns its queue id and the
// return path it left with.
func (e *inboundEnv) deliver(t *testing.T, rcpt string) (id, returnPath string) {
	t.Helper()
	token := "fb-" + newToken()
	id = e.send(t, token, rcpt)
	m := mustWait(t, e.mx1, "the message at the MX", carrying(token))
	return id, m.From
}

// report sends raw to the inbound listener as a provider would: from the
// null sender to rcpt. It returns the reply to RCPT (nil when accepted)
// and to the end of DATA.
func (e *inboundEnv) report(t *testing.T, rcpt string, raw string) (rcptErr, dataErr error) {
	t.Helper()
	c, err := smtp.Dial(e.inboundAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("mx.provider.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt(rcpt, nil); err != nil {
		return err, nil
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(toCRLF(raw)))
	return nil, w.Close()
}

type eventJSON struct {
	Type       string `json:"type"`
	Recipient  string `json:"recipient"`
	QueueID    string `json:"queue_id"`
	BounceType string `json:"bounce_type"`
	Credential string `json:"credential"`
	Reply      string `json:"reply"`
}

func (e *inboundEnv) events(t *testing.T, typ string) []eventJSON {
	t.Helper()
	var out []eventJSON
	raw := e.inst.mustAdmin(t, "events", "--type", typ, "--json")
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("events --json: %v\n%s", err, raw)
	}
	return out
}

func (e *inboundEnv) inboundList(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	e.inst.adminJSON(t, &out, "inbound", "list")
	return out
}

// postfixDSN is an asynchronous bounce as Postfix writes one.
func postfixDSN(rcpt, status, diag, queueID string) string {
	return fmt.Sprintf(`From: MAILER-DAEMON@mx1.example.net (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: bounce-address@bounce.example.com
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
	boundary="B1.1700000000/mx1.example.net"
Message-Id: <20261127101500.AB12C@mx1.example.net>

--B1.1700000000/mx1.example.net
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx1.example.net.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<%[1]s>: host store.example.net[10.0.0.5] said: %[3]s

--B1.1700000000/mx1.example.net
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx1.example.net
X-Postfix-Queue-ID: AB12C
Arrival-Date: Fri, 27 Nov 2026 10:14:58 +0000 (UTC)

Final-Recipient: rfc822; %[1]s
Original-Recipient: rfc822;%[1]s
Action: failed
Status: %[2]s
Remote-MTA: dns; store.example.net
Diagnostic-Code: smtp; %[3]s

--B1.1700000000/mx1.example.net
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

Received: from sesame.test (sesame.test [127.0.0.9])
	by mx1.example.net (Postfix) with ESMTPS id AB12C
	for <%[1]s>; Fri, 27 Nov 2026 10:14:58 +0000 (UTC)
Received: from swaks.client.test ([127.0.0.1])
	by sesame.test with ESMTPSA id %[4]s
	for <%[1]s>; Fri, 27 Nov 2026 10:14:57 +0000
From: app@example.com
To: %[1]s
Subject: a message

--B1.1700000000/mx1.example.net--
`, rcpt, status, diag, queueID)
}

// arfReport is a feedback-loop complaint as the providers' programs send
// them: the original message's header attached, its recipient in
// Original-Rcpt-To.
func arfReport(rcpt, queueID string) string {
	return arfReportFrom("feedback@"+fblDomain, rcpt, queueID)
}

// arfReportFrom is arfReport sent from another address.
func arfReportFrom(from, rcpt, queueID string) string {
	return fmt.Sprintf(`From: <%[3]s>
To: <fbl@example.com>
Subject: FW: a message
Date: Fri, 27 Nov 2026 11:02:11 +0000
Message-ID: <fbl-8841@fbl.provider.test>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="fbl_boundary_77"

--fbl_boundary_77
Content-Type: text/plain; charset="US-ASCII"

This is an email abuse report for an email message received from IP 127.0.0.9 on Fri, 27 Nov 2026 10:15:00 +0000.

--fbl_boundary_77
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: ProviderFBL/1.0
Version: 1
Original-Mail-From: <app@example.com>
Original-Rcpt-To: <%[1]s>
Arrival-Date: Fri, 27 Nov 2026 10:15:00 +0000
Source-IP: 127.0.0.9
Reported-Domain: example.com

--fbl_boundary_77
Content-Type: text/rfc822-headers

Received: from swaks.client.test ([127.0.0.1])
	by sesame.test with ESMTPSA id %[2]s
	for <%[1]s>; Fri, 27 Nov 2026 10:14:57 +0000
From: app@example.com
To: <%[1]s>
Subject: a message

--fbl_boundary_77--
`, rcpt, queueID, from)
}

var verpRE = regexp.MustCompile(`^b\+[a-z0-9]{16}\.[a-z2-7]{8}\.[a-z2-7]{16}@bounce\.example\.com$`)

func TestFeedbackLoopEndToEnd(t *testing.T) {
	e := newInboundEnv(t)

	// Each recipient leaves with a return path of its own.
	id1, rp1 := e.deliver(t, "gone@example.net")
	_, rp2 := e.deliver(t, "other@example.net")
	if !verpRE.MatchString(rp1) || rp1 == rp2 {
		t.Fatalf("return paths %q and %q: want distinct b+TOKEN@bounce.example.com", rp1, rp2)
	}

	// Forged, altered, and foreign recipients are refused: not a relay.
	altered := []byte(rp1)
	altered[5] ^= 1
	for _, rcpt := range []string{string(altered), strings.Replace(rp1, "example.com", "example.org", 1),
		"someone@example.org", "postmaster@bounce.example.com"} {
		err, _ := e.report(t, rcpt, postfixDSN("gone@example.net", "5.1.1", "550 5.1.1 no such user", id1))
		if se, ok := err.(*smtp.SMTPError); !ok || se.Code != 550 || se.EnhancedCode != (smtp.EnhancedCode{5, 1, 1}) {
			t.Errorf("RCPT TO:<%s>: %v, want 550 5.1.1", rcpt, err)
		}
	}

	// An asynchronous hard bounce: one bounce event, the address suppressed.
	if rcptErr, dataErr := e.report(t, rp1, postfixDSN("gone@example.net", "5.1.1",
		"550 5.1.1 <gone@example.net>: Recipient address rejected: User unknown in local recipient table", id1)); rcptErr != nil || dataErr != nil {
		t.Fatalf("DSN refused: %v %v", rcptErr, dataErr)
	}
	// The same DSN again (providers retry): no second event.
	e.report(t, rp1, postfixDSN("gone@example.net", "5.1.1", "550 5.1.1 User unknown", id1))
	bounces := e.events(t, "bounce")
	if len(bounces) != 1 || bounces[0].Recipient != "gone@example.net" || bounces[0].BounceType != "hard" ||
		bounces[0].QueueID != id1 || bounces[0].Credential != "mx" {
		t.Fatalf("bounce events %+v, want one hard bounce of gone@example.net in %s by mx", bounces, id1)
	}
	if out := string(e.inst.mustAdmin(t, "suppression", "show", "gone@example.net")); !strings.Contains(out, "bounce") {
		t.Errorf("suppression show: %s", out)
	}

	// A soft bounce (mailbox full) is recorded but not suppressed.
	id3, rp3 := e.deliver(t, "full@example.net")
	e.report(t, rp3, postfixDSN("full@example.net", "5.2.2", "552 5.2.2 Mailbox full", id3))
	soft := false
	for _, b := range e.events(t, "bounce") {
		soft = soft || b.Recipient == "full@example.net" && b.BounceType == "soft"
	}
	if !soft {
		t.Error("no soft bounce event for full@example.net")
	}
	if status, _, _ := e.inst.adminStatus(t, "suppression", "show", "full@example.net"); status == 0 {
		t.Error("a soft bounce suppressed the address")
	}

	// A complaint through the feedback address, signed by the provider's
	// feedback loop: a complaint event, the address suppressed.
	id4, _ := e.deliver(t, "angry@example.net")
	fbl := e.reportKey(t, fblDomain)
	if rcptErr, dataErr := e.report(t, "fbl@example.com", fbl.sign(t, arfReport("angry@example.net", id4))); rcptErr != nil || dataErr != nil {
		t.Fatalf("ARF refused: %v %v", rcptErr, dataErr)
	}
	complaints := e.events(t, "complaint")
	if len(complaints) != 1 || complaints[0].Recipient != "angry@example.net" || complaints[0].QueueID != id4 {
		t.Fatalf("complaint events %+v, want one for angry@example.net in %s", complaints, id4)
	}
	if out := string(e.inst.mustAdmin(t, "suppression", "show", "angry@example.net")); !strings.Contains(out, "complaint") {
		t.Errorf("suppression show: %s", out)
	}

	// Something that is no report is kept for the operator.
	if _, dataErr := e.report(t, rp2, "From: someone@example.net\nSubject: thanks!\n\nGreat newsletter.\n"); dataErr != nil {
		t.Fatalf("a plain message to a return path was refused: %v", dataErr)
	}
	statuses := map[string]int{}
	for _, m := range e.inboundList(t) {
		statuses[m["status"].(string)]++
	}
	if statuses["processed"] < 3 || statuses["unparsed"] != 1 {
		t.Errorf("inbound list statuses %v, want 3+ processed and 1 unparsed", statuses)
	}
	var unparsed []map[string]any
	e.inst.adminJSON(t, &unparsed, "inbound", "list", "--status", "unparsed")
	raw := e.inst.mustAdmin(t, "inbound", "show", fmt.Sprint(unparsed[0]["id"]))
	if !bytes.Contains(raw, []byte("Great newsletter.")) {
		t.Errorf("inbound show does not print the kept message:\n%s", raw)
	}

	// Mail to a suppressed address is accepted but not attempted.
	token := "again-" + newToken()
	e.send(t, token, "gone@example.net")
	deadline := time.Now().Add(mxWait)
	for {
		if sup := e.events(t, "suppressed"); len(sup) == 1 && sup[0].Recipient == "gone@example.net" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no suppressed event for mail to a suppressed address")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if e.mx1.Count(carrying(token)) != 0 {
		t.Error("mail to a suppressed address was delivered")
	}

	// Events and the suppression list survive a restart.
	e.stopGracefully(t)
	e.start(t)
	if len(e.events(t, "bounce")) < 2 || len(e.events(t, "complaint")) != 1 {
		t.Error("events lost across a restart")
	}
	if status, _, _ := e.inst.adminStatus(t, "suppression", "show", "angry@example.net"); status != 0 {
		t.Error("suppression lost across a restart")
	}
}

// The mailbox simulator: each name's outcome arrives through the same
// events and DSNs as real mail, from a sandboxed credential, without
// touching the quota, the suppression list or any server.
func TestMailboxSimulatorEndToEnd(t *testing.T) {
	e := newMXEnv(t, mxOptions{})
	e.inst.mustAdmin(t, "user", "sandbox", "mx")
	e.start(t)
	const dom = "simulator.sesame.test"
	token := "sim-" + newToken()
	e.send(t, token, "success@"+dom, "bounce@"+dom, "ooto@"+dom, "complaint@"+dom, "suppressionlist@"+dom)

	// One DSN for the two bounces, and the out-of-office reply, both to the
	// sender's MX.
	dsn := mustWait(t, e.senderMX, "the DSN for the simulated bounces", func(m *testkit.Message) bool {
		return dsnFor(token)(m) && bytes.Contains(m.Data, []byte("report-type=delivery-status"))
	})
	d := parseDSN(t, dsn)
	for _, r := range []string{"bounce@" + dom, "suppressionlist@" + dom} {
		if h := d.recipient(t, r); h.Get("Action") != "failed" || h.Get("Status") != "5.1.1" {
			t.Errorf("DSN for %s: %v", r, h)
		}
	}
	ooto := mustWait(t, e.senderMX, "the out-of-office reply", func(m *testkit.Message) bool {
		return bytes.Contains(m.Data, []byte("Subject: Out of office: "+token))
	})
	if ooto.From != "" || !bytes.Contains(ooto.Data, []byte("Auto-Submitted: auto-replied")) {
		t.Errorf("out-of-office reply from <%s>, want the null sender and Auto-Submitted", ooto.From)
	}
	ie := &inboundEnv{mxEnv: e}
	deadline := time.Now().Add(mxWait)
	for len(ie.events(t, "complaint")) == 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if c := ie.events(t, "complaint"); len(c) != 1 || c[0].Recipient != "complaint@"+dom {
		t.Errorf("complaint events %+v, want one for complaint@%s", c, dom)
	}
	delivered := map[string]bool{}
	for _, ev := range ie.events(t, "delivery") {
		delivered[ev.Recipient] = true
	}
	for _, r := range []string{"success@", "ooto@", "complaint@"} {
		if !delivered[r+dom] {
			t.Errorf("no delivery event for %s%s", r, dom)
		}
	}
	if n := len(e.mx1.Messages()) + len(e.mx2.Messages()); n != 0 {
		t.Errorf("%d messages reached a real server", n)
	}
	var sups []map[string]any
	e.inst.adminJSON(t, &sups, "suppression", "list")
	if len(sups) != 0 {
		t.Errorf("the simulator suppressed %v", sups)
	}
	var show struct {
		Sent int `json:"sent_last_24h"`
	}
	e.inst.adminJSON(t, &show, "user", "show", "mx")
	if show.Sent != 0 {
		t.Errorf("the simulator's recipients counted %d against the quota", show.Sent)
	}
}

// inboundEntry is one message of `sesame inbound list --json`.
type inboundEntry struct {
	ID           int64  `json:"id"`
	Client       string `json:"client"`
	Kind         string `json:"kind"`
	Status       string `json:"status"`
	Detail       string `json:"detail"`
	Verified     bool   `json:"verified"`
	Verification string `json:"verification"`
	Size         int64  `json:"size"`
	KeptBytes    int64  `json:"kept_bytes"`
	Truncated    bool   `json:"truncated"`
}

func inboundEntries(t *testing.T, inst *instance) []inboundEntry {
	t.Helper()
	var list []inboundEntry
	inst.adminJSON(t, &list, "inbound", "list")
	return list
}

func (e *inboundEnv) inboundEntries(t *testing.T) []inboundEntry {
	t.Helper()
	return inboundEntries(t, e.inst)
}

// mustAccept sends a report and fails unless it is accepted.
func (e *inboundEnv) mustAccept(t *testing.T, rcpt, raw string) {
	t.Helper()
	if rcptErr, dataErr := e.report(t, rcpt, raw); rcptErr != nil || dataErr != nil {
		t.Fatalf("report to <%s> refused: %v %v", rcpt, rcptErr, dataErr)
	}
}

// Reports anyone could forge knowing a queue id (it is in the Received field
// of delivered mail) change nothing: no bounce or complaint recorded, no
// suppression, the sender's reputation untouched. The genuine ones still
// count: a DSN on the recipient's own return path, a complaint signed by
// the feedback reporter.
func TestForgedReportsEndToEnd(t *testing.T) {
	// A reputation guard that would pause the sender at the first counted
	// complaint or hard bounce.
	e := newInboundEnv(t, map[string]any{
		"reputation.min_volume":      1,
		"reputation.bounce_pause":    0.2,
		"reputation.complaint_pause": 0.2,
	})
	id1, rp1 := e.deliver(t, "victim1@example.net")
	id2, rp2 := e.deliver(t, "victim2@example.net")

	// 1. A DSN to the feedback address naming a real queue id.
	e.mustAccept(t, "fbl@example.com", postfixDSN("victim1@example.net", "5.1.1", "550 5.1.1 no such user", id1))
	// 2. A DSN on the return path of another recipient.
	e.mustAccept(t, rp2, postfixDSN("victim1@example.net", "5.1.1", "550 5.1.1 no such user", id1))
	// 3. An unsigned complaint.
	e.mustAccept(t, "fbl@example.com", arfReport("victim1@example.net", id1))
	// 4. A complaint signed by a domain that is no feedback reporter.
	evil := e.reportKey(t, "evil.test")
	e.mustAccept(t, "fbl@example.com", evil.sign(t, arfReportFrom("feedback@evil.test", "victim2@example.net", id2)))

	if b, c := e.events(t, "bounce"), e.events(t, "complaint"); len(b) != 0 || len(c) != 0 {
		t.Errorf("forged reports recorded bounces %+v and complaints %+v", b, c)
	}
	var sups []map[string]any
	e.inst.adminJSON(t, &sups, "suppression", "list")
	if len(sups) != 0 {
		t.Errorf("forged reports suppressed %v", sups)
	}
	var user struct {
		Reputation    string  `json:"reputation"`
		Paused        string  `json:"paused"`
		BounceRate    float64 `json:"bounce_rate"`
		ComplaintRate float64 `json:"complaint_rate"`
	}
	e.inst.adminJSON(t, &user, "user", "show", "mx")
	if user.Reputation != "ok" || user.Paused != "" || user.BounceRate != 0 || user.ComplaintRate != 0 {
		t.Errorf("after forged reports the sender's standing is %+v, want ok and not paused", user)
	}
	list := e.inboundEntries(t)
	if len(list) != 4 {
		t.Fatalf("inbound list has %d messages, want the 4 reports: %+v", len(list), list)
	}
	for _, m := range list {
		if m.Status != "unverified" || m.Verified || m.Verification == "" {
			t.Errorf("forged report stored as %+v, want unverified with a reason", m)
		}
	}
	show := string(e.inst.mustAdmin(t, "inbound", "show", fmt.Sprint(list[0].ID)))
	if !strings.Contains(show, "Verified: unverified: From <feedback@evil.test> is not a feedback reporter") {
		t.Errorf("inbound show of the report signed by evil.test:\n%s", show)
	}
	metrics := scrape(t, e.inst)
	for _, want := range []string{`sesame_inbound_reports_total{kind="dsn",verdict="unverified"} 2`,
		`sesame_inbound_reports_total{kind="arf",verdict="unverified"} 2`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// The genuine ones.
	e.mustAccept(t, rp1, postfixDSN("victim1@example.net", "5.1.1", "550 5.1.1 no such user", id1))
	fbl := e.reportKey(t, fblDomain)
	e.mustAccept(t, "fbl@example.com", fbl.sign(t, arfReport("victim2@example.net", id2)))
	if b := e.events(t, "bounce"); len(b) != 1 || b[0].Recipient != "victim1@example.net" || b[0].BounceType != "hard" {
		t.Errorf("bounce events %+v, want the hard bounce of victim1", b)
	}
	if c := e.events(t, "complaint"); len(c) != 1 || c[0].Recipient != "victim2@example.net" {
		t.Errorf("complaint events %+v, want the complaint of victim2", c)
	}
	for _, a := range []string{"victim1@example.net", "victim2@example.net"} {
		if status, _, _ := e.inst.adminStatus(t, "suppression", "show", a); status != 0 {
			t.Errorf("%s not suppressed after a genuine report", a)
		}
	}
	list = e.inboundEntries(t)
	if len(list) != 6 || !list[0].Verified || !strings.Contains(list[0].Verification, "DKIM signature d="+fblDomain) ||
		!list[1].Verified || !strings.Contains(list[1].Verification, "return path of victim1@example.net") {
		t.Errorf("genuine reports stored as %+v", list[:min(2, len(list))])
	}
	e.inst.adminJSON(t, &user, "user", "show", "mx")
	if !strings.HasPrefix(user.Reputation, "pause") {
		t.Errorf("genuine reports left the standing %q; the guard would not act on them", user.Reputation)
	}
}

// One small report must not burn CPU-seconds: a 136 KB DSN with 1,000
// recipients and 1,000 Received fields cost 42 s of CPU and about a
// million store lookups. Three at once, two to the feedback address and one
// on a real return path, cost one lookup between them and little CPU.
func TestReportBombEndToEnd(t *testing.T) {
	e := newInboundEnv(t)
	id, rp := e.deliver(t, "gone@example.net")
	rcpts := []string{"gone@example.net"}
	var received []string
	for i := range 1000 {
		if i > 0 {
			rcpts = append(rcpts, fmt.Sprintf("user%d@example.net", i))
		}
		received = append(received, fmt.Sprintf("from relay%d.example.net by mx.example.net with ESMTPSA id %016d; Fri, 27 Nov 2026 10:14:58 +0000", i, i))
	}
	received = append(received, "from swaks.client.test ([127.0.0.1]) by sesame.test (Sesame) with ESMTPSA id "+id)
	bomb := bigDSN(rcpts, received)
	t.Logf("the report is %d bytes", len(bomb))

	lookups := func() float64 {
		v, ok := metricValue(t, scrape(t, e.inst), "sesame_inbound_lookups_total")
		if !ok {
			t.Error("/metrics has no sesame_inbound_lookups_total")
		}
		return v
	}
	lookupsBefore := lookups()
	cpuBefore := processCPU(t, e.inst)
	done := make(chan error, 3)
	for _, rcpt := range []string{"fbl@example.com", "fbl@example.com", rp} {
		go func() {
			rcptErr, dataErr := e.report(t, rcpt, bomb)
			done <- errors.Join(rcptErr, dataErr)
		}()
	}
	for range 3 {
		if err := <-done; err != nil {
			t.Errorf("a report was refused: %v", err)
		}
	}
	cpu := processCPU(t, e.inst) - cpuBefore
	n := lookups() - lookupsBefore
	t.Logf("three reports cost serve %s of CPU and %v store lookups", cpu, n)
	// The budget: one lookup (the return path's message), and CPU time far
	// below the 40 s a report cost: generous for a loaded machine and a
	// race-detector build.
	if n != 1 {
		t.Errorf("%v store lookups, want 1", n)
	}
	if cpu > 10*time.Second {
		t.Errorf("the reports cost %s of CPU", cpu)
	}
	if b := e.events(t, "bounce"); len(b) != 1 || b[0].Recipient != "gone@example.net" {
		t.Errorf("bounce events %+v, want the one of gone@example.net", b)
	}
	statuses := map[string]int{}
	for _, m := range e.inboundEntries(t) {
		statuses[m.Status]++
		if m.Status == "processed" && !strings.Contains(m.Detail, "900 recipients past the first 100 not examined") {
			t.Errorf("detail %.300q does not say what was left unexamined", m.Detail)
		}
	}
	if statuses["unverified"] != 2 || statuses["processed"] != 1 {
		t.Errorf("inbound statuses %v, want 2 unverified and 1 processed", statuses)
	}
}

// bigDSN is a Postfix-shaped DSN failing every one of rcpts, returning a
// header with the given Received fields.
func bigDSN(rcpts, received []string) string {
	var b strings.Builder
	b.WriteString(`From: MAILER-DAEMON@mx1.example.net (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: bounce-address@bounce.example.com
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B2"

--B2
Content-Type: text/plain

Your message could not be delivered.

--B2
Content-Type: message/delivery-status

Reporting-MTA: dns; mx1.example.net
`)
	for _, r := range rcpts {
		fmt.Fprintf(&b, "\nFinal-Recipient: rfc822; %s\nAction: failed\nStatus: 5.1.1\n", r)
	}
	b.WriteString("\n--B2\nContent-Type: text/rfc822-headers\n\n")
	for _, r := range received {
		b.WriteString("Received: " + r + "\n")
	}
	b.WriteString("From: app@example.com\nSubject: a message\n\n--B2--\n")
	return b.String()
}

// metricValue is the value of an unlabelled metric on a /metrics page, and
// whether the page has it.
func metricValue(t *testing.T, page, name string) (float64, bool) {
	t.Helper()
	for _, line := range strings.Split(page, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f, true
		}
	}
	return 0, false
}

// processCPU is the CPU time (user and system) serve has used so far, from
// /proc/PID/stat.
func processCPU(t *testing.T, i *instance) time.Duration {
	t.Helper()
	i.mu.Lock()
	pid := i.cmd.Process.Pid
	i.mu.Unlock()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatalf("serve's CPU time: %v", err)
	}
	// Fields after the command name (which may hold spaces) in
	// parentheses: state is 3rd, utime 14th, stime 15th, in clock ticks
	// of 1/100 s (USER_HZ on Linux).
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("/proc/%d/stat: %q", pid, b)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond
}
