package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"

	"github.com/sesame-mail/sesame/testkit"
)

// TestSendToSink runs the two halves against each other: send's clients
// deliver straight to the sink, which counts them and reads X-Bench-Sent.
func TestSendToSink(t *testing.T) {
	var logs testkit.Buffer
	s, err := startSink(sinkConfig{Listen: "127.0.0.2:0", SelfSigned: true, Expect: 100,
		Timeout: 30 * time.Second, ReportEvery: 5 * time.Millisecond}, time.Now, &logs)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		rep sinkReport
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := s.run(context.Background())
		done <- result{rep, err}
	}()

	cfg := testSendConfig(s.Addr().String())
	cfg.Auth, cfg.User, cfg.Recipients = "none", "", 2
	sent, err := runSend(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if sent.Accepted != 100 || len(sent.Errors) != 0 {
		t.Fatalf("send: accepted %d, errors %v %v", sent.Accepted, sent.Errors, sent.ErrorSamples)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	want := sinkReport{Received: 100, Recipients: 200, Bytes: 100 * 2048, Connections: 4,
		MsgsPerConn: 25, EndToEndSamples: 100, Addrs: 1}
	got := r.rep
	got.Seconds, got.MsgsPerSec, got.EndToEndP50ms, got.EndToEndP99ms, got.EndToEndMaxms = 0, 0, 0, 0, 0
	got.PeakSessions, got.PeakSessionsPerAddr, got.FirstUnix, got.LastUnix = 0, 0, 0, 0 // timing (latency_test.go checks them)
	if got != want {
		t.Errorf("sink report = %+v, want %+v", r.rep, want)
	}
	if r.rep.EndToEndP50ms <= 0 || r.rep.EndToEndP50ms > r.rep.EndToEndP99ms {
		t.Errorf("end-to-end percentiles wrong: %+v", r.rep)
	}
	if !strings.Contains(logs.String(), "sink: received=") {
		t.Errorf("no progress line in the log:\n%s", logs.String())
	}
}

// TestSinkToleratesSloppyInput speaks raw SMTP to the sink: bare LF, a
// 5,000-byte line and a message without the bench header must all be
// accepted, and the end-to-end time is read with the sink's clock.
func TestSinkToleratesSloppyInput(t *testing.T) {
	clock := testkit.NewClock(t)
	now := clock.Now()
	s, err := startSink(sinkConfig{Listen: "127.0.0.2:0", Expect: 2, Timeout: 30 * time.Second},
		clock.Now, &testkit.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c := textproto.NewConn(nc)
	step := func(code int, format string, args ...any) {
		t.Helper()
		if format != "" {
			if err := c.PrintfLine(format, args...); err != nil {
				t.Fatal(err)
			}
		}
		if _, msg, err := c.ReadResponse(code); err != nil {
			t.Fatalf("after %q: %v %s", fmt.Sprintf(format, args...), err, msg)
		}
	}
	step(220, "")
	step(250, "EHLO relay.localhost")
	sent := now.Add(-250 * time.Millisecond).UnixNano()
	messages := []string{
		"Subject: bare\nX-Bench-Sent: " + fmt.Sprint(sent) + "\n\nbody with bare LF\nand a long line " +
			strings.Repeat("z", 5000) + "\n\r\n.\r\n",
		"Subject: no bench header\r\n\r\nbody\r\n.\r\n",
	}
	for _, m := range messages {
		step(250, "MAIL FROM:<bounce@example.com>")
		step(250, "RCPT TO:<rcpt000@example.net>")
		step(354, "DATA")
		if _, err := nc.Write([]byte(m)); err != nil {
			t.Fatal(err)
		}
		step(250, "")
	}

	// The session stays open past the grace period, so it is cut.
	s.grace = 10 * time.Millisecond
	rep, err := s.run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReadLine(); err == nil {
		t.Error("session still open after the sink stopped")
	}
	if rep.Received != 2 || rep.Connections != 1 || rep.EndToEndSamples != 1 || rep.EndToEndP50ms != 250 {
		t.Errorf("report = %+v; want 2 received on 1 connection, one end-to-end sample of 250ms", rep)
	}
}

func TestSinkTimeout(t *testing.T) {
	s, err := startSink(sinkConfig{Listen: "127.0.0.2:0", Expect: 5, Timeout: 20 * time.Millisecond},
		time.Now, &testkit.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := s.run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "0 of 5") {
		t.Errorf("err = %v, want a timeout with 0 of 5 messages", err)
	}
	if rep.Received != 0 {
		t.Errorf("received = %d", rep.Received)
	}
	// The listener is closed once run returns.
	if c, err := net.Dial("tcp", s.Addr().String()); err == nil {
		c.Close()
		t.Error("sink still accepts connections after run returned")
	}
}

func TestSinkConfigValidate(t *testing.T) {
	tests := []struct {
		cfg   sinkConfig
		wants []string
	}{
		{sinkConfig{Listen: "127.0.0.2:2525"}, nil},
		{sinkConfig{Listen: "0.0.0.0:2525"}, []string{"--listen", "not loopback"}},
		{sinkConfig{Listen: ":2525"}, []string{"--listen", "not loopback"}},
		{sinkConfig{Listen: ":2525", AllowRemote: true}, nil},
		{sinkConfig{Listen: "127.0.0.2:2525", CertFile: "c.pem"}, []string{"go together"}},
		{sinkConfig{Listen: "127.0.0.2:2525", CertFile: "c", KeyFile: "k", SelfSigned: true}, []string{"exclude"}},
		{sinkConfig{Listen: "127.0.0.2:2525", Expect: -1, Timeout: -1, ReportEvery: -1},
			[]string{"--expect", "--timeout", "--report-every"}},
		{sinkConfig{Listen: "127.0.0.2:2525", DNS: "127.0.0.1:53"}, nil},
		{sinkConfig{Listen: "127.0.0.2:2525", DNS: "192.0.2.53:53"}, []string{"--dns", "not loopback"}},
		{sinkConfig{Listen: "127.0.0.2:2525", DNS: "no-port"}, []string{"--dns", "no-port"}},
	}
	for _, tt := range tests {
		err := tt.cfg.validate()
		if len(tt.wants) == 0 {
			if err != nil {
				t.Errorf("%+v: unexpected error %v", tt.cfg, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%+v: no error, want %q", tt.cfg, tt.wants)
			continue
		}
		for _, w := range tt.wants {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%+v: error lacks %q: %v", tt.cfg, w, err)
			}
		}
	}
}

// dkimFixture is a signing domain with an Ed25519 key (quick to make, and
// verified the same way as Sesame's RSA keys) and its record in the format
// of "sesame domain add --json".
type dkimFixture struct {
	key    ed25519.PrivateKey
	name   string // SELECTOR._domainkey.DOMAIN
	record string // the TXT value
}

func newDKIMFixture(t *testing.T) dkimFixture {
	t.Helper()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return dkimFixture{key: key, name: "bench._domainkey.example.com",
		record: "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)}
}

// recordsFile writes the records as "sesame domain add --json" prints them.
func (f dkimFixture) recordsFile(t *testing.T) string {
	t.Helper()
	out := map[string]any{"domain": "example.com", "status": "pending", "records": []map[string]any{
		{"type": "TXT", "name": f.name, "value": f.record, "required": true},
		{"type": "TXT", "name": "example.com", "value": "v=spf1 a:sesame.test ~all"},
	}}
	b, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "domain.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// sign returns msg with a relaxed/relaxed signature for example.com.
func (f dkimFixture) sign(t *testing.T, msg string) string {
	t.Helper()
	var out bytes.Buffer
	err := dkim.Sign(&out, strings.NewReader(msg), &dkim.SignOptions{Domain: "example.com", Selector: "bench",
		Signer: f.key, HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed})
	if err != nil {
		t.Fatal(err)
	}
	return out.String()
}

func benchMessage(n int) string {
	return fmt.Sprintf("From: shop@example.com\r\nTo: rcpt000@example.net\r\nSubject: dkim %d\r\n"+
		"%s: %d\r\n\r\nbody line one\r\nbody line two\r\n", n, sentHeader, time.Now().UnixNano())
}

// deliver hands the messages to the sink in one SMTP session.
func deliver(t *testing.T, addr string, msgs ...string) {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i, m := range msgs {
		if err := c.SendMail("bounce@example.com", []string{"rcpt000@example.net"}, strings.NewReader(m)); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
}

// runSink runs s until it has its messages and returns the report.
func runSink(t *testing.T, s *sink) <-chan sinkReport {
	t.Helper()
	done := make(chan sinkReport, 1)
	go func() {
		rep, err := s.run(context.Background())
		if err != nil {
			t.Error(err)
		}
		done <- rep
	}()
	return done
}

// TestSinkVerifiesDKIM checks the keys of a --dkim-records file: a good
// signature verifies, a body changed after signing fails, a message without
// a signature is counted as unsigned, and a failure makes the run fail.
func TestSinkVerifiesDKIM(t *testing.T) {
	f := newDKIMFixture(t)
	var logs testkit.Buffer
	s, err := startSink(sinkConfig{Listen: "127.0.0.2:0", Expect: 4, Timeout: 30 * time.Second,
		DKIMRecords: f.recordsFile(t)}, time.Now, &logs)
	if err != nil {
		t.Fatal(err)
	}
	done := runSink(t, s)
	good := f.sign(t, benchMessage(1))
	tampered := strings.Replace(f.sign(t, benchMessage(2)), "body line two", "body line 2", 1)
	otherSelector := strings.Replace(f.sign(t, benchMessage(3)), "s=bench;", "s=gone;", 1)
	deliver(t, s.Addr().String(), good, tampered, benchMessage(4))
	deliver(t, s.Addr().String(), otherSelector)
	rep := <-done

	if !rep.DKIMChecked || rep.DKIMVerified != 1 || rep.DKIMFailed != 2 || rep.DKIMUnsigned != 1 {
		t.Errorf("report %+v: want dkim checked, 1 verified, 2 failed, 1 unsigned", rep)
	}
	if rep.Received != 4 || rep.EndToEndSamples != 4 {
		t.Errorf("report %+v: want 4 received, all with an end-to-end time", rep)
	}
	if err := rep.dkimError(); err == nil || !strings.Contains(err.Error(), "2 of 4") {
		t.Errorf("dkimError() = %v, want 2 of 4 failed", err)
	}
	for _, want := range []string{"body hash did not verify", "not in --dkim-records"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
	var line bytes.Buffer
	if err := writeJSON(&line, rep); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"dkim_checked":true`, `"dkim_verified":1`, `"dkim_failed":2`, `"dkim_unsigned":1`} {
		if !strings.Contains(line.String(), want) {
			t.Errorf("JSON line lacks %s: %s", want, line.String())
		}
	}
}

// TestSinkDKIMOverDNS looks the key up at a DNS server (the dns
// subcommand's zone), once for the whole run.
func TestSinkDKIMOverDNS(t *testing.T) {
	f := newDKIMFixture(t)
	var queries atomic.Int32
	zone := benchZone{txt: map[string]string{f.name + ".": f.record}}
	dnsAddr := testkit.ServeDNS(t, dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		queries.Add(1)
		zone.ServeDNS(w, r)
	}))

	s, err := startSink(sinkConfig{Listen: "127.0.0.2:0", Expect: 3, Timeout: 30 * time.Second,
		DNS: dnsAddr}, time.Now, &testkit.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	done := runSink(t, s)
	deliver(t, s.Addr().String(), f.sign(t, benchMessage(1)), f.sign(t, benchMessage(2)), f.sign(t, benchMessage(3)))
	rep := <-done
	if rep.DKIMVerified != 3 || rep.DKIMFailed != 0 || rep.dkimError() != nil {
		t.Errorf("report %+v: want all 3 verified", rep)
	}
	if n := queries.Load(); n != 1 {
		t.Errorf("%d DNS queries for 3 messages signed with one key, want 1", n)
	}
}

// TestSinkWithoutDKIM: no verification asked for, no DKIM figures and no
// failure for an unsigned message.
func TestSinkWithoutDKIM(t *testing.T) {
	s, err := startSink(sinkConfig{Listen: "127.0.0.2:0", Expect: 1, Timeout: 30 * time.Second},
		time.Now, &testkit.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	done := runSink(t, s)
	deliver(t, s.Addr().String(), benchMessage(1))
	rep := <-done
	if rep.DKIMChecked || rep.DKIMUnsigned != 0 || rep.dkimError() != nil {
		t.Errorf("report %+v: want no DKIM figures", rep)
	}
	if _, err := startSink(sinkConfig{Listen: "127.0.0.2:0", DKIMRecords: filepath.Join(t.TempDir(), "missing.json")},
		time.Now, &testkit.Buffer{}); err == nil || !strings.Contains(err.Error(), "--dkim-records") {
		t.Errorf("missing records file: err = %v", err)
	}
}

// TestDKIMLookupLongRecord: an RSA-2048 key's record is longer than a
// 512-byte DNS answer and spread over several strings; the lookup gets it
// whole, and a name the server does not know is a not-found error.
func TestDKIMLookupLongRecord(t *testing.T) {
	long := "v=DKIM1; k=rsa; p=" + strings.Repeat("A", 600)
	dnsAddr := testkit.ServeDNS(t, benchZone{txt: map[string]string{"rsa._domainkey.example.com.": long}})

	c, err := newDKIMChecker("", dnsAddr)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.lookupTXT("RSA._domainkey.example.com")
	if err != nil || len(got) != 1 || got[0] != long {
		t.Fatalf("lookupTXT = %d records (%v), want the %d-byte record", len(got), err, len(long))
	}
	var de *net.DNSError
	if _, err := c.lookupTXT("other._domainkey.example.com"); !errors.As(err, &de) || !de.IsNotFound {
		t.Errorf("unknown name: err = %v, want a not-found DNS error", err)
	}
}

// TestCLISinkDKIMFailureExits1: the command line reports the DKIM counts
// and exits 1 when a message failed.
func TestCLISinkDKIMFailureExits1(t *testing.T) {
	f := newDKIMFixture(t)
	records := f.recordsFile(t)
	var stdout, stderr testkit.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(context.Background(), []string{"sink", "--listen", "127.0.0.2:0", "--expect", "2",
			"--timeout", "30s", "--dkim-records", records}, &stdout, &stderr)
	}()
	var addr string
	for deadline := time.Now().Add(10 * time.Second); addr == ""; time.Sleep(5 * time.Millisecond) {
		if _, rest, ok := strings.Cut(stderr.String(), "sink: listening on "); ok {
			addr, _, _ = strings.Cut(rest, "\n")
		} else if time.Now().After(deadline) {
			t.Fatalf("the sink did not start: %s", stderr.String())
		}
	}
	deliver(t, addr, f.sign(t, benchMessage(1)), strings.Replace(f.sign(t, benchMessage(2)), "one", "1", 1))
	if code := <-done; code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	if !strings.Contains(stdout.String(), `"dkim_verified":1,"dkim_failed":1,`) ||
		!strings.Contains(stderr.String(), "1 of 2 messages failed DKIM verification") {
		t.Errorf("stdout %q\nstderr %q", stdout.String(), stderr.String())
	}
}
