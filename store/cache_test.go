package store

import (
	"context"
	"errors"
	"testing"
	"time"
)

// The hot administrative reads are kept, but a write is seen at once: one
// through the same store clears the cache, one by another process (another
// OpenSQLite of the file, as the admin commands do) grows the stamp file.
// If the stamp cannot be written, the change is seen within adminCacheTTL.
func TestAdminCache(t *testing.T) {
	s, path := openTest(t)
	other, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	ctx := context.Background()
	now := time.Now()

	if _, err := s.DomainStatusOf(ctx, "example.com"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown domain: %v", err)
	}
	if err := other.CreateDomain(ctx, Domain{Name: "example.com", CreatedAt: now,
		Keys: []DKIMKey{{Selector: "s1", Algorithm: AlgEd25519, PrivateKey: []byte("k"), CreatedAt: now}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DomainStatusOf(ctx, "example.com"); err != nil {
		t.Fatalf("right after another process added the domain: %v", err)
	}

	// Without the stamp (say, a read-only data directory for that process),
	// the kept answer lasts at most adminCacheTTL.
	other.admin.stamp = ""
	if err := other.DeleteDomain(ctx, "example.com"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DomainStatusOf(ctx, "example.com"); err != nil {
		t.Fatalf("right after an unstamped delete: %v, want the kept answer", err)
	}
	deadline := time.Now().Add(adminCacheTTL + time.Second)
	for {
		_, err := s.DomainStatusOf(ctx, "example.com")
		if errors.Is(err, ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the unstamped delete not seen after %v: %v", adminCacheTTL, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := s.CreateDomain(ctx, Domain{Name: "example.com", CreatedAt: now,
		Keys: []DKIMKey{{Selector: "s1", Algorithm: AlgEd25519, PrivateKey: []byte("k"), CreatedAt: now}}}); err != nil {
		t.Fatal(err)
	}

	// A write through this store is seen at once.
	d, err := s.Domain(ctx, "example.com")
	if err != nil || len(d.Keys) != 1 {
		t.Fatalf("Domain = %+v, %v", d, err)
	}
	d.Keys[0].Selector = "changed by a caller" // must not reach the cache
	if err := s.SetDomainStatus(ctx, "example.com", DomainStatus{Status: IdentityVerified, StatusSince: now, LastChecked: now}); err != nil {
		t.Fatal(err)
	}
	d, err = s.Domain(ctx, "example.com")
	if err != nil || d.Status != IdentityVerified || d.Keys[0].Selector != "s1" {
		t.Fatalf("after SetDomainStatus: %+v, %v; want verified at once, keys unchanged", d, err)
	}
	if err := s.CreateCredential(ctx, Credential{Name: "app", Username: "u", PasswordHash: "h", CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.PausedReason(ctx, "app"); r != "" {
		t.Fatalf("paused reason %q", r)
	}
	if err := s.SetPaused(ctx, "app", "bounce rate", now); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.PausedReason(ctx, "app"); r != "bounce rate" {
		t.Fatalf("paused reason right after SetPaused: %q", r)
	}

	// A password rotated by an admin command counts at the next login.
	other.admin.stamp = path + ".stamp"
	if c, err := s.CredentialByUsername(ctx, "u"); err != nil || c.PasswordHash != "h" {
		t.Fatalf("CredentialByUsername = %+v, %v", c, err)
	}
	if err := other.SetPassword(ctx, "app", "h2", now); err != nil {
		t.Fatal(err)
	}
	if c, err := s.CredentialByUsername(ctx, "u"); err != nil || c.PasswordHash != "h2" {
		t.Fatalf("after another process rotated the password: %+v, %v; want the new hash", c, err)
	}
}

// Only answers and "not found" are kept: a failed read is tried again, and
// a clear during a read keeps that read's (maybe stale) answer out.
func TestCachedRead(t *testing.T) {
	var c adminCache
	calls := 0
	load := func() (int, error) { calls++; return calls, nil }
	if v, _ := cachedRead(&c, "k", load); v != 1 {
		t.Fatal(v)
	}
	if v, _ := cachedRead(&c, "k", load); v != 1 || calls != 1 {
		t.Fatalf("second read = %d after %d loads, want the kept 1", v, calls)
	}
	c.clear()
	if v, _ := cachedRead(&c, "k", load); v != 2 {
		t.Fatalf("after clear = %d, want a new load", v)
	}

	failing := func() (int, error) { calls++; return 0, errors.New("disk I/O error") }
	cachedRead(&c, "f", failing)
	before := calls
	cachedRead(&c, "f", failing)
	if calls != before+1 {
		t.Fatal("a failed read was kept")
	}

	racing := func() (int, error) { c.clear(); return 99, nil } // an admin write lands mid-read
	cachedRead(&c, "r", racing)
	if v, _ := cachedRead(&c, "r", load); v == 99 {
		t.Fatal("an answer read across a clear was kept")
	}

	for i := range adminCacheMax + 10 {
		cachedRead(&c, string(rune(i))+"x", load)
	}
	if len(c.m) > adminCacheMax {
		t.Fatalf("%d entries, want at most %d", len(c.m), adminCacheMax)
	}
}
