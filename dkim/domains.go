package dkim

import (
	"context"
	"fmt"

	"github.com/sesame-mail/sesame/store"
)

// DomainKeys is where a DomainSigner finds a domain's keys.
type DomainKeys interface {
	// Domain returns the domain with its keys, or an error wrapping
	// store.ErrNotFound.
	Domain(ctx context.Context, name string) (store.Domain, error)
}

// DomainSigner signs each message with the stored keys of its domain. The
// keys are read from the store per message (one indexed read), so a domain
// added or deleted by the admin commands in another process takes effect at
// once; parsed keys are reused through a Cache.
type DomainSigner struct {
	keys  DomainKeys
	cache *Cache
}

// NewDomainSigner returns a DomainSigner reading keys from keys.
func NewDomainSigner(keys DomainKeys) *DomainSigner {
	return &DomainSigner{keys: keys, cache: NewCache()}
}

// Sign returns the DKIM-Signature header fields for msg signed for domain.
// An error wrapping store.ErrNotFound means the domain is not set up.
func (s *DomainSigner) Sign(ctx context.Context, domain string, msg []byte) ([]byte, error) {
	d, err := s.keys.Domain(ctx, domain)
	if err != nil {
		return nil, fmt.Errorf("dkim: keys of %s: %w", domain, err)
	}
	// Only the active keys sign: a rotation's new key waits until its
	// record is published, and the key it replaced signs no more.
	d.Keys = Signing(d.Keys)
	if len(d.Keys) == 0 {
		// Not set up, as far as the sender is concerned.
		return nil, fmt.Errorf("%w: %s (%w)", ErrNoKeys, domain, store.ErrNotFound)
	}
	signer, err := s.cache.Signer(d)
	if err != nil {
		return nil, err
	}
	return signer.Sign(msg)
}
