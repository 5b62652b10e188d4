package inbound

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"

	"github.com/sesame-mail/sesame/dnsclient"
	"github.com/sesame-mail/sesame/store"
	"github.com/sesame-mail/sesame/verp"
)

// countingStore is the real store, counting the lookups of original
// messages.
type countingStore struct {
	*store.SQLite
	lookups atomic.Int64
}

func (c *countingStore) SendEvents(ctx context.Context, queueID, messageID string) ([]store.Event, error) {
	c.lookups.Add(1)
	return c.SQLite.SendEvents(ctx, queueID, messageID)
}

// testEnv is an inbound listener on loopback over a real store, with a DNS
// server of the test's for DKIM keys.
type testEnv struct {
	t      *testing.T
	srv    *Server
	st     *countingStore
	signer *verp.Signer
	zone   *zone
	addr   string
}

const (
	feedbackAddr = "fbl@example.com"
	sendingDom   = "example.com"
)

func newTestEnv(t *testing.T, edit func(*Config)) *testEnv {
	t.Helper()
	sq, err := store.OpenSQLite(filepath.Join(t.TempDir(), "sesame.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sq.Close() })
	z := startZone(t)
	resolver, err := dnsclient.New([]string{z.addr}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Listen:            []string{"127.0.0.1:0"},
		Hostname:          "sesame.test",
		FeedbackAddresses: []string{feedbackAddr},
		FeedbackReporters: []string{"fbl.provider.test", "staff@mail.provider.test"},
		DNS:               resolver,
		Logger:            slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	}
	if edit != nil {
		edit(&cfg)
	}
	e := &testEnv{t: t, st: &countingStore{SQLite: sq}, signer: verp.New(bytes.Repeat([]byte{7}, verp.KeySize), "bounce"), zone: z}
	e.srv = New(cfg, e.st, e.signer)
	if err := e.srv.Listen(); err != nil {
		t.Fatal(err)
	}
	e.addr = e.srv.lns[0].Addr().String()
	done := make(chan struct{})
	go func() { defer close(done); e.srv.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e.srv.Shutdown(ctx)
		<-done
	})
	return e
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// sent queues a message of ours to rcpts and returns its queue id and each
// recipient's return path.
func (e *testEnv) sent(rcpts ...string) (string, map[string]string) {
	e.t.Helper()
	m := &store.Message{Credential: "", Sender: "app@" + sendingDom, Recipients: rcpts,
		MessageID: "<" + rand.Text() + "@example.com>", ReceivedAt: time.Now(), Data: []byte("Subject: hi\r\n\r\nhi\r\n")}
	if err := e.st.Enqueue(context.Background(), m); err != nil {
		e.t.Fatal(err)
	}
	paths := map[string]string{}
	for _, r := range rcpts {
		paths[r] = e.signer.ReturnPath(sendingDom, m.ID, r)
	}
	return m.ID, paths
}

// report sends raw from the null sender to rcpt, from the local address
// from ("" for any), and returns the reply to the end of DATA.
func (e *testEnv) report(from, rcpt, raw string) error {
	e.t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	conn, err := d.Dial("tcp", e.addr)
	if err != nil {
		e.t.Fatal(err)
	}
	c := smtp.NewClient(conn)
	defer c.Close()
	if err := c.Hello("mx.provider.test"); err != nil {
		e.t.Fatal(err)
	}
	if err := c.Mail("", nil); err != nil {
		e.t.Fatal(err)
	}
	if err := c.Rcpt(rcpt, nil); err != nil {
		e.t.Fatalf("RCPT TO:<%s>: %v", rcpt, err)
	}
	w, err := c.Data()
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := w.Write([]byte(crlf(raw))); err != nil {
		e.t.Fatal(err)
	}
	return w.Close()
}

// last returns the newest inbound message, with its bytes.
func (e *testEnv) last() store.InboundMessage {
	e.t.Helper()
	list, err := e.st.InboundMessages(context.Background(), "", 1)
	if err != nil || len(list) == 0 {
		e.t.Fatalf("no inbound message: %v", err)
	}
	m, err := e.st.InboundMessage(context.Background(), list[0].ID)
	if err != nil {
		e.t.Fatal(err)
	}
	return m
}

// recorded returns the bounce and complaint events and the suppressions.
func (e *testEnv) recorded() (events []store.Event, sups []store.Suppression) {
	e.t.Helper()
	ctx := context.Background()
	for _, typ := range []string{store.EventBounce, store.EventComplaint} {
		evs, err := e.st.QueryEvents(ctx, store.EventQuery{Type: typ})
		if err != nil {
			e.t.Fatal(err)
		}
		events = append(events, evs...)
	}
	sups, err := e.st.ListSuppressions(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	return events, sups
}

func crlf(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\n", "\r\n")
}

// dsnReport is a DSN as Postfix writes one, about rcpts (each failed with
// 5.1.1), returning a header with the given Received fields.
func dsnReport(rcpts []string, received []string) string {
	var b strings.Builder
	b.WriteString(`From: MAILER-DAEMON@mx1.example.net (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: bounce-address@bounce.example.com
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B1"

--B1
Content-Type: text/plain

Your message could not be delivered.

--B1
Content-Type: message/delivery-status

Reporting-MTA: dns; mx1.example.net
`)
	for _, r := range rcpts {
		fmt.Fprintf(&b, "\nFinal-Recipient: rfc822; %s\nAction: failed\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 <%s>: no such user\n", r, r)
	}
	b.WriteString("\n--B1\nContent-Type: text/rfc822-headers\n\n")
	for _, r := range received {
		b.WriteString("Received: " + r + "\n")
	}
	b.WriteString("From: app@example.com\nSubject: a message\n\n--B1--\n")
	return b.String()
}

// arfReport is a feedback-loop complaint from `from` about rcpt of queue
// id qid, with Sesame's Received field in the attached header.
func arfReport(from, rcpt, qid string) string {
	return fmt.Sprintf(`From: <%[1]s>
To: <fbl@example.com>
Subject: FW: a message
Date: Fri, 27 Nov 2026 11:02:11 +0000
Message-ID: <fbl-8841@fbl.provider.test>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="fbl_boundary_77"

--fbl_boundary_77
Content-Type: text/plain; charset="US-ASCII"

This is an email abuse report.

--fbl_boundary_77
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: ProviderFBL/1.0
Version: 1
Original-Mail-From: <app@example.com>
Original-Rcpt-To: <%[2]s>
Arrival-Date: Fri, 27 Nov 2026 10:15:00 +0000

--fbl_boundary_77
Content-Type: text/rfc822-headers

Received: from swaks.client.test ([127.0.0.1])
	by sesame.test (Sesame) with ESMTPSA id %[3]s
	for <%[2]s>; Fri, 27 Nov 2026 10:14:57 +0000
From: app@example.com
To: <%[2]s>
Subject: a message

--fbl_boundary_77--
`, from, rcpt, qid)
}

// dkimKey is a signing key whose public half the zone serves.
type dkimKey struct {
	domain, selector string
	key              ed25519.PrivateKey
}

// newKey makes a key for domain and publishes it in z.
func newKey(t *testing.T, z *zone, domain string) dkimKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	k := dkimKey{domain: domain, selector: "fbl", key: priv}
	z.setTXT("fbl._domainkey."+domain, "v=DKIM1; k=ed25519; p="+base64.StdEncoding.EncodeToString(pub))
	return k
}

// sign returns raw with a relaxed/relaxed DKIM signature of k on top.
func (k dkimKey) sign(t *testing.T, raw string) string {
	t.Helper()
	var b bytes.Buffer
	err := dkim.Sign(&b, strings.NewReader(crlf(raw)), &dkim.SignOptions{Domain: k.domain, Selector: k.selector, Signer: k.key,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed,
		HeaderKeys: []string{"From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type"}})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// zone is a DNS server on loopback (UDP) that recurses in appearance,
// answering TXT questions from its records, SERVFAIL for broken names,
// and counting the questions.
type zone struct {
	addr string

	mu     sync.Mutex
	txt    map[string]string // lower-case FQDN → record
	broken map[string]bool
	asked  map[string]int
}

func startZone(t *testing.T) *zone {
	t.Helper()
	z := &zone{txt: map[string]string{}, broken: map[string]bool{}, asked: map[string]int{}}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	z.addr = pc.LocalAddr().String()
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(z.serve)}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return z
}

func (z *zone) setTXT(name, value string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.txt[dns.CanonicalName(name)] = value
}

func (z *zone) setBroken(name string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.broken[dns.CanonicalName(name)] = true
}

// questions is how many questions were asked about names ending in suffix.
func (z *zone) questions(suffix string) int {
	z.mu.Lock()
	defer z.mu.Unlock()
	n := 0
	for name, c := range z.asked {
		if strings.HasSuffix(name, dns.CanonicalName(suffix)) {
			n += c
		}
	}
	return n
}

func (z *zone) serve(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = true
	q := req.Question[0]
	name := dns.CanonicalName(q.Name)
	z.mu.Lock()
	z.asked[name]++
	v, ok := z.txt[name]
	broken := z.broken[name]
	z.mu.Unlock()
	switch {
	case broken:
		m.Rcode = dns.RcodeServerFailure
	case !ok:
		m.Rcode = dns.RcodeNameError
	case q.Qtype == dns.TypeTXT:
		var parts []string
		for len(v) > 255 {
			parts, v = append(parts, v[:255]), v[255:]
		}
		m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60},
			Txt: append(parts, v)})
	}
	w.WriteMsg(m)
}
