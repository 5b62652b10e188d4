package verp

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sesame-mail/sesame/store"
)

func TestForVerifiedDomains(t *testing.T) {
	st, err := store.OpenSQLite(filepath.Join(t.TempDir(), "sesame.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	// The store keeps times it is handed; only the cache reads the clock,
	// and it reads the test's.
	at := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	clock := at
	now := func() time.Time { return clock }
	for name, status := range map[string]string{"example.com": store.IdentityVerified, "pending.example": store.IdentityPending} {
		if err := st.CreateDomain(ctx, store.Domain{Name: name, CreatedAt: at, Status: status}); err != nil {
			t.Fatal(err)
		}
	}
	s := New(make([]byte, KeySize), "bounce")
	returnPath := s.ForVerifiedDomains(st, now)

	rp := returnPath("Shop@Example.COM", "7GFC3CTHMRJQDUDB", "user@example.net")
	if want := s.ReturnPath("example.com", "7GFC3CTHMRJQDUDB", "user@example.net"); rp != want {
		t.Errorf("verified domain: return path %q, want %q", rp, want)
	}
	if tok, err := s.Parse(rp); err != nil || tok.Domain != "example.com" || !strings.HasSuffix(rp, "@bounce.example.com") {
		t.Errorf("verified domain: %q does not parse back (%+v, %v)", rp, tok, err)
	}
	for _, sender := range []string{"app@pending.example", "someone@gmail.example", ""} {
		if rp := returnPath(sender, "7GFC3CTHMRJQDUDB", "user@example.net"); rp != "" {
			t.Errorf("sender %q, domain not verified: return path %q, want none (the sender kept)", sender, rp)
		}
	}

	// A status is believed for a minute, then read again.
	if err := st.SetDomainStatus(ctx, "example.com", store.DomainStatus{Status: store.IdentityFailed, StatusSince: at}); err != nil {
		t.Fatal(err)
	}
	clock = at.Add(59 * time.Second)
	if rp := returnPath("shop@example.com", "7GFC3CTHMRJQDUDB", "user@example.net"); rp == "" {
		t.Error("a status read 59 s ago was not believed")
	}
	clock = at.Add(61 * time.Second)
	if rp := returnPath("shop@example.com", "7GFC3CTHMRJQDUDB", "user@example.net"); rp != "" {
		t.Errorf("a domain failed a minute ago still gets return path %q", rp)
	}
}
