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

// verifierSetup is a domain in a real store, its DNS zone, and a Verifier.
type verifierSetup struct {
	z     *testkit.Zone
	clock *testkit.Clock
	log   *testkit.Buffer
	st    *store.SQLite
	cfg   Config
	d     store.Domain
	dkim  string // name of the DKIM record
	value string // its value
	v     *Verifier
}

func newVerifierSetup(t *testing.T) *verifierSetup {
	t.Helper()
	s := &verifierSetup{z: testkit.StartZone(t), clock: testkit.NewClock(t), log: &testkit.Buffer{}, st: openStore(t)}
	s.cfg = testConfig(s.z, s.clock, s.log)
	s.d = newDomain(t, "example.com", s.clock.Now(), store.AlgEd25519)
	if err := s.st.CreateDomain(context.Background(), s.d); err != nil {
		t.Fatal(err)
	}
	r := dkimRecord(t, s.d, 0)
	s.dkim, s.value = r.Name, r.Value
	checker, err := NewChecker(s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.v = NewVerifier(s.cfg, s.st, checker)
	return s
}

// verify runs Verify and checks what it returns against what is stored.
func (s *verifierSetup) verify(t *testing.T, wantStatus string, wantFailed int) store.Domain {
	t.Helper()
	d, findings, err := s.v.Verify(context.Background(), s.d.Name)
	if err != nil {
		t.Fatal(err)
	}
	if len(findings) != 5 {
		t.Errorf("%d findings, want 5", len(findings))
	}
	stored, err := s.st.Domain(context.Background(), s.d.Name)
	if err != nil {
		t.Fatal(err)
	}
	if d.Status != stored.Status || !d.StatusSince.Equal(stored.StatusSince) || !d.LastChecked.Equal(stored.LastChecked) || d.FailedChecks != stored.FailedChecks {
		t.Errorf("Verify returned %+v, the store has %+v", d, stored)
	}
	if stored.Status != wantStatus || stored.FailedChecks != wantFailed {
		t.Errorf("after the check: %s with %d failed checks, want %s with %d (findings %+v)", stored.Status, stored.FailedChecks, wantStatus, wantFailed, findings)
	}
	if !stored.LastChecked.Equal(s.clock.Now()) {
		t.Errorf("LastChecked %v, want now %v", stored.LastChecked, s.clock.Now())
	}
	return stored
}

func TestVerifyPendingToVerified(t *testing.T) {
	s := newVerifierSetup(t)
	d := s.verify(t, store.IdentityPending, 0)
	if !d.StatusSince.Equal(s.d.StatusSince) {
		t.Errorf("a check that changes nothing moved StatusSince to %v", d.StatusSince)
	}
	s.clock.Advance(time.Hour)
	s.z.SetTXT(s.dkim, s.value) // only the DKIM record: the others are guidance
	d = s.verify(t, store.IdentityVerified, 0)
	if !d.StatusSince.Equal(s.clock.Now()) {
		t.Errorf("StatusSince %v, want the time of verification %v", d.StatusSince, s.clock.Now())
	}
	if !strings.Contains(s.log.String(), "domain example.com is verified") {
		t.Errorf("verification not logged:\n%s", s.log)
	}
}

func TestVerifyWrongKeyExpires(t *testing.T) {
	s := newVerifierSetup(t)
	other := newDomain(t, "example.com", s.clock.Now(), store.AlgEd25519)
	s.z.SetTXT(s.dkim, dkimRecord(t, other, 0).Value)
	s.verify(t, store.IdentityPending, 0)
	s.clock.Advance(72*time.Hour - time.Second)
	s.verify(t, store.IdentityPending, 0)
	s.clock.Advance(time.Second)
	d := s.verify(t, store.IdentityFailed, 0)
	if !d.StatusSince.Equal(s.clock.Now()) {
		t.Errorf("StatusSince %v, want %v", d.StatusSince, s.clock.Now())
	}
	if !strings.Contains(s.log.String(), "sesame domain verify example.com") {
		t.Errorf("the failure log does not say what to do:\n%s", s.log)
	}
	// Failed stays failed while not proven, however often it is checked.
	s.clock.Advance(time.Hour)
	s.verify(t, store.IdentityFailed, 0)
	// Published at last: verified again.
	s.z.SetTXT(s.dkim, s.value)
	s.verify(t, store.IdentityVerified, 0)
}

func TestVerifyVerifiedLosesRecord(t *testing.T) {
	s := newVerifierSetup(t)
	s.z.SetTXT(s.dkim, s.value)
	s.verify(t, store.IdentityVerified, 0)
	s.z.SetTXT(s.dkim) // removed
	for i := 1; i < 3; i++ {
		s.clock.Advance(24 * time.Hour)
		s.verify(t, store.IdentityVerified, i)
	}
	if strings.Contains(s.log.String(), "no longer verified") {
		t.Error("logged as no longer verified before the third failed check")
	}
	// Back for one check: the count starts again.
	s.z.SetTXT(s.dkim, s.value)
	s.clock.Advance(24 * time.Hour)
	s.verify(t, store.IdentityVerified, 0)
	s.z.SetTXT(s.dkim)
	for i := 1; i < 3; i++ {
		s.clock.Advance(24 * time.Hour)
		s.verify(t, store.IdentityVerified, i)
	}
	s.clock.Advance(24 * time.Hour)
	s.verify(t, store.IdentityFailed, 3)
	want := "domain example.com is no longer verified: its DKIM record " + s.dkim + " is missing"
	if log := s.log.String(); !strings.Contains(log, want) || !strings.Contains(log, "level=WARN") ||
		!strings.Contains(log, "mail from it is refused until it is verified again with sesame domain verify example.com") {
		t.Errorf("log lacks %q and the advice at Warn:\n%s", want, log)
	}
	// Re-verification.
	s.z.SetTXT(s.dkim, s.value)
	s.verify(t, store.IdentityVerified, 0)
}

func TestVerifyLookupFailureChangesNothing(t *testing.T) {
	s := newVerifierSetup(t)
	s.z.Fail(s.dkim, dns.RcodeServerFailure)
	s.clock.Advance(80 * time.Hour) // past the pending timeout: still no proof either way
	d := s.verify(t, store.IdentityPending, 0)
	if !d.StatusSince.Equal(s.d.StatusSince) {
		t.Errorf("StatusSince moved to %v", d.StatusSince)
	}

	s.z.Fail(s.dkim, dns.RcodeSuccess)
	s.z.SetTXT(s.dkim, s.value)
	s.verify(t, store.IdentityVerified, 0)
	s.z.SetTXT(s.dkim)
	s.verify(t, store.IdentityVerified, 1)
	s.z.Fail(s.dkim, dns.RcodeServerFailure)
	for range 5 {
		s.clock.Advance(24 * time.Hour)
		s.verify(t, store.IdentityVerified, 1)
	}
}

func TestVerifyUnknownDomain(t *testing.T) {
	s := newVerifierSetup(t)
	_, _, err := s.v.Verify(context.Background(), "nope.example")
	if !errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), "sesame domain add nope.example") {
		t.Errorf("Verify of an unknown domain: %v", err)
	}
}

