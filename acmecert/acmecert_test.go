package acmecert

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sesame-mail/sesame/testkit"
)

const testDomain = "mail.sesame.test"

// recorder is the Metrics and OnCertificate of a test manager.
type recorder struct {
	mu       sync.Mutex
	attempts []attempt
	issued   chan struct{}
}

type attempt struct {
	ok       bool
	failures int
}

func newRecorder() *recorder { return &recorder{issued: make(chan struct{}, 16)} }

func (r *recorder) ACMEAttempt(ok bool, failures int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attempts = append(r.attempts, attempt{ok, failures})
}

func (r *recorder) failed() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, a := range r.attempts {
		if !a.ok {
			n++
		}
	}
	return n
}

// ca is a pebble on loopback whose validations reach this test: the zone
// sends testDomain to 127.0.0.1, and the challenge ports are the ones the
// test serves.
type ca struct {
	pebble             *testkit.Pebble
	httpAddr, alpnAddr string // where the test must serve the challenges
	httpPort, alpnPort int
}

func startCA(t *testing.T, validity time.Duration) *ca {
	t.Helper()
	testkit.RequirePebble(t)
	zone := testkit.StartZone(t, testDomain+". 60 IN A 127.0.0.1")
	c := &ca{httpAddr: freeAddr(t), alpnAddr: freeAddr(t)}
	c.httpPort, c.alpnPort = port(t, c.httpAddr), port(t, c.alpnAddr)
	c.pebble = testkit.StartPebble(t, testkit.PebbleOptions{DNSServer: zone.Addr, HTTPPort: c.httpPort,
		TLSPort: c.alpnPort, Validity: validity, AuthzReuse: 100})
	return c
}

