package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/sesame-mail/sesame/config"
	"github.com/sesame-mail/sesame/testkit"
)

// writeCert writes a self-signed certificate for cn to dir.
func writeCert(t *testing.T, dir, cn string) (certFile, keyFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		DNSNames: []string{cn}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}

// presented is the common name of the certificate the implicit-TLS
// listener shows.
func presented(t *testing.T, addr string) string {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName
}

// SIGHUP (here the reload hook runServe connects it to) reads the
// certificate again: the next handshake presents the new one. The log level
// changes too; other changes are named as needing a restart.
func TestReloadCertificateAndConfig(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := writeCert(t, dir, "first.test")
	cfgPath, _ := writeConfig(t, dir, "")
	text, _ := os.ReadFile(cfgPath)
	text = []byte(strings.Replace(string(text), "[submission]\n",
		fmt.Sprintf("[submission]\ntls_cert_file = %q\ntls_key_file = %q\n", certFile, keyFile), 1))
	os.WriteFile(cfgPath, text, 0o644)
	cfg, err := config.Load(cfgPath, true)
	if err != nil {
		t.Fatal(err)
	}
	reload := make(chan struct{})
	logs := startServeWith(t, cfg, reload)
	addr := cfg.Submission.TLSListen[0]
	if cn := presented(t, addr); cn != "first.test" {
		t.Fatalf("presented %q", cn)
	}
	writeCert(t, dir, "renewed.test")
	changed := strings.Replace(string(text), "hostname = \"sesame.test\"\n", "hostname = \"sesame.test\"\nlog_level = \"debug\"\n", 1)
	os.WriteFile(cfgPath, []byte(changed+"\n[dkim]\ned25519 = true\n"), 0o644)
	reload <- struct{}{}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "need a restart") {
		if time.Now().After(deadline) {
			t.Fatalf("no reload in the log:\n%s", logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if cn := presented(t, addr); cn != "renewed.test" {
		t.Fatalf("after reload presented %q", cn)
	}
	if !strings.Contains(logs.String(), "keys=dkim.ed25519") || !strings.Contains(logs.String(), "key=log_level value=debug") {
		t.Fatalf("reload log:\n%s", logs)
	}
}

// With Type=notify, systemd hears READY=1 once everything listens, watchdog
// pings while it runs, and STOPPING=1 at the end; /readyz follows.
func TestSystemdNotifyAndReadiness(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "100000") // pings every 50 ms
	t.Setenv("WATCHDOG_PID", "")
	_, cfg := writeConfig(t, t.TempDir(), "")
	stop, _ := startServe(t, cfg)

	seen := map[string]bool{}
	buf := make([]byte, 256)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for !seen["READY=1"] || !seen["WATCHDOG=1"] {
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("notifications so far %v: %v", seen, err)
		}
		seen[strings.SplitN(string(buf[:n]), "\n", 2)[0]] = true
	}
	resp, err := http.Get("http://" + cfg.HTTP.Listen + "/readyz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("readyz: %v %v", resp, err)
	}
	resp.Body.Close()
	if out, _, code := sesame(t, "healthcheck", "--config", cfg.Path); code != 0 || out != "ok\n" {
		t.Fatalf("healthcheck: %d %q", code, out)
	}
	stop()
	for !seen["STOPPING=1"] {
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("no STOPPING=1; saw %v: %v", seen, err)
		}
		seen[string(buf[:n])] = true
	}
	if _, errOut, code := sesame(t, "healthcheck", "--config", cfg.Path); code != 1 || !strings.Contains(errOut, "is sesame serve running?") {
		t.Fatalf("healthcheck after stop: %d %q", code, errOut)
	}
}

