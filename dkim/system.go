package dkim

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/sesame-mail/sesame/store"
)

// SystemSigner signs the mail Sesame writes itself (address verification
// links, DSNs, delay warnings), which comes from the server's host name:
// with the keys of one domain, the system domain (for mail.example.com,
// example.com), so that receivers see a DKIM signature aligned (relaxed) with
// From. Such mail is never held back for want of a signature: when the
// domain has no keys, or signing fails, it goes unsigned, as it did before.
type SystemSigner struct {
	signer *DomainSigner
	domain string
	log    *slog.Logger
}

// NewSystemSigner returns a SystemSigner signing for domain with the keys
// signer reads; "" for domain leaves mail unsigned.
func NewSystemSigner(signer *DomainSigner, domain string, log *slog.Logger) *SystemSigner {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &SystemSigner{signer: signer, domain: domain, log: log}
}

// Domain returns the system domain.
func (s *SystemSigner) Domain() string { return s.domain }

// Status returns the system domain's verification status when it has keys
// that sign (so Sign signs), or "" when it has none.
func (s *SystemSigner) Status(ctx context.Context) (string, error) {
	if s.domain == "" {
		return "", nil
	}
	d, err := s.signer.keys.Domain(ctx, s.domain)
	if errors.Is(err, store.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if len(Signing(d.Keys)) == 0 {
		return "", nil
	}
	return d.Status, nil
}

// Sign returns msg with a DKIM signature for the system domain on top, or
// msg as it is when the domain has no keys or signing failed (logged).
func (s *SystemSigner) Sign(ctx context.Context, msg []byte) []byte {
	if s == nil || s.domain == "" {
		return msg
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	sig, err := s.signer.Sign(ctx, s.domain, msg)
	if errors.Is(err, store.ErrNotFound) {
		return msg // not set up: serve said at start how to set it up
	}
	if err != nil {
		s.log.Warn("signing Sesame's own message failed; it goes unsigned", "domain", s.domain, "err", err)
		return msg
	}
	return append(sig, msg...)
}
