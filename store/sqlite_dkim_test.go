package store

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A domain's keys carry their rotation state: stored active by default;
// added, moved on and deleted one by one, each change seen by the next
// (cached) read.
func TestDKIMKeyStates(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	now := time.Unix(1800000000, 0)
	if err := s.CreateDomain(ctx, Domain{Name: "example.com", CreatedAt: now,
		Keys: []DKIMKey{{Selector: "old", Algorithm: AlgRSA, PrivateKey: []byte("k1"), CreatedAt: now}}}); err != nil {
		t.Fatal(err)
	}
	keys := func() map[string]DKIMKey {
		t.Helper()
		d, err := s.Domain(ctx, "example.com")
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]DKIMKey{}
		for _, k := range d.Keys {
			out[k.Selector] = k
		}
		return out
	}
	if k := keys()["old"]; k.State != KeyActive || !k.ActiveSince.Equal(now) || !k.RetireAt.IsZero() {
		t.Fatalf("a key stored without a state: %+v, want active since its creation", k)
	}

	pending := DKIMKey{Selector: "new", Algorithm: AlgRSA, PrivateKey: []byte("k2"), CreatedAt: now.Add(time.Hour), State: KeyPending}
	if err := s.AddDKIMKey(ctx, "example.com", pending); err != nil {
		t.Fatal(err)
	}
	if err := s.AddDKIMKey(ctx, "example.com", pending); !errors.Is(err, ErrExists) {
		t.Errorf("the same selector twice: %v, want ErrExists", err)
	}
	if err := s.AddDKIMKey(ctx, "nowhere.example", pending); !errors.Is(err, ErrNotFound) {
		t.Errorf("a key of a missing domain: %v, want ErrNotFound", err)
	}
	if k := keys()["new"]; k.State != KeyPending || !k.ActiveSince.IsZero() {
		t.Fatalf("added key %+v, want pending", k)
	}

	switchAt := now.Add(2 * time.Hour)
	if err := s.SetDKIMKeyStates(ctx, "example.com", []DKIMKey{
		{Selector: "new", State: KeyActive, ActiveSince: switchAt},
		{Selector: "old", State: KeyRetiring, ActiveSince: now, RetireAt: switchAt.Add(7 * 24 * time.Hour)},
	}); err != nil {
		t.Fatal(err)
	}
	k := keys()
	if k["new"].State != KeyActive || !k["new"].ActiveSince.Equal(switchAt) || k["old"].State != KeyRetiring ||
		!k["old"].RetireAt.Equal(switchAt.Add(7*24*time.Hour)) || string(k["old"].PrivateKey) != "k1" {
		t.Fatalf("after the switch: %+v", k)
	}
	if err := s.SetDKIMKeyStates(ctx, "example.com", []DKIMKey{{Selector: "new", State: KeyRetiring}, {Selector: "gone", State: KeyActive}}); !errors.Is(err, ErrNotFound) {
		t.Errorf("a state for a missing key: %v, want ErrNotFound", err)
	}
	if keys()["new"].State != KeyActive {
		t.Error("a failed SetDKIMKeyStates changed a key: it must change all or none")
	}

	if err := s.DeleteDKIMKey(ctx, "example.com", "old"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteDKIMKey(ctx, "example.com", "old"); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleting it again: %v, want ErrNotFound", err)
	}
	if k := keys(); len(k) != 1 || k["new"].State != KeyActive {
		t.Fatalf("after deleting the old key: %+v", k)
	}
}
