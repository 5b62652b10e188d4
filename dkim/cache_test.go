package dkim

import (
	"bytes"
	"sync"
	"testing"

	"github.com/sesame-mail/sesame/store"
)

func TestCache(t *testing.T) {
	ed := newTestKey(t, store.AlgEd25519, "sesame-ed25519-20261127")
	rsaKey := newTestKey(t, store.AlgRSA, "sesame-rsa-20261127")
	c := NewCache()

	d := store.Domain{Name: "example.com", Keys: []store.DKIMKey{ed}}
	s1, err := c.Signer(d)
	if err != nil {
		t.Fatal(err)
	}
	// The store hands out fresh copies each time; equal keys are a hit.
	copied := ed
	copied.PrivateKey = bytes.Clone(ed.PrivateKey)
	s2, err := c.Signer(store.Domain{Name: "example.com", Keys: []store.DKIMKey{copied}})
	if err != nil {
		t.Fatal(err)
	}
	if s1 != s2 {
		t.Error("same keys: got a new Signer")
	}

	// The cache must not alias the caller's buffer.
	copied.PrivateKey[len(copied.PrivateKey)/2] ^= 1
	if s, _ := c.Signer(d); s != s1 {
		t.Error("caller's buffer changed after caching: lost the entry")
	}

	other, err := c.Signer(store.Domain{Name: "example.org", Keys: []store.DKIMKey{ed}})
	if err != nil {
		t.Fatal(err)
	}
	if other == s1 || other.Domain() != "example.org" {
		t.Error("other domain: got example.com's Signer")
	}

	newKey := newTestKey(t, store.AlgEd25519, "sesame-ed25519-20261127")
	for name, keys := range map[string][]store.DKIMKey{
		"key added":    {ed, rsaKey},
		"key replaced": {newKey}, // same selector, new key material
		"key renamed":  {{Selector: "other", Algorithm: ed.Algorithm, PrivateKey: ed.PrivateKey}},
	} {
		s, err := c.Signer(store.Domain{Name: "example.com", Keys: keys})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if s == s1 {
			t.Errorf("%s: got the stale Signer", name)
		}
		if len(s.keys) != len(keys) {
			t.Errorf("%s: Signer has %d keys, want %d", name, len(s.keys), len(keys))
		}
	}

	if _, err := c.Signer(store.Domain{Name: "example.com"}); err == nil {
		t.Error("domain without keys: no error")
	}
}

func TestCacheConcurrent(t *testing.T) {
	a := newTestKey(t, store.AlgEd25519, "a")
	b := newTestKey(t, store.AlgEd25519, "b")
	c := NewCache()
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			k := a
			if i%2 == 1 {
				k = b
			}
			for range 50 {
				s, err := c.Signer(store.Domain{Name: "example.com", Keys: []store.DKIMKey{k}})
				if err != nil {
					t.Error(err)
					return
				}
				if s.keys[0].selector != k.Selector {
					t.Errorf("asked for key %s, got a Signer for %s", k.Selector, s.keys[0].selector)
					return
				}
			}
		})
	}
	wg.Wait()
}