func TestVerifyDomainWithoutKeys(t *testing.T) {
	s := newVerifierSetup(t)
	bare := store.Domain{Name: "bare.example", CreatedAt: s.clock.Now()}
	if err := s.st.CreateDomain(context.Background(), bare); err != nil {
		t.Fatal(err)
	}
	d, _, err := s.v.Verify(context.Background(), "bare.example")
	if err != nil {
		t.Fatal(err)
	}
	if d.Status != store.IdentityPending {
		t.Errorf("a domain without keys became %s", d.Status)
	}
}

func TestRun(t *testing.T) {
	s := newVerifierSetup(t)
	// Run sleeps on real timers, so its clock must move with the wall
	// clock; it starts at the test clock's time, which the domains were
	// created at, so a pending domain is not already past its timeout
	// whatever today's date is.
	start, base := time.Now(), s.clock.Now()
	s.cfg.Now = func() time.Time { return base.Add(time.Since(start)) }
	s.cfg.PendingCheckInterval = 50 * time.Millisecond
	s.cfg.VerifiedCheckInterval = time.Hour
	checker, err := NewChecker(s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	v := NewVerifier(s.cfg, s.st, checker)

	// A failed domain is never checked by Run.
	failed := newDomain(t, "failed.example", s.clock.Now(), store.AlgEd25519)
	failed.Status = store.IdentityFailed
	if err := s.st.CreateDomain(context.Background(), failed); err != nil {
		t.Fatal(err)
	}
	failedDKIM := dkimRecord(t, failed, 0)
	s.z.SetTXT(failedDKIM.Name, failedDKIM.Value)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		v.Run(ctx)
		close(done)
	}()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !cond(); {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// Checked at once, then again after the interval.
	waitFor("two checks of the pending domain", func() bool { return s.z.Count(s.dkim) >= 2 })
	d, err := s.st.Domain(context.Background(), "example.com")
	if err != nil {
		t.Fatal(err)
	}
	if d.Status != store.IdentityPending || d.LastChecked.IsZero() {
		t.Errorf("after checks without the record: %s, last checked %v", d.Status, d.LastChecked)
	}
	// Published: verified at the next check, and then left alone for the
	// verified interval.
	s.z.SetTXT(s.dkim, s.value)
	waitFor("verification", func() bool {
		d, err := s.st.Domain(context.Background(), "example.com")
		return err == nil && d.Status == store.IdentityVerified
	})
	n := s.z.Count(s.dkim)
	time.Sleep(200 * time.Millisecond)
	if got := s.z.Count(s.dkim); got != n {
		t.Errorf("a verified domain was checked %d more times within its interval of an hour", got-n)
	}
	if got := s.z.Count(failedDKIM.Name); got != 0 {
		t.Errorf("the failed domain was checked %d times", got)
	}

	cancel()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}
