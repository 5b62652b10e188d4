package dkim

import (
	"bytes"
	"sync"

	"github.com/sesame-mail/sesame/store"
)

// Cache keeps parsed Signers by domain so a busy server does not parse PEM
// keys for every message. It is safe for concurrent use.
type Cache struct {
	mu      sync.Mutex
	signers map[string]cacheEntry
}

type cacheEntry struct {
	keys   []store.DKIMKey // what signer was built from, compared on every lookup
	signer *Signer
}

// NewCache returns an empty Cache.
func NewCache() *Cache {
	return &Cache{signers: make(map[string]cacheEntry)}
}

// Signer returns a Signer for d. The cached one is reused only while d's
// keys (selector, algorithm and PEM bytes, in order) are the ones it was
// built from, so a rotated, added or removed key, or a domain deleted and
// created again with new keys, takes effect on the next message.
func (c *Cache) Signer(d store.Domain) (*Signer, error) {
	c.mu.Lock()
	e, ok := c.signers[d.Name]
	c.mu.Unlock()
	if ok && sameKeys(e.keys, d.Keys) {
		return e.signer, nil
	}

	// Parse outside the lock: RSA key parsing takes long enough that other
	// domains' lookups should not wait for it. Two callers that miss at once
	// both parse; either result is correct.
	s, err := NewSigner(d.Name, d.Keys)
	if err != nil {
		return nil, err
	}
	keys := make([]store.DKIMKey, len(d.Keys))
	for i, k := range d.Keys {
		keys[i] = store.DKIMKey{
			Selector:   k.Selector,
			Algorithm:  k.Algorithm,
			PrivateKey: bytes.Clone(k.PrivateKey), // the caller may reuse its buffer
		}
	}
	c.mu.Lock()
	c.signers[d.Name] = cacheEntry{keys: keys, signer: s}
	c.mu.Unlock()
	return s, nil
}

func sameKeys(a, b []store.DKIMKey) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Selector != b[i].Selector || a[i].Algorithm != b[i].Algorithm ||
			!bytes.Equal(a[i].PrivateKey, b[i].PrivateKey) {
			return false
		}
	}
	return true
}