// A stop during active submissions and deliveries: idle connections are
// closed at once, transactions in progress finish, and every message that
// got a 250 is either delivered or still queued.
func TestGracefulStopUnderLoad(t *testing.T) {
	dir := t.TempDir()
	smarthost := freePort(t, "127.0.0.2")
	sk := testkit.StartSink(t, testkit.SinkOptions{Addr: smarthost})
	cfgPath, cfg := writeConfig(t, dir, fmt.Sprintf("[relay]\nsmarthost = %q\n", smarthost))
	out, _, _ := sesame(t, "user", "create", "app", "--config", cfgPath, "--json")
	var creds credentialsOutput
	json.Unmarshal([]byte(out), &creds)
	sesame(t, "domain", "add", "example.com", "--config", cfgPath)
	markVerified(t, cfg, "example.com")
	stop, _ := startServe(t, cfg)

	const clients = 6
	var mu sync.Mutex
	var acked []string
	var cut []error
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c, err := smtp.DialStartTLS(cfg.Submission.StartTLSListen[0], &tls.Config{InsecureSkipVerify: true})
			if err != nil {
				return
			}
			defer c.Close()
			if c.Auth(sasl.NewPlainClient("", creds.Username, creds.Password)) != nil {
				return
			}
			for j := 0; ; j++ {
				if c.Mail("shop@example.com", nil) != nil || c.Rcpt("a@example.net", nil) != nil {
					return // refused or closed between transactions: fine
				}
				w, err := c.Data()
				if err != nil {
					return
				}
				msg := fmt.Sprintf("From: shop@example.com\r\nTo: a@example.net\r\nSubject: load %d-%d\r\n\r\n%s\r\n", i, j, strings.Repeat(strings.Repeat("x", 70)+"\r\n", 30))
				if _, err := w.Write([]byte(msg)); err != nil {
					mu.Lock()
					cut = append(cut, err)
					mu.Unlock()
					return
				}
				resp, err := w.CloseWithResponse()
				if err != nil {
					mu.Lock()
					cut = append(cut, err)
					mu.Unlock()
					return
				}
				_, id, _ := strings.Cut(resp.StatusText, "queued as ")
				mu.Lock()
				acked = append(acked, id)
				mu.Unlock()
			}
		}(i)
	}
	// Stop once the load is running: some messages acknowledged (waited
	// for, since a loaded machine may take seconds for the first), with
	// transactions still in flight.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= clients || time.Now().After(deadline) {
			break
		}
	}
	stopped := time.Now()
	stop()
	if d := time.Since(stopped); d > 10*time.Second {
		t.Errorf("stop took %s: idle connections were not closed", d)
	}
	wg.Wait()
	if len(cut) > 0 {
		t.Errorf("%d transactions cut off inside the grace period: %v", len(cut), cut)
	}
	if len(acked) == 0 {
		t.Fatal("no message was acknowledged before the stop")
	}

	// Every acknowledged message was delivered or is still queued.
	delivered := map[string]bool{}
	for _, m := range sk.Messages() {
		if _, rest, ok := strings.Cut(string(m.Data), "ESMTPSA id "); ok {
			delivered[rest[:16]] = true
		}
	}
	out, _, _ = sesame(t, "queue", "list", "--config", cfgPath, "--json")
	var queued []struct{ ID string }
	json.Unmarshal([]byte(out), &queued)
	for _, q := range queued {
		delivered[q.ID] = true
	}
	for _, id := range acked {
		if !delivered[id] {
			t.Errorf("message %s got a 250 but is neither delivered nor queued", id)
		}
	}
	t.Logf("%d acknowledged, %d delivered before the stop, %d still queued", len(acked), len(sk.Messages()), len(queued))
}

// A configured webhook receives the run's events, signed; the backlog is a
// metric.
func TestWebhookEndToEnd(t *testing.T) {
	secret := "0123456789abcdef0123"
	got := make(chan map[string]any, 100)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write([]byte(r.Header.Get("X-Sesame-Timestamp") + "."))
		mac.Write(body)
		if r.Header.Get("X-Sesame-Signature") != "v1="+hex.EncodeToString(mac.Sum(nil)) {
			t.Errorf("bad signature on %s", body)
		}
		var ev map[string]any
		json.Unmarshal(body, &ev)
		got <- ev
	}))
	defer hook.Close()
	dir := t.TempDir()
	smarthost := freePort(t, "127.0.0.2")
	testkit.StartSink(t, testkit.SinkOptions{Addr: smarthost})
	cfgPath, cfg := writeConfig(t, dir, fmt.Sprintf("[relay]\nsmarthost = %q\n[[webhook]]\nurl = %q\nsecret = %q\nevents = [\"send\", \"delivery\"]\n",
		smarthost, hook.URL, secret))
	out, _, _ := sesame(t, "user", "create", "app", "--config", cfgPath, "--json")
	var creds credentialsOutput
	json.Unmarshal([]byte(out), &creds)
	sesame(t, "domain", "add", "example.com", "--config", cfgPath)
	markVerified(t, cfg, "example.com")
	startServe(t, cfg)
	submit(t, cfg, creds, "hooked")
	var types []string
	for len(types) < 2 {
		select {
		case ev := <-got:
			types = append(types, ev["type"].(string))
			if ev["credential"] != "app" || ev["recipient"] != "a@example.net" {
				t.Errorf("event %v", ev)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("webhook got %v", types)
		}
	}
	if strings.Join(types, ",") != "send,delivery" {
		t.Fatalf("events in order %v, want send,delivery", types)
	}
	resp, err := http.Get("http://" + cfg.HTTP.Listen + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "sesame_webhook_backlog_events{endpoint=") {
		t.Errorf("no webhook backlog metric:\n%s", grepLines(string(body), "sesame_webhook"))
	}
}
