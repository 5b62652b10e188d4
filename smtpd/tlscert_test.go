package smtpd

import (
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sesame-mail/sesame/testkit"
)

// A managed (ACME) certificate: the self-signed one is served until the
// manager has a certificate; Reload then serves it from the next handshake.
func TestManagedCertificate(t *testing.T) {
	var managed atomic.Pointer[tls.Certificate]
	c, err := ManagedCertificate(managed.Load, t.TempDir(), "sesame.test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	served := func() *x509.Certificate {
		t.Helper()
		cert, err := c.TLSConfig().GetCertificate(&tls.ClientHelloInfo{ServerName: "sesame.test"})
		if err != nil {
			t.Fatal(err)
		}
		return cert.Leaf
	}
	if got := served(); got == nil || len(got.Subject.Organization) == 0 || got.Subject.Organization[0] != "Sesame self-signed" {
		t.Fatalf("before the first ACME certificate: serving %v, want the self-signed one", got)
	}

	acme := testkit.SelfSigned(t, "mail.sesame.test").Certificates[0]
	acme.Leaf, err = x509.ParseCertificate(acme.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	managed.Store(&acme)
	if got := served(); got.Subject.CommonName == "mail.sesame.test" {
		t.Fatal("the new certificate was served before Reload")
	}
	if err := c.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := served(); got.Subject.CommonName != "mail.sesame.test" {
		t.Fatalf("after Reload: serving %q, want the managed certificate", got.Subject.CommonName)
	}
	if !c.NotAfter().Equal(acme.Leaf.NotAfter) || c.NotAfter().Before(time.Now()) {
		t.Errorf("NotAfter = %s, want %s", c.NotAfter(), acme.Leaf.NotAfter)
	}
}
