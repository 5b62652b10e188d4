package testkit

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// PebbleOptions configures a Pebble test CA.
type PebbleOptions struct {
	// DNSServer ("127.0.0.1:port") is where Pebble resolves the names it
	// validates; a Zone answering A 127.0.0.1 for them sends its
	// validation requests to loopback.
	DNSServer string
	// HTTPPort and TLSPort are where Pebble connects for HTTP-01 and
	// TLS-ALPN-01 validation (80 and 443 at a real CA).
	HTTPPort, TLSPort int
	// Validity is the lifetime of the certificates it issues (0: Pebble's
	// default, five years), for tests that watch a renewal.
	Validity time.Duration
	// AuthzReuse is the percentage of new orders that reuse a valid
	// authorization instead of asking for a new challenge (Pebble's
	// default is 50).
	AuthzReuse int
}

// Pebble is a running Pebble, Let's Encrypt's ACME test server, listening
// on 127.0.0.1 only.
type Pebble struct {
	// Directory is the ACME directory URL.
	Directory string
	// CAFile is a PEM file with the root of the certificate of Pebble's
	// own HTTPS listeners, for the ACME client to trust.
	CAFile string

	mgmt   string // management interface, https://127.0.0.1:port
	client *http.Client
	log    *lockedBuffer
}

// RequirePebble returns the path of Debian's pebble binary. Without it the
// test is skipped, except in CI (CI=true) or with the end-to-end tests on
// (SESAME_E2E set), where it fails: the test script installs it
// (scripts/install-test-deps.sh).
func RequirePebble(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("pebble")
	if err != nil {
		for _, p := range []string{"/usr/bin/pebble", "/usr/sbin/pebble"} {
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
		msg := "the pebble ACME test CA is not installed (apt-get install pebble, or run scripts/install-test-deps.sh as root)"
		if os.Getenv("CI") == "true" || os.Getenv("SESAME_E2E") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg + "; skipped")
	}
	return path
}

// StartPebble starts Pebble with its validation sleeps off and its nonce
// rejections off (both slow a test down without testing more), and stops
// it when the test ends. It skips the test when Pebble is not installed
// (outside CI: see RequirePebble).
func StartPebble(t testing.TB, o PebbleOptions) *Pebble {
	t.Helper()
	bin := RequirePebble(t)
	dir := t.TempDir()
	certPEM, keyPEM := selfSignedPEM(t, "localhost", "127.0.0.1")
	p := &Pebble{CAFile: filepath.Join(dir, "pebble-https.pem"), log: &lockedBuffer{}}
	keyFile := filepath.Join(dir, "pebble-https.key")
	if err := os.WriteFile(p.CAFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	p.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}

	listen, mgmt := freeLoopbackAddr(t), freeLoopbackAddr(t)
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":           listen,
		"managementListenAddress": mgmt,
		"certificate":             p.CAFile,
		"privateKey":              keyFile,
		"httpPort":                o.HTTPPort,
		"tlsPort":                 o.TLSPort,
		"ocspResponderURL":        "",
		// Pebble reads whole seconds.
		"certificateValidityPeriod": uint64(o.Validity / time.Second),
	}}
	cfgJSON, _ := json.Marshal(cfg)
	cfgFile := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(cfgFile, cfgJSON, 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"-config", cfgFile, "-strict=false"}
	if o.DNSServer != "" {
		args = append(args, "-dnsserver", o.DNSServer)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0",
		"PEBBLE_AUTHZREUSE="+strconv.Itoa(o.AuthzReuse))
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting pebble: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("pebble output:\n%s", p.log.String())
		}
	})
	p.Directory = "https://" + listen + "/dir"
	p.mgmt = "https://" + mgmt
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := p.client.Get(p.Directory)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-done:
			t.Fatalf("pebble exited at start:\n%s", p.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("pebble did not answer at %s within 30 s (%v):\n%s", p.Directory, err, p.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return p
}

// Roots returns the roots of the certificates Pebble issues (it makes a
// new root at each start), for a client that checks them.
func (p *Pebble) Roots(t testing.TB) *x509.CertPool {
	t.Helper()
	resp, err := p.client.Get(p.mgmt + "/roots/0")
	if err != nil {
		t.Fatalf("pebble management interface: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("pebble /roots/0: %s %v", resp.Status, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(body) {
		t.Fatalf("pebble /roots/0 returned no PEM certificate: %q", body)
	}
	return pool
}

// Log returns what Pebble has written so far.
func (p *Pebble) Log() string { return p.log.String() }

// freeLoopbackAddr returns 127.0.0.1:port with a port that was free a
// moment ago.
func freeLoopbackAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// selfSignedPEM makes a self-signed certificate for names, valid for a
// day, and returns it and its key as PEM.
func selfSignedPEM(t testing.TB, names ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	cfg := SelfSigned(t, names...)
	cert := cfg.Certificates[0]
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})
	return b.Bytes(), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}
