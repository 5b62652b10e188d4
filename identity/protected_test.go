package identity

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/sesame-mail/sesame/store"
	"github.com/sesame-mail/sesame/testkit"
)

// dmarcZone publishes the DMARC policies of mailbox providers' domains as
// the tests need them.
func dmarcZone(t *testing.T) *testkit.Zone {
	z := testkit.StartZone(t)
	z.SetTXT("_dmarc.gmail.test", "v=DMARC1; p=reject; rua=mailto:r@gmail.test")
	z.SetTXT("_dmarc.yahoo.test", "v=DMARC1; p=quarantine")
	z.SetTXT("_dmarc.lax.test", "v=DMARC1; p=none")
	z.SetTXT("_dmarc.corp.co.uk", "v=DMARC1; p=none; sp=reject") // for mail.corp.co.uk
	z.Fail("_dmarc.broken.test", dns.RcodeServerFailure)
	return z
}

func dmarcChecker(t *testing.T, z *testkit.Zone, c *testkit.Clock) *Checker {
	t.Helper()
	checker, err := NewChecker(testConfig(z, c, nil))
	if err != nil {
		t.Fatal(err)
	}
	return checker
}

func TestDMARCPolicy(t *testing.T) {
	z := dmarcZone(t)
	checker := dmarcChecker(t, z, testkit.NewClock(t))
	for domain, want := range map[string]string{
		"gmail.test": "reject", "yahoo.test": "quarantine", "lax.test": "none", "nothing.test": "",
		"mail.corp.co.uk": "reject", "corp.co.uk": "none",
	} {
		if got, err := checker.DMARCPolicy(context.Background(), domain); err != nil || got != want {
			t.Errorf("DMARCPolicy(%s) = %q, %v; want %q", domain, got, err, want)
		}
	}
	if _, err := checker.DMARCPolicy(context.Background(), "broken.test"); err == nil || !strings.Contains(err.Error(), "SERVFAIL") {
		t.Errorf("DMARCPolicy of a failing lookup: %v", err)
	}
}

func TestAddSender(t *testing.T) {
	s := newAddressSetup(t)
	z := dmarcZone(t)
	checker := dmarcChecker(t, z, s.clock)
	ctx := context.Background()

	// Refused without --force: nothing stored, nothing sent.
	for _, addr := range []string{"me@gmail.test", "me@yahoo.test", "me@mail.corp.co.uk"} {
		_, _, err := s.av.AddSender(ctx, addr, checker, false)
		var dm *DMARCError
		if !errors.As(err, &dm) || !errors.Is(err, ErrDMARCProtected) || dm.Address != addr ||
			!strings.Contains(err.Error(), "verify a domain of your own with sesame domain add") ||
			!strings.Contains(err.Error(), "sesame address add "+addr+" --force") {
			t.Errorf("AddSender(%s): %v, want a DMARCError saying what to do", addr, err)
		}
		if _, err := s.st.Address(ctx, addr); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s refused but stored: %v", addr, err)
		}
		if q, _ := s.queued(t, addr); len(q) != 0 {
			t.Errorf("%s refused but %d messages queued to it", addr, len(q))
		}
	}

	// With --force: added, linked, the policy and the choice recorded.
	a, link, err := s.av.AddSender(ctx, "me@gmail.test", checker, true)
	if err != nil || link == "" || a.Status != store.IdentityPending {
		t.Fatalf("AddSender --force: %+v %q %v", a, link, err)
	}
	stored, _ := s.st.Address(ctx, "me@gmail.test")
	if stored.DMARCPolicy != "reject" || !stored.Forced || !stored.DMARCCheckedAt.Equal(s.clock.Now()) || stored.TokenHash == "" {
		t.Errorf("stored after --force: %+v", stored)
	}
	if q, _ := s.queued(t, "me@gmail.test"); len(q) != 1 {
		t.Errorf("%d verification messages queued, want 1", len(q))
	}

	// Lax, absent and unknown policies: added, no force needed.
	for addr, want := range map[string]string{"me@lax.test": "none", "me@nothing.test": "", "me@broken.test": ""} {
		if _, link, err := s.av.AddSender(ctx, addr, checker, false); err != nil || link == "" {
			t.Errorf("AddSender(%s): %q %v", addr, link, err)
		}
		stored, _ := s.st.Address(ctx, addr)
		if stored.DMARCPolicy != want || stored.Forced || stored.DMARCCheckedAt.IsZero() != (addr == "me@broken.test") {
			t.Errorf("%s stored as %+v, want policy %q", addr, stored, want)
		}
	}

	// A verified address whose domain turned strict: refused again (its
	// policy recorded), then allowed by --force without a new link.
	if err := s.st.VerifyAddress(ctx, "me@lax.test", s.clock.Now()); err != nil {
		t.Fatal(err)
	}
	z.SetTXT("_dmarc.lax.test", "v=DMARC1; p=reject")
	if _, _, err := s.av.AddSender(ctx, "me@lax.test", checker, false); !errors.Is(err, ErrDMARCProtected) {
		t.Errorf("re-adding a verified address of a strict domain: %v", err)
	}
	if stored, _ := s.st.Address(ctx, "me@lax.test"); stored.DMARCPolicy != "reject" || stored.Forced {
		t.Errorf("after the refused re-add: %+v", stored)
	}
	a, link, err = s.av.AddSender(ctx, "me@lax.test", checker, true)
	if err != nil || link != "" || !a.Forced || a.Status != store.IdentityVerified {
		t.Errorf("--force on a verified address: %+v %q %v", a, link, err)
	}
	if q, _ := s.queued(t, "me@lax.test"); len(q) != 1 {
		t.Errorf("%d messages to me@lax.test, want only the first link", len(q))
	}
}