func (c *ca) roots(t *testing.T) *x509.CertPool {
	t.Helper()
	pem, err := os.ReadFile(c.pebble.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return pool
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func port(t *testing.T, addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// serveHTTP01 serves m's HTTP-01 answers on addr until the test ends.
func serveHTTP01(t *testing.T, m *Manager, addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: m.HTTPHandler(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// serveTLSALPN serves m's TLS-ALPN-01 answers on addr until the test ends.
func serveTLSALPN(t *testing.T, m *Manager, addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	go m.ServeTLSALPN(ln)
	t.Cleanup(func() { ln.Close() })
}

func run(t *testing.T, m *Manager) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// waitIssued waits for the next certificate the manager stores.
func waitIssued(t *testing.T, r *recorder, within time.Duration) {
	t.Helper()
	select {
	case <-r.issued:
	case <-time.After(within):
		t.Fatalf("no certificate within %s", within)
	}
}

// checkServedBy checks that cert is for testDomain and chains to the CA's
// root.
func checkIssued(t *testing.T, c *ca, cert *tls.Certificate) {
	t.Helper()
	if cert == nil {
		t.Fatal("no certificate")
	}
	inter := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		ic, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		inter.AddCert(ic)
	}
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{DNSName: testDomain, Roots: c.pebble.Roots(t), Intermediates: inter}); err != nil {
		t.Fatalf("the certificate does not verify for %s against pebble's root: %v", testDomain, err)
	}
}

// HTTP-01 through HTTPHandler: the first certificate is issued and stored;
// at two thirds of its life (pebble issues 15-second certificates here) a
// new one replaces it, and a manager started afresh on the same directory
// serves the stored one without asking the CA.
func TestObtainAndRenewHTTP01(t *testing.T) {
	c := startCA(t, 15*time.Second)
	dir := t.TempDir()
	rec := newRecorder()
	m, err := New(Config{Domains: []string{testDomain}, Email: "ops@sesame.test", Directory: c.pebble.Directory,
		Roots: c.roots(t), Dir: dir, HTTP01: true, Metrics: rec, Logger: testLogger(t),
		OnCertificate: func() { rec.issued <- struct{}{} }})
	if err != nil {
		t.Fatal(err)
	}
	if m.Certificate() != nil {
		t.Fatal("a certificate before any was issued")
	}
	serveHTTP01(t, m, c.httpAddr)
	run(t, m)
	waitIssued(t, rec, 90*time.Second)
	first := m.Certificate()
	checkIssued(t, c, first)
	stored, err := LoadCertificate(dir)
	if err != nil || stored == nil || stored.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) != 0 {
		t.Fatalf("LoadCertificate: %v %v, want the certificate just issued", stored, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, certFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the stored certificate file: %v %v, want mode 0600 (it holds the key)", fi, err)
	}

	waitIssued(t, rec, 90*time.Second)
	second := m.Certificate()
	checkIssued(t, c, second)
	if second.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) == 0 {
		t.Fatal("the renewal kept the same certificate")
	}
	if renew := RenewAt(first.Leaf); second.Leaf.NotBefore.Before(renew.Add(-2 * time.Second)) {
		// pebble's NotBefore is the issuance time (a second's precision).
		t.Errorf("renewed at %s, before two thirds of the first certificate's life (%s)", second.Leaf.NotBefore, renew)
	}
	if rec.failed() != 0 {
		t.Errorf("%d failed attempts", rec.failed())
	}

	again, err := New(Config{Domains: []string{testDomain}, Directory: c.pebble.Directory, Dir: dir, HTTP01: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := again.Certificate(); got == nil || got.Leaf.SerialNumber.Cmp(second.Leaf.SerialNumber) != 0 {
		t.Fatalf("a new manager on the same directory has %v, want the stored certificate", got)
	}
}

// TLS-ALPN-01 through ServeTLSALPN, the only challenge offered.
func TestObtainTLSALPN01(t *testing.T) {
	c := startCA(t, 0)
	rec := newRecorder()
	m, err := New(Config{Domains: []string{testDomain}, Directory: c.pebble.Directory, Roots: c.roots(t),
		Dir: t.TempDir(), TLSALPN01: true, Metrics: rec, Logger: testLogger(t),
		OnCertificate: func() { rec.issued <- struct{}{} }})
	if err != nil {
		t.Fatal(err)
	}
	serveTLSALPN(t, m, c.alpnAddr)
	run(t, m)
	waitIssued(t, rec, 90*time.Second)
	checkIssued(t, c, m.Certificate())

	// Nothing else is served there: a client without acme-tls/1 fails.
	conn, err := tls.Dial("tcp", c.alpnAddr, &tls.Config{ServerName: testDomain, InsecureSkipVerify: true})
	if err == nil {
		conn.Close()
		t.Fatal("the TLS-ALPN-01 listener completed a handshake with an ordinary client")
	}
}

// A renewal that fails (here the CA cannot be reached at all) keeps the
// old certificate, reports each failure with the count in a row, and
// retries.
func TestFailedRenewalKeepsCertificate(t *testing.T) {
	dir := t.TempDir()
	// A certificate past two thirds of its life: due for renewal.
	old := selfSignedFile(t, dir, time.Now().Add(-2*time.Hour), time.Now().Add(30*time.Minute))
	directory := "https://" + freeAddr(t) + "/dir"
	if err := os.WriteFile(filepath.Join(dir, certFromFile), []byte(directory+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	m, err := New(Config{Domains: []string{testDomain}, Directory: directory,
		Dir: dir, HTTP01: true, RetryFirst: 100 * time.Millisecond, RetryMax: 200 * time.Millisecond,
		Metrics: rec, Logger: testLogger(t), OnCertificate: func() { rec.issued <- struct{}{} }})
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Certificate(); got == nil || got.Leaf.SerialNumber.Cmp(old.SerialNumber) != 0 {
		t.Fatal("New did not load the stored certificate")
	}
	run(t, m)
	deadline := time.Now().Add(60 * time.Second)
	for rec.failed() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d failed attempts within 60 s, want 3", rec.failed())
		}
		time.Sleep(20 * time.Millisecond)
	}
	rec.mu.Lock()
	got := append([]attempt(nil), rec.attempts[:3]...)
	rec.mu.Unlock()
	if want := []attempt{{false, 1}, {false, 2}, {false, 3}}; !slices.Equal(got, want) {
		t.Errorf("attempts %+v, want %+v (failures in a row)", got, want)
	}
	if got := m.Certificate(); got == nil || got.Leaf.SerialNumber.Cmp(old.SerialNumber) != 0 {
		t.Fatal("the old certificate is no longer the one served after a failed renewal")
	}
	if stored, _ := LoadCertificate(dir); stored == nil || stored.Leaf.SerialNumber.Cmp(old.SerialNumber) != 0 {
		t.Fatal("the stored certificate changed after a failed renewal")
	}
	select {
	case <-rec.issued:
		t.Fatal("OnCertificate called after a failure")
	default:
	}
}

// When renewals are due: at two thirds of the life; at once for a
// certificate that lacks a configured name (the operator added one) or
// comes from another directory (staging, then production).
func TestRenewalDue(t *testing.T) {
	clock := testkit.NewClock(t)
	dir := t.TempDir()
	nb := clock.Now().Add(-time.Hour)
	leaf := selfSignedFile(t, dir, nb, nb.Add(90*24*time.Hour))
	if got, want := RenewAt(leaf), nb.Add(60*24*time.Hour); !got.Equal(want) {
		t.Errorf("RenewAt = %s, want %s (day 60 of 90)", got, want)
	}
	if err := os.WriteFile(filepath.Join(dir, certFromFile), []byte(LetsEncrypt+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := New(Config{Domains: []string{testDomain}, Dir: dir, HTTP01: true, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if due, _ := m.renewalDue(m.Certificate()); !due.Equal(RenewAt(leaf)) {
		t.Errorf("due %s, want %s", due, RenewAt(leaf))
	}
	m.cfg.Domains = []string{testDomain, "smtp.sesame.test"}
	if due, why := m.renewalDue(m.Certificate()); !due.IsZero() || !strings.Contains(why, "smtp.sesame.test") {
		t.Errorf("with a new name: due %s (%s), want at once", due, why)
	}
	if due, _ := m.renewalDue(nil); !due.IsZero() {
		t.Errorf("without a certificate: due %s, want at once", due)
	}
	m.cfg.Domains = []string{testDomain}
	m.cfg.Directory = "https://acme-staging-v02.api.letsencrypt.org/directory"
	if due, why := m.renewalDue(m.Certificate()); !due.IsZero() || !strings.Contains(why, "another ACME directory") {
		t.Errorf("with another directory: due %s (%s), want at once", due, why)
	}
}

func TestRetryDelay(t *testing.T) {
	m := &Manager{cfg: Config{RetryFirst: time.Minute, RetryMax: time.Hour}}
	var got []time.Duration
	for m.failures = 1; m.failures <= 9; m.failures++ {
		got = append(got, m.retryDelay())
	}
	want := []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 16 * time.Minute,
		32 * time.Minute, time.Hour, time.Hour, time.Hour}
	if !slices.Equal(got, want) {
		t.Errorf("delays %v, want %v", got, want)
	}
}

// selfSignedFile stores a certificate for testDomain valid from nb to na
// as the manager's certificate file, and returns it.
func selfSignedFile(t *testing.T, dir string, nb, na time.Time) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(nb.UnixNano()), Subject: pkix.Name{CommonName: testDomain},
		DNSNames: []string{testDomain}, NotBefore: nb, NotAfter: na}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	b := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	if err := os.WriteFile(filepath.Join(dir, certFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return leaf
}
