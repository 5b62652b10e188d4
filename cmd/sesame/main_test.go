package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/sesame-mail/sesame/config"
	"github.com/sesame-mail/sesame/events"
	"github.com/sesame-mail/sesame/store"
	"github.com/sesame-mail/sesame/testkit"
)

// sesame runs the command line in-process and returns its output.
func sesame(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return out.String(), errOut.String(), code
}

func freePort(t *testing.T, ip string) string {
	t.Helper()
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// writeConfig writes a configuration with every listener on a free loopback
// port; extra is TOML for the [relay] section and any later ones.
func writeConfig(t *testing.T, dir, extra string) (path string, cfg *config.Config) {
	t.Helper()
	if !strings.HasPrefix(extra, "[relay]") {
		extra = "[relay]\n" + extra
	}
	// A DNS server that knows no names: commands that look records up
	// (domain show, check, verify) find them missing, and nothing ever asks
	// the internet's DNS.
	extra = strings.Replace(extra, "[relay]\n", fmt.Sprintf("[relay]\ndns_servers = [%q]\n", testkit.StartZone(t).Addr), 1)
	text := fmt.Sprintf(`hostname = "sesame.test"
data_dir = %q
[submission]
starttls_listen = [%q]
tls_listen = [%q]
[http]
listen = %q
[api]
listen = %q
[policy]
sandbox_new_users = false
daily_quota = 1000000
max_send_rate = 100000
%s`, filepath.Join(dir, "data"), freePort(t, "127.0.0.1"), freePort(t, "127.0.0.1"), freePort(t, "127.0.0.1"),
		freePort(t, "127.0.0.1"), extra)
	path = filepath.Join(dir, "sesame.toml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path, true)
	if err != nil {
		t.Fatal(err)
	}
	return path, cfg
}

// markVerified stands in for DNS verification, which the identity and
// end-to-end tests exercise with a real DNS server.
func markVerified(t *testing.T, cfg *config.Config, domain string) {
	t.Helper()
	st, err := store.OpenSQLite(filepath.Join(cfg.DataDir, "sesame.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Now()
	if err := st.SetDomainStatus(context.Background(), domain, store.DomainStatus{Status: store.IdentityVerified,
		StatusSince: now, LastChecked: now}); err != nil {
		t.Fatal(err)
	}
}

func TestHelpVersionAndUsageErrors(t *testing.T) {
	if out, _, code := sesame(t, "--help"); code != 0 || !strings.Contains(out, "user create NAME") {
		t.Fatalf("--help: %d %q", code, out)
	}
	if out, _, code := sesame(t, "--version"); code != 0 || !strings.HasPrefix(out, "sesame ") {
		t.Fatalf("--version: %d %q", code, out)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"user", "create"}, "expected NAME"},
		{[]string{"user", "list", "extra"}, "expected no arguments"},
		{[]string{"user", "list", "--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"user", "list", "--config", "/nonexistent/sesame.toml"}, "no such file"},
	} {
		_, errOut, code := sesame(t, tt.args...)
		if code == 0 || !strings.Contains(errOut, tt.want) {
			t.Errorf("%v: exit %d, stderr %q; want %q", tt.args, code, errOut, tt.want)
		}
	}
}

func TestBadConfigFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.toml")
	os.WriteFile(path, []byte("hostname = \"bad host\"\n[relay]\nmx_port = 0\nsmarthots = \"x\"\n"), 0o644)
	_, errOut, code := sesame(t, "serve", "--config", path)
	for _, want := range []string{`hostname: "bad host" is not a host name`, "relay.mx_port: 0", "relay.smarthots: unknown key"} {
		if code != exitConfig || !strings.Contains(errOut, want) {
			t.Errorf("exit %d, stderr lacks %q:\n%s", code, want, errOut)
		}
	}
}

func TestUserCommands(t *testing.T) {
	cfgPath, _ := writeConfig(t, t.TempDir(), "")
	out, errOut, code := sesame(t, "user", "create", "shop", "--config", cfgPath, "--json")
	if code != 0 {
		t.Fatalf("create: %s", errOut)
	}
	var created credentialsOutput
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.Name != "shop" ||
		len(created.Username) != 20 || len(created.Password) < 40 {
		t.Fatalf("create output %q: %v", out, err)
	}
	if _, errOut, code := sesame(t, "user", "create", "--config", cfgPath, "shop"); code != 1 || !strings.Contains(errOut, "exist already") {
		t.Fatalf("duplicate create: %d %s", code, errOut)
	}
	if _, errOut, code := sesame(t, "user", "create", "--config", cfgPath, "bad name!"); code != 1 || !strings.Contains(errOut, "not a valid name") {
		t.Fatalf("bad name: %d %s", code, errOut)
	}
	out, _, _ = sesame(t, "user", "list", "--config", cfgPath)
	if !strings.Contains(out, created.Username) || !strings.Contains(out, "never") {
		t.Fatalf("list: %q", out)
	}
	out, _, _ = sesame(t, "user", "rotate", "shop", "--config", cfgPath, "--json")
	var rotated credentialsOutput
	json.Unmarshal([]byte(out), &rotated)
	if rotated.Username != created.Username || rotated.Password == created.Password || rotated.Password == "" {
		t.Fatalf("rotate: %q", out)
	}
	out, _, _ = sesame(t, "user", "list", "--config", cfgPath, "--json")
	var list []userOutput
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) != 1 || list[0].LastUsed != nil {
		t.Fatalf("list --json %q: %v", out, err)
	}
	if _, _, code := sesame(t, "user", "delete", "shop", "--config", cfgPath); code != 0 {
		t.Fatal("delete failed")
	}
	if _, errOut, code := sesame(t, "user", "delete", "shop", "--config", cfgPath); code != 1 || !strings.Contains(errOut, `no credentials named "shop"`) {
		t.Fatalf("second delete: %d %s", code, errOut)
	}
}

func TestDomainCommands(t *testing.T) {
	cfgPath, _ := writeConfig(t, t.TempDir(), "[relay]\n[dkim]\ned25519 = true\n")
	out, errOut, code := sesame(t, "domain", "add", "Example.COM", "--config", cfgPath, "--json")
	if code != 0 {
		t.Fatal(errOut)
	}
	var added domainOutput
	if err := json.Unmarshal([]byte(out), &added); err != nil || added.Domain != "example.com" || added.Status != "pending" {
		t.Fatalf("add: %q %v", out, err)
	}
	var dkimRecords []recordOutput
	for _, r := range added.Records {
		if r.Required {
			dkimRecords = append(dkimRecords, r)
		}
	}
	if len(dkimRecords) != 2 || len(added.Records) < 4 {
		t.Fatalf("records: %+v", added.Records)
	}
	for i, prefix := range []string{"v=DKIM1; k=rsa; p=", "v=DKIM1; k=ed25519; p="} {
		r := dkimRecords[i]
		if r.Type != "TXT" || !strings.HasSuffix(r.Name, "._domainkey.example.com") || !strings.HasPrefix(r.Value, prefix) {
			t.Errorf("record %d: %+v", i, r)
		}
	}
	out, _, _ = sesame(t, "domain", "show", "example.com", "--config", cfgPath, "--json")
	var shown domainOutput
	json.Unmarshal([]byte(out), &shown)
	if len(shown.Records) != len(added.Records) || shown.Records[0].Value != dkimRecords[0].Value || shown.Records[0].Check != "missing" {
		t.Fatalf("show: %q", out)
	}
	if _, errOut, code := sesame(t, "domain", "verify", "example.com", "--config", cfgPath); code != 1 || !strings.Contains(errOut, "not verified") {
		t.Fatalf("verify without records: %d %q", code, errOut)
	}
	if out, _, code := sesame(t, "domain", "check", "example.com", "--config", cfgPath); code != 1 || !strings.Contains(out, "MISSING") {
		t.Fatalf("check without records: %d %q", code, out)
	}
	if _, errOut, code := sesame(t, "domain", "add", "example.com", "--config", cfgPath); code != 1 || !strings.Contains(errOut, "exists already") {
		t.Fatalf("duplicate: %d %s", code, errOut)
	}
	if _, errOut, code := sesame(t, "domain", "add", "not a domain", "--config", cfgPath); code != 1 || !strings.Contains(errOut, "not a domain name") {
		t.Fatalf("bad domain: %d %s", code, errOut)
	}
	out, _, _ = sesame(t, "domain", "list", "--config", cfgPath)
	if !strings.Contains(out, "example.com") {
		t.Fatalf("list: %q", out)
	}
	if _, _, code := sesame(t, "domain", "delete", "example.com", "--config", cfgPath); code != 0 {
		t.Fatal("delete failed")
	}
	if _, errOut, code := sesame(t, "domain", "show", "example.com", "--config", cfgPath); code != 1 || !strings.Contains(errOut, "no domain example.com") {
		t.Fatalf("show after delete: %d %s", code, errOut)
	}
}

// startServe runs serve in-process until the returned stop is called.
func startServe(t *testing.T, cfg *config.Config) (stop func(), logs *testkit.Buffer) {
	t.Helper()
	return startServeHooks(t, cfg, nil)
}

// startServeWith runs serve with a reload channel, until the test ends.
func startServeWith(t *testing.T, cfg *config.Config, reload chan struct{}) *testkit.Buffer {
	t.Helper()
	_, logs := startServeHooks(t, cfg, reload)
	return logs
}

func startServeHooks(t *testing.T, cfg *config.Config, reload chan struct{}) (stop func(), logs *testkit.Buffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs = &testkit.Buffer{}
	started := make(chan struct{})
	done := make(chan error, 1)
	e := &env{cfg: cfg, stdout: io.Discard, stderr: logs}
	for attempt := 1; ; attempt++ {
		go func() { done <- serve(ctx, e, hooks{reload: reload, started: func() { close(started) }}) }()
		var err error
		select {
		case <-started:
		case err = <-done:
		}
		if err == nil {
			break
		}
		// freePort's ports are free when the config is written, but the
		// kernel may since have given one to a client connection as its
		// local port (a restart later in a test widens that window): serve
		// again on fresh ports. Tests read the addresses from cfg after
		// startServe returns.
		if !errors.Is(err, syscall.EADDRINUSE) || attempt == 3 {
			t.Fatalf("serve: %v\n%s", err, logs)
		}
		t.Logf("serve: %v; again on other ports", err)
		cfg.Submission.StartTLSListen = []string{freePort(t, "127.0.0.1")}
		cfg.Submission.TLSListen = []string{freePort(t, "127.0.0.1")}
		cfg.HTTP.Listen = freePort(t, "127.0.0.1")
		if cfg.API.Listen != "" {
			cfg.API.Listen = freePort(t, "127.0.0.1")
		}
		logs = &testkit.Buffer{}
		e.stderr = logs
	}
	resp, err := http.Get("http://" + cfg.HTTP.Listen + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v", err)
	}
	resp.Body.Close()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve returned %v", err)
		}
	}
	t.Cleanup(stop)
	return stop, logs
}

