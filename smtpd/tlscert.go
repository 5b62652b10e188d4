package smtpd

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

// Certificate is the listeners' TLS certificate: the operator's, one
// managed by ACME, or, when there is neither, a self-signed one for the
// host name kept in the data directory and renewed before it expires.
// Reload reads it again (on SIGHUP, after a renewal); handshakes pick up
// the new one at once.
type Certificate struct {
	certFile, keyFile, dataDir, hostname string
	managed                              func() *tls.Certificate // nil: the files
	log                                  *slog.Logger
	current                              atomic.Pointer[tls.Certificate]
}

// LoadCertificate loads the certificate the first time.
func LoadCertificate(certFile, keyFile, dataDir, hostname string, log *slog.Logger) (*Certificate, error) {
	c := &Certificate{certFile: certFile, keyFile: keyFile, dataDir: dataDir, hostname: hostname, log: log}
	if err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// ManagedCertificate serves what managed returns (the ACME manager's
// certificate), and the self-signed one while it returns nil (before the
// first is issued). Reload asks managed again.
func ManagedCertificate(managed func() *tls.Certificate, dataDir, hostname string, log *slog.Logger) (*Certificate, error) {
	c := &Certificate{managed: managed, dataDir: dataDir, hostname: hostname, log: log}
	if err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// NotAfter is when the certificate in use expires.
func (c *Certificate) NotAfter() time.Time {
	if cert := c.current.Load(); cert != nil && cert.Leaf != nil {
		return cert.Leaf.NotAfter
	}
	return time.Time{}
}

// Reload reads the certificate again. On error the one in use stays.
func (c *Certificate) Reload() error {
	var cert tls.Certificate
	var err error
	if c.managed != nil {
		if m := c.managed(); m != nil {
			cert = *m
		}
	}
	switch {
	case cert.Certificate != nil:
	case c.managed != nil:
		cert, err = selfSigned(c.dataDir, c.hostname, time.Now())
		if err != nil {
			return err
		}
		c.log.Warn("no certificate from the ACME CA yet; serving a self-signed one until it comes", "hostname", c.hostname)
	case c.certFile != "":
		cert, err = tls.LoadX509KeyPair(c.certFile, c.keyFile)
		if err != nil {
			return fmt.Errorf("tls: load %s and %s: %w (check [submission] tls_cert_file and tls_key_file)", c.certFile, c.keyFile, err)
		}
	default:
		cert, err = selfSigned(c.dataDir, c.hostname, time.Now())
		if err != nil {
			return err
		}
		c.log.Warn("using a self-signed TLS certificate; clients must skip certificate verification. "+
			"Set [submission] tls_cert_file and tls_key_file, or [tls] acme_domains, for a real one", "hostname", c.hostname,
			"cert", filepath.Join(c.dataDir, selfSignedCert))
	}
	if cert.Leaf != nil {
		c.log.Info("TLS certificate loaded", "subject", cert.Leaf.Subject.CommonName, "not_after", cert.Leaf.NotAfter)
	}
	c.current.Store(&cert)
	return nil
}

// TLSConfig returns the listeners' TLS settings: TLS 1.2 or later, with the
// current certificate.
func (c *Certificate) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return c.current.Load(), nil
		},
	}
}

const (
	selfSignedCert = "selfsigned-cert.pem"
	selfSignedKey  = "selfsigned-key.pem"
)

// selfSigned loads the self-signed certificate in dir, making a new one when
// there is none, it names another host, or it expires within 30 days.
func selfSigned(dir, hostname string, now time.Time) (tls.Certificate, error) {
	certPath, keyPath := filepath.Join(dir, selfSignedCert), filepath.Join(dir, selfSignedKey)
	if cert, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil {
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err == nil && leaf.VerifyHostname(hostname) == nil && now.Add(30*24*time.Hour).Before(leaf.NotAfter) {
			return cert, nil
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("tls: generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("tls: serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: hostname, Organization: []string{"Sesame self-signed"}},
		DNSNames:              []string{hostname},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("tls: create certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("tls: encode key: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := writeFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return tls.Certificate{}, err
	}
	if err := writeFileAtomic(certPath, certPEM, 0o644); err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}

// writeFileAtomic writes data to path through a temporary file, fsync and
// rename, so a crash leaves either the old file or the new one.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return fmt.Errorf("tls: write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("tls: write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("tls: write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("tls: write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("tls: write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("tls: write %s: %w", path, err)
	}
	return nil
}