func TestMaySendAsDMARC(t *testing.T) {
	st := openStore(t)
	ctx := context.Background()
	now := testkit.Start(t)
	if err := st.CreateDomain(ctx, store.Domain{Name: "own.test", CreatedAt: now, Status: store.IdentityVerified}); err != nil {
		t.Fatal(err)
	}
	for _, a := range []store.Address{
		{Address: "strict@gmail.test", DMARCPolicy: "reject"},
		{Address: "spam@yahoo.test", DMARCPolicy: "quarantine"},
		{Address: "forced@gmail.test", DMARCPolicy: "reject", Forced: true},
		{Address: "lax@lax.test", DMARCPolicy: "none"},
		{Address: "unknown@other.test"},
		{Address: "pending@gmail.test", DMARCPolicy: "reject", Status: store.IdentityPending},
		{Address: "x@own.test", DMARCPolicy: "reject"}, // its domain is verified
	} {
		a.Status = cmpOr(a.Status, store.IdentityVerified)
		a.CreatedAt, a.DMARCCheckedAt = now, now
		if err := st.CreateAddress(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	strict, lenient := NewAuthorizer(st), NewAuthorizerWith(st, AuthorizerOptions{AllowDMARCProtected: true})
	for addr, want := range map[string]string{
		"strict@gmail.test": "refused", "spam@yahoo.test": "refused", "Strict@Gmail.TEST": "refused",
		"forced@gmail.test": "yes", "lax@lax.test": "yes", "unknown@other.test": "yes", "x@own.test": "yes",
		"pending@gmail.test": "no",
	} {
		ok, err := strict.MaySendAs(ctx, store.Credential{}, addr)
		var dm *DMARCError
		got := map[bool]string{true: "yes", false: "no"}[ok]
		if errors.As(err, &dm) {
			got = "refused"
			if dm.Policy == "" || !strings.EqualFold(dm.Address, addr) {
				t.Errorf("%s: DMARCError %+v", addr, dm)
			}
		} else if err != nil {
			t.Errorf("%s: %v", addr, err)
		}
		if got != want {
			t.Errorf("MaySendAs(%s) = %s, want %s", addr, got, want)
		}
		// A recipient is not a sender: the sandbox check is unaffected.
		if v, err := strict.VerifiedRecipient(ctx, addr); err != nil || v != (want != "no") {
			t.Errorf("VerifiedRecipient(%s) = %v, %v", addr, v, err)
		}
		if ok, err := lenient.MaySendAs(ctx, store.Credential{}, addr); err != nil || ok != (want != "no") {
			t.Errorf("with allow_dmarc_protected_addresses, MaySendAs(%s) = %v, %v", addr, ok, err)
		}
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func TestVerifierRefreshesAddressDMARC(t *testing.T) {
	c := testkit.NewClock(t)
	z := dmarcZone(t)
	log := &testkit.Buffer{}
	cfg := testConfig(z, c, log)
	st := openStore(t)
	ctx := context.Background()
	now := c.Now()
	for _, a := range []store.Address{
		{Address: "a@gmail.test", Status: store.IdentityVerified},
		{Address: "b@gmail.test", Status: store.IdentityPending},
		{Address: "c@yahoo.test", Status: store.IdentityVerified, DMARCPolicy: "none", DMARCCheckedAt: now.Add(-time.Hour)},
		{Address: "d@broken.test", Status: store.IdentityVerified},
	} {
		a.CreatedAt = now
		if err := st.CreateAddress(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	checker, err := NewChecker(cfg)
	if err != nil {
		t.Fatal(err)
	}
	v := NewVerifier(cfg, st, checker)
	tried := map[string]time.Time{}
	next := v.refreshAddresses(ctx, tried)

	policy := func(addr string) store.Address {
		a, err := st.Address(ctx, addr)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	for addr, want := range map[string]string{"a@gmail.test": "reject", "b@gmail.test": "reject", "c@yahoo.test": "none", "d@broken.test": ""} {
		if got := policy(addr).DMARCPolicy; got != want {
			t.Errorf("after the refresh %s has policy %q, want %q", addr, got, want)
		}
	}
	if n := z.CountType("_dmarc.gmail.test", dns.TypeTXT); n != 1 {
		t.Errorf("_dmarc.gmail.test asked %d times for two addresses, want once", n)
	}
	if n := z.Count("_dmarc.yahoo.test"); n != 0 {
		t.Errorf("c@yahoo.test was checked an hour ago, but its domain was asked %d times", n)
	}
	if !policy("d@broken.test").DMARCCheckedAt.IsZero() {
		t.Error("a failed lookup recorded a check")
	}
	if !strings.Contains(log.String(), "sender address a@gmail.test: gmail.test publishes DMARC p=reject") ||
		strings.Contains(log.String(), "sender address b@gmail.test:") {
		t.Errorf("the log does not warn of the verified address newly refused (and only of it):\n%s", log.String())
	}
	// The failed lookup is tried again first, after the pending interval.
	if want := now.Add(cfg.withDefaults().PendingCheckInterval); !next.Equal(want) {
		t.Errorf("next refresh at %v, want %v", next, want)
	}

	// A day later (yahoo's check due, gmail's too) the policies are
	// looked up again.
	z.SetTXT("_dmarc.yahoo.test", "v=DMARC1; p=quarantine")
	c.Advance(24 * time.Hour)
	v.refreshAddresses(ctx, tried)
	if got := policy("c@yahoo.test").DMARCPolicy; got != "quarantine" {
		t.Errorf("a day later c@yahoo.test has policy %q, want quarantine", got)
	}
	if n := z.CountType("_dmarc.gmail.test", dns.TypeTXT); n != 2 {
		t.Errorf("_dmarc.gmail.test asked %d times after a day, want 2", n)
	}
}