// The whole service in-process: credentials and domain from the command line,
// a message over STARTTLS, signed, forwarded to the smarthost; then mail
// queued while the smarthost is down survives a restart.
func TestServeEndToEnd(t *testing.T) {
	dir := t.TempDir()
	smarthost := freePort(t, "127.0.0.2")
	cfgPath, cfg := writeConfig(t, dir, fmt.Sprintf("[relay]\nsmarthost = %q\nretry_first = \"200ms\"\nretry_max = \"1s\"\n", smarthost))

	out, _, _ := sesame(t, "user", "create", "app", "--config", cfgPath, "--json")
	var creds credentialsOutput
	json.Unmarshal([]byte(out), &creds)
	out, _, _ = sesame(t, "domain", "add", "example.com", "--config", cfgPath, "--json")
	var dom domainOutput
	json.Unmarshal([]byte(out), &dom)
	markVerified(t, cfg, "example.com")

	// Smarthost down: the message is accepted and waits in the queue.
	stop, logs := startServe(t, cfg)
	submit(t, cfg, creds, "first")
	stop()
	out, _, _ = sesame(t, "queue", "list", "--config", cfgPath)
	if !strings.Contains(out, "a@example.net") {
		t.Fatalf("queue after first run:\n%s\nlogs:\n%s", out, logs)
	}

	// Smarthost up, service restarted: the queued message goes out, then a new one.
	sk := testkit.StartSink(t, testkit.SinkOptions{Addr: smarthost})
	startServe(t, cfg)
	submit(t, cfg, creds, "second")
	for i := 0; i < 2; i++ {
		if _, ok := sk.NextWithin(20 * time.Second); !ok {
			t.Fatalf("sink got %d of 2 messages; logs:\n%s", i, logs)
		}
	}
	subjects := ""
	for _, msg := range sk.Messages() {
		m := msg.Data
		subjects += string(m[bytes.Index(m, []byte("\r\nSubject: ")):][:18])
		vs, err := dkim.VerifyWithOptions(bytes.NewReader(m), &dkim.VerifyOptions{
			LookupTXT: func(name string) ([]string, error) {
				if name == dom.Records[0].Name && dom.Records[0].Required {
					return []string{dom.Records[0].Value}, nil
				}
				return nil, fmt.Errorf("no %s", name)
			},
		})
		if err != nil || len(vs) != 1 || vs[0].Err != nil {
			t.Fatalf("dkim: %+v %v\n%s", vs, err, m)
		}
	}
	if !strings.Contains(subjects, "first") || !strings.Contains(subjects, "second") {
		t.Fatalf("subjects %q", subjects)
	}

	// The metrics saw this run's traffic (the counters start at zero with
	// each start): one submission, one STARTTLS handshake, two deliveries.
	c, err := smtp.DialStartTLS(cfg.Submission.StartTLSListen[0], &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	c.Auth(sasl.NewPlainClient("", creds.Username, "wrong"))
	c.Close()
	resp, err := http.Get("http://" + cfg.HTTP.Listen + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`sesame_submissions_total{reason="",result="accepted"} 1`,
		`sesame_recipients_total{provider="other",source_ip="127.0.0.1",state="delivered"} 2`,
		`sesame_smtp_tls_handshakes_total{tls_version="1.3"} 2`,
		"sesame_auth_failures_total 1",
		"sesame_delivery_latency_seconds_count 2",
		`sesame_queue_recipients{state="queued"} 0`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q:\n%s", want, grepLines(string(body), "sesame_"))
		}
	}
}

