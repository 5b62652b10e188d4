package acmecert

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/go-acme/lego/v5/acme"
	"github.com/go-acme/lego/v5/lego"
	"github.com/go-acme/lego/v5/registration"
)

// The files in Config.Dir.
const (
	accountKeyFile = "account-key.pem"  // the account's private key (ECDSA P-256)
	accountFile    = "account.json"     // its registration: directory, contact, URL
	certFile       = "certificate.pem"  // the private key, then the certificate chain
	certFromFile   = "certificate.from" // the directory URL certFile came from
)

func (m *Manager) certPath() string { return filepath.Join(m.cfg.Dir, certFile) }

// account is the ACME account (lego's registration.User).
type account struct {
	email string
	key   crypto.Signer
	reg   *acme.ExtendedAccount // nil until registered with this directory
}

func (a *account) GetEmail() string                       { return a.email }
func (a *account) GetRegistration() *acme.ExtendedAccount { return a.reg }
func (a *account) GetPrivateKey() crypto.Signer           { return a.key }

// savedAccount is account.json.
type savedAccount struct {
	Directory string `json:"directory"`
	Email     string `json:"email"`
	URL       string `json:"url"`
}

// account loads the account key (making one the first time) and the
// registration, which is used only with the directory it was made at.
func (m *Manager) account() (*account, error) {
	key, err := m.accountKey()
	if err != nil {
		return nil, err
	}
	a := &account{email: m.cfg.Email, key: key}
	b, err := os.ReadFile(filepath.Join(m.cfg.Dir, accountFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("acme: read the account: %w", err)
	default:
		var s savedAccount
		if err := json.Unmarshal(b, &s); err != nil {
			m.log.Warn("the stored ACME account cannot be read; registering again", "err", err)
		} else if s.Directory == m.cfg.Directory && s.Email == m.cfg.Email && s.URL != "" {
			a.reg = &acme.ExtendedAccount{Location: s.URL}
		}
	}
	return a, nil
}

// register creates the account at the CA (or finds the one of its key),
// agreeing to the CA's terms of service, and saves its URL.
func (m *Manager) register(ctx context.Context, client *lego.Client, a *account) error {
	reg, err := client.Registration.Register(ctx, registration.RegisterOptions{TermsOfServiceAgreed: true})
	if err != nil {
		return fmt.Errorf("acme: register an account at %s: %w", m.cfg.Directory, err)
	}
	a.reg = reg
	b, _ := json.MarshalIndent(savedAccount{Directory: m.cfg.Directory, Email: m.cfg.Email, URL: reg.Location}, "", "  ")
	if err := writeFileAtomic(filepath.Join(m.cfg.Dir, accountFile), append(b, '\n'), 0o600); err != nil {
		return err
	}
	m.log.Info("ACME account registered", "directory", m.cfg.Directory, "account", reg.Location)
	return nil
}

func (m *Manager) accountKey() (crypto.Signer, error) {
	path := filepath.Join(m.cfg.Dir, accountKeyFile)
	b, err := os.ReadFile(path)
	if err == nil {
		block, _ := pem.Decode(b)
		if block == nil {
			return nil, fmt.Errorf("acme: %s holds no PEM key; remove it to make a new account", path)
		}
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("acme: %s: %w; remove it to make a new account", path, err)
		}
		signer, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("acme: %s: not a signing key; remove it to make a new account", path)
		}
		return signer, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("acme: read the account key: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("acme: generate the account key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("acme: encode the account key: %w", err)
	}
	if err := writeFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, err
	}
	return key, nil
}

// loadCertificate reads the stored certificate; nil when there is none.
func loadCertificate(path string) (*tls.Certificate, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("acme: read %s: %w", path, err)
	}
	cert, err := parseCertificate(b)
	if err != nil {
		return nil, fmt.Errorf("acme: %s: %w", path, err)
	}
	return cert, nil
}

// parseCertificate reads a key and a chain from one PEM text.
func parseCertificate(b []byte) (*tls.Certificate, error) {
	cert, err := tls.X509KeyPair(b, b)
	if err != nil {
		return nil, err
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, err
		}
	}
	return &cert, nil
}

// LoadCertificate reads the certificate a Manager stored in dir (nil when
// there is none yet), for the listeners to serve; it does not contact the
// CA. Expired certificates are returned too: the Manager replaces them.
func LoadCertificate(dir string) (*tls.Certificate, error) {
	return loadCertificate(filepath.Join(dir, certFile))
}

// writeFileAtomic writes data to path through a temporary file, fsync and
// rename, so a crash leaves either the old file or the new one.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return fmt.Errorf("acme: write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	err = tmp.Chmod(mode)
	if err == nil {
		_, err = tmp.Write(data)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("acme: write %s: %w", path, err)
	}
	return nil
}
