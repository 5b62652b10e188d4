package dkim

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/sesame-mail/sesame/store"
)

// oneDomain serves d as the store would.
type oneDomain struct{ d store.Domain }

func (o oneDomain) Domain(context.Context, string) (store.Domain, error) { return o.d, nil }

// Only active keys sign: a rotation's pending key and the retiring key it
// replaced do not.
func TestDomainSignerSignsWithActiveKeysOnly(t *testing.T) {
	active := newTestKey(t, store.AlgRSA, "active")
	pending := newTestKey(t, store.AlgRSA, "pending")
	pending.State = store.KeyPending
	retiring := newTestKey(t, store.AlgEd25519, "retiring")
	retiring.State = store.KeyRetiring
	legacy := newTestKey(t, store.AlgEd25519, "legacy") // stored before states: ""
	d := store.Domain{Name: "example.com", Keys: []store.DKIMKey{active, pending, retiring, legacy}}
	msg := []byte("From: a@example.com\r\nTo: b@example.org\r\nSubject: x\r\n\r\nbody\r\n")
	h, err := NewDomainSigner(oneDomain{d}).Sign(context.Background(), "example.com", msg)
	if err != nil {
		t.Fatal(err)
	}
	for _, sel := range []string{"active", "legacy"} {
		if !bytes.Contains(h, []byte("s="+sel+";")) {
			t.Errorf("no signature by %s:\n%s", sel, h)
		}
	}
	for _, sel := range []string{"pending", "retiring"} {
		if bytes.Contains(h, []byte("s="+sel+";")) {
			t.Errorf("signed by the %s key:\n%s", sel, h)
		}
	}
	if n := bytes.Count(h, []byte("DKIM-Signature:")); n != 2 {
		t.Errorf("%d signatures, want 2", n)
	}

	d.Keys = []store.DKIMKey{pending}
	if _, err := NewDomainSigner(oneDomain{d}).Sign(context.Background(), "example.com", msg); err == nil {
		t.Error("signed with a domain whose only key is pending")
	}
}

func TestNewSelectorAndKeySize(t *testing.T) {
	day := time.Date(2026, 11, 27, 15, 0, 0, 0, time.UTC)
	if got := NewSelector(store.AlgRSA, day, nil); got != "sesame-rsa-20261127" {
		t.Errorf("NewSelector = %q", got)
	}
	if got := NewSelector(store.AlgRSA, day, []string{"sesame-rsa-20261127", "sesame-rsa-20261127-2"}); got != "sesame-rsa-20261127-3" {
		t.Errorf("NewSelector with two taken = %q, want sesame-rsa-20261127-3", got)
	}
	pemKey, err := GenerateKeySize(store.AlgRSA, 3072)
	if err != nil {
		t.Fatal(err)
	}
	if got := KeySize(store.DKIMKey{Selector: "s", Algorithm: store.AlgRSA, PrivateKey: pemKey}); got != 3072 {
		t.Errorf("KeySize = %d, want 3072", got)
	}
	if _, err := GenerateKeySize(store.AlgRSA, 1024); err == nil {
		t.Error("a 1024-bit key was made")
	}
	if got := KeySize(newTestKey(t, store.AlgEd25519, "e")); got != 0 {
		t.Errorf("KeySize of an Ed25519 key = %d, want 0", got)
	}
}