// Events and statistics from a real run: sends, deliveries, a reject.
func TestEventsAndStats(t *testing.T) {
	dir := t.TempDir()
	smarthost := freePort(t, "127.0.0.2")
	sk := testkit.StartSink(t, testkit.SinkOptions{Addr: smarthost})
	cfgPath, cfg := writeConfig(t, dir, fmt.Sprintf("[relay]\nsmarthost = %q\n", smarthost))
	out, _, _ := sesame(t, "user", "create", "app", "--config", cfgPath, "--json")
	var creds credentialsOutput
	json.Unmarshal([]byte(out), &creds)
	sesame(t, "domain", "add", "example.com", "--config", cfgPath)
	markVerified(t, cfg, "example.com")
	startServe(t, cfg)
	submit(t, cfg, creds, "one")
	submit(t, cfg, creds, "two")
	for range 2 {
		if _, ok := sk.NextWithin(20 * time.Second); !ok {
			t.Fatal("not delivered")
		}
	}
	// A refused submission: the From domain is not verified.
	c, err := smtp.DialStartTLS(cfg.Submission.StartTLSListen[0], &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	c.Auth(sasl.NewPlainClient("", creds.Username, creds.Password))
	if err := c.Mail("x@unverified.example", nil); err == nil {
		t.Fatal("unverified sender accepted")
	}
	c.Close()

	var st statsJSON
	deadline := time.Now().Add(10 * time.Second)
	for st.Deliveries < 2 && time.Now().Before(deadline) {
		out, _, _ = sesame(t, "stats", "--config", cfgPath, "--json", "--user", "app")
		json.Unmarshal([]byte(out), &st)
		time.Sleep(50 * time.Millisecond)
	}
	if st.Sends != 2 || st.Deliveries != 2 || st.Rejects != 1 || st.Bounces != 0 || st.BounceRate != 0 {
		t.Fatalf("stats: %s", out)
	}
	out, _, _ = sesame(t, "events", "--config", cfgPath, "--json", "--type", "delivery", "--since", "1h")
	var evs []events.Payload
	if err := json.Unmarshal([]byte(out), &evs); err != nil || len(evs) != 2 || evs[0].Credential != "app" ||
		evs[0].Recipient != "a@example.net" || evs[0].RemoteMTA != "127.0.0.2" || !strings.HasPrefix(evs[0].Reply, "250") {
		t.Fatalf("events: %s %v", out, err)
	}
	out, _, _ = sesame(t, "events", "--config", cfgPath, "--type", "reject")
	if !strings.Contains(out, "554 5.7.1 Message rejected: Email address is not verified") {
		t.Fatalf("reject event: %s", out)
	}
	if _, errOut, code := sesame(t, "events", "--config", cfgPath, "--type", "nonsense"); code != 1 || !strings.Contains(errOut, "expected one of") {
		t.Fatalf("bad type: %d %s", code, errOut)
	}
	if _, errOut, code := sesame(t, "stats", "--config", cfgPath, "--since", "soon"); code != 1 || !strings.Contains(errOut, "--since") {
		t.Fatalf("bad since: %d %s", code, errOut)
	}
}

// grepLines returns the lines of s that start with prefix.
func grepLines(s, prefix string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func submit(t *testing.T, cfg *config.Config, creds credentialsOutput, subject string) {
	t.Helper()
	c, err := smtp.DialStartTLS(cfg.Submission.StartTLSListen[0], &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", creds.Username, creds.Password)); err != nil {
		t.Fatal(err)
	}
	msg := "From: shop@example.com\r\nTo: a@example.net\r\nSubject: " + subject + "\r\n\r\nHello\r\n"
	if err := c.SendMail("shop@example.com", []string{"a@example.net"}, strings.NewReader(msg)); err != nil {
		t.Fatal(err)
	}
}

func TestQueueCommands(t *testing.T) {
	dir := t.TempDir()
	dead := freePort(t, "127.0.0.2") // nothing listens: every attempt is deferred
	cfgPath, cfg := writeConfig(t, dir, fmt.Sprintf("[relay]\nsmarthost = %q\nretry_first = \"1h\"\nretry_max = \"2h\"\n", dead))
	out, _, _ := sesame(t, "user", "create", "app", "--config", cfgPath, "--json")
	var creds credentialsOutput
	json.Unmarshal([]byte(out), &creds)
	sesame(t, "domain", "add", "example.com", "--config", cfgPath)
	markVerified(t, cfg, "example.com")
	stop, logs := startServe(t, cfg)
	submit(t, cfg, creds, "queued")
	// Wait for the first (failed) attempt, then stop.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "state=deferred") {
		if time.Now().After(deadline) {
			t.Fatalf("no deferral; logs:\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()

	out, _, _ = sesame(t, "queue", "list", "--config", cfgPath, "--json")
	var list []struct {
		ID         string
		Recipients []struct{ State, LastReply string } `json:"recipients"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) != 1 || list[0].Recipients[0].State != "deferred" {
		t.Fatalf("queue list: %q %v", out, err)
	}
	id := list[0].ID
	out, _, code := sesame(t, "queue", "show", id, "--config", cfgPath)
	if code != 0 || !strings.Contains(out, "Subject: queued") || !strings.Contains(out, "deferred  a@example.net") {
		t.Fatalf("queue show: %d\n%s", code, out)
	}
	if out, _, code := sesame(t, "queue", "retry", id, "--config", cfgPath, "--json"); code != 0 || out != "{\"recipients\":1}\n" {
		t.Fatalf("queue retry: %d %q", code, out)
	}
	if _, errOut, code := sesame(t, "queue", "retry", "--config", cfgPath); code != 1 || !strings.Contains(errOut, "--all") {
		t.Fatalf("queue retry without id: %d %q", code, errOut)
	}
	if out, _, code := sesame(t, "queue", "retry", "--all", "--config", cfgPath); code != 0 || !strings.HasPrefix(out, "1 recipient") {
		t.Fatalf("queue retry --all: %d %q", code, out)
	}
	if _, errOut, code := sesame(t, "queue", "show", "NOSUCHID", "--config", cfgPath); code != 1 || !strings.Contains(errOut, "no message NOSUCHID") {
		t.Fatalf("show unknown: %d %q", code, errOut)
	}
	// The bounce is signed for the system domain (hostname's, sesame.test).
	sesame(t, "domain", "add", "sesame.test", "--config", cfgPath)
	if out, _, code := sesame(t, "queue", "delete", id, "--bounce", "--config", cfgPath); code != 0 || !strings.Contains(out, "bounce") {
		t.Fatalf("queue delete --bounce: %d %q", code, out)
	}
	out, _, _ = sesame(t, "queue", "list", "--config", cfgPath, "--json")
	var after []struct {
		ID, Sender string
		Recipients []struct{ Address string } `json:"recipients"`
	}
	json.Unmarshal([]byte(out), &after)
	if len(after) != 1 || after[0].ID == id || after[0].Sender != "" || after[0].Recipients[0].Address != "shop@example.com" {
		t.Fatalf("after delete --bounce, queue: %s", out)
	}
	if out, _, _ := sesame(t, "queue", "show", after[0].ID, "--config", cfgPath); !strings.Contains(out, "DKIM-Signature:") ||
		!strings.Contains(out, "d=sesame.test;") {
		t.Fatalf("the bounce is not signed for sesame.test:\n%s", out)
	}
	if _, errOut, code := sesame(t, "queue", "delete", id, "--config", cfgPath); code != 1 || !strings.Contains(errOut, "no message") {
		t.Fatalf("second delete: %d %q", code, errOut)
	}
}

func TestSuppressionCommands(t *testing.T) {
	cfgPath, _ := writeConfig(t, t.TempDir(), "")
	if out, _, code := sesame(t, "suppression", "add", "Bad@Example.net", "--note", "asked us to stop", "--config", cfgPath); code != 0 || !strings.Contains(out, "bad@example.net is suppressed") {
		t.Fatalf("add: %d %q", code, out)
	}
	out, _, _ := sesame(t, "suppression", "list", "--config", cfgPath, "--json")
	var list []suppressionJSON
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) != 1 || list[0].Reason != "manual" || list[0].Detail != "asked us to stop" {
		t.Fatalf("list: %q %v", out, err)
	}
	if out, _, code := sesame(t, "suppression", "show", "bad@example.net", "--config", cfgPath); code != 0 || !strings.Contains(out, "asked us to stop") {
		t.Fatalf("show: %d %q", code, out)
	}
	if _, _, code := sesame(t, "suppression", "remove", "bad@example.net", "--config", cfgPath); code != 0 {
		t.Fatal("remove failed")
	}
	if _, errOut, code := sesame(t, "suppression", "show", "bad@example.net", "--config", cfgPath); code != 1 || !strings.Contains(errOut, "not on the suppression list") {
		t.Fatalf("show after remove: %d %q", code, errOut)
	}
}
