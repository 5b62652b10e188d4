package identity

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/miekg/dns"

	sesamedkim "github.com/sesame-mail/sesame/dkim"
	"github.com/sesame-mail/sesame/store"
	"github.com/sesame-mail/sesame/testkit"
)

// rotationSetup is a verified domain with one RSA key, its records in a
// DNS zone, a Verifier on a test clock, and the signer submission uses.
type rotationSetup struct {
	*verifierSetup
	signer *sesamedkim.DomainSigner
}

func newRotationSetup(t *testing.T) *rotationSetup {
	t.Helper()
	z, clock, log, st := testkit.StartZone(t), testkit.NewClock(t), &testkit.Buffer{}, openStore(t)
	s := &verifierSetup{z: z, clock: clock, log: log, st: st, cfg: testConfig(z, clock, log)}
	s.d = newDomain(t, "example.com", clock.Now(), store.AlgRSA)
	if err := st.CreateDomain(context.Background(), s.d); err != nil {
		t.Fatal(err)
	}
	publishAll(t, z, s.cfg, s.d)
	checker, err := NewChecker(s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.v = NewVerifier(s.cfg, st, checker)
	r := &rotationSetup{verifierSetup: s, signer: sesamedkim.NewDomainSigner(st)}
	if d := r.check(t); d.Status != store.IdentityVerified {
		t.Fatalf("status %s after publishing, want verified", d.Status)
	}
	return r
}

func (r *rotationSetup) check(t *testing.T) store.Domain {
	t.Helper()
	d, _, err := r.v.Verify(context.Background(), r.d.Name)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// sign signs a message as submission does, and checks that both verifiers
// (go-msgauth and dkimpy), looking the key up in the zone, accept it and
// that it was signed with selector.
func (r *rotationSetup) sign(t *testing.T, selector string) []byte {
	t.Helper()
	msg := []byte("From: news@example.com\r\nTo: a@example.org\r\nSubject: rotation\r\nDate: Mon, 7 Dec 2026 10:00:00 +0000\r\n" +
		"Message-ID: <" + fmt.Sprint(time.Now().UnixNano()) + "@example.com>\r\n\r\nHello.\r\n")
	h, err := r.signer.Sign(context.Background(), r.d.Name, msg)
	if err != nil {
		t.Fatal(err)
	}
	signed := append(h, msg...)
	r.expectVerified(t, signed, selector)
	return signed
}

// expectVerified checks that every signature of msg verifies now, with the
// records the zone holds now, and that it is by selector.
func (r *rotationSetup) expectVerified(t *testing.T, msg []byte, selector string) {
	t.Helper()
	verifs, err := dkim.VerifyWithOptions(bytes.NewReader(msg), &dkim.VerifyOptions{LookupTXT: r.lookupTXT})
	if err != nil {
		t.Fatal(err)
	}
	if len(verifs) != 1 {
		t.Fatalf("%d signatures, want 1", len(verifs))
	}
	if v := verifs[0]; v.Err != nil || v.Domain != r.d.Name {
		t.Errorf("go-msgauth: signature of %s: %v", v.Domain, v.Err)
	}
	if !bytes.Contains(msg, []byte("s="+selector+";")) {
		t.Errorf("signed with another selector than %s:\n%s", selector, msg[:bytes.Index(msg, []byte("\r\nFrom:"))])
	}
	if got := strings.Join(testkit.VerifyDKIMPy(t, msg, r.z.Addr), " "); got != "True" {
		t.Errorf("dkimpy: %q, want True", got)
	}
}

// lookupTXT asks the zone, as a receiver asks its resolver.
func (r *rotationSetup) lookupTXT(name string) ([]string, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeTXT)
	in, err := dns.Exchange(m, r.z.Addr)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, rr := range in.Answer {
		if t, ok := rr.(*dns.TXT); ok {
			out = append(out, strings.Join(t.Txt, ""))
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no TXT record at %s", name)
	}
	return out, nil
}

func (r *rotationSetup) keys(t *testing.T) map[string]store.DKIMKey {
	t.Helper()
	d, err := r.st.Domain(context.Background(), r.d.Name)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]store.DKIMKey{}
	for _, k := range d.Keys {
		out[k.Selector] = k
	}
	return out
}

func (r *rotationSetup) rotationEvents(t *testing.T) []string {
	t.Helper()
	evs, err := r.st.QueryEvents(context.Background(), store.EventQuery{Type: store.EventDKIMRotation})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range evs {
		out = append(out, e.Reply)
	}
	return out
}

// A rotation through every step, signatures verifying at each: the old key
// signs while the new record is missing; once it is published the new key
// signs, and mail signed before still verifies since the old record stays;
// after the grace period the old key is deleted and its record may go,
// and the domain stays verified without it.
func TestRotationWithoutAGap(t *testing.T) {
	r := newRotationSetup(t)
	ctx := context.Background()
	oldSel := r.d.Keys[0].Selector
	r.sign(t, oldSel)

	// Step 1: the new key, pending; the old one still signs.
	k, rec, err := StartRotation(ctx, r.cfg, r.st, r.d.Name, "", 0, "test")
	if err != nil {
		t.Fatal(err)
	}
	if k.Selector == oldSel || k.State != store.KeyPending || rec.Name != k.Selector+"._domainkey.example.com" || rec.Required {
		t.Fatalf("new key %s (%s), record %+v; want a pending key with a new selector and a record that is not required yet", k.Selector, k.State, rec)
	}
	if got := sesamedkim.KeySize(k); got != 2048 {
		t.Errorf("new RSA key of %d bits, want 2048 like the key it replaces", got)
	}
	if _, _, err := StartRotation(ctx, r.cfg, r.st, r.d.Name, store.AlgRSA, 0, "test"); err == nil || !strings.Contains(err.Error(), "under way") {
		t.Errorf("a second rotation while one waits: %v, want refused as under way", err)
	}
	r.sign(t, oldSel)
	inFlight := r.sign(t, oldSel) // signed before the switch, delivered after

	// Step 2: not published yet: checks keep the old key signing.
	r.clock.Advance(5 * time.Minute)
	if d := r.check(t); d.Status != store.IdentityVerified {
		t.Fatalf("status %s while the new record is missing, want still verified", d.Status)
	}
	if got := r.keys(t)[k.Selector].State; got != store.KeyPending {
		t.Fatalf("new key %s before its record is published, want pending", got)
	}
	r.sign(t, oldSel)

	// Step 3: published: the switch.
	r.z.SetTXT(rec.Name, rec.Value)
	r.clock.Advance(5 * time.Minute)
	switchAt := r.clock.Now()
	r.check(t)
	keys := r.keys(t)
	if nk, ok := keys[k.Selector]; !ok || nk.State != store.KeyActive || !nk.ActiveSince.Equal(switchAt) {
		t.Fatalf("new key after the switch: %+v, want active since %s", nk, switchAt)
	}
	if ok := keys[oldSel]; ok.State != store.KeyRetiring || !ok.RetireAt.Equal(switchAt.Add(7*24*time.Hour)) {
		t.Fatalf("old key after the switch: %s until %s, want retiring until 7 days on", ok.State, ok.RetireAt)
	}
	r.sign(t, k.Selector)
	r.expectVerified(t, inFlight, oldSel)

	// Step 4: the grace period: the old record must stay.
	r.clock.Advance(7*24*time.Hour - time.Minute)
	r.check(t)
	if _, ok := r.keys(t)[oldSel]; !ok {
		t.Fatal("the old key was retired before the end of its grace period")
	}
	r.expectVerified(t, inFlight, oldSel)
	r.sign(t, k.Selector)

	// Step 5: after it, the old key goes, and the operator is told.
	r.clock.Advance(time.Minute)
	r.check(t)
	if _, ok := r.keys(t)[oldSel]; ok {
		t.Fatal("the old key is still there after its grace period")
	}
	if !strings.Contains(r.log.String(), "its record TXT "+oldSel+"._domainkey.example.com can now be removed") {
		t.Errorf("log does not say the old record can be removed:\n%s", r.log)
	}
	r.z.Remove(oldSel+"._domainkey.example.com", dns.TypeTXT)
	r.clock.Advance(24 * time.Hour)
	if d := r.check(t); d.Status != store.IdentityVerified || d.FailedChecks != 0 {
		t.Fatalf("after the old record is removed: %s with %d failed checks, want verified", d.Status, d.FailedChecks)
	}
	r.sign(t, k.Selector)

	events := r.rotationEvents(t)
	if len(events) != 3 {
		t.Fatalf("%d rotation events, want 3 (started, switched, retired): %q", len(events), events)
	}
	for i, want := range []string{"started (test): the new key " + k.Selector, "the record of " + k.Selector + " is published",
		"the old key " + oldSel + " is retired"} {
		if !strings.Contains(events[i], want) {
			t.Errorf("event %d %q lacks %q", i, events[i], want)
		}
	}
}

// A record that never appears: the old key keeps signing, and once the new
// key has waited pending_timeout each check warns (and the checks slow to
// daily).
func TestRotationRecordNeverPublished(t *testing.T) {
	r := newRotationSetup(t)
	ctx := context.Background()
	oldSel := r.d.Keys[0].Selector
	k, rec, err := StartRotation(ctx, r.cfg, r.st, r.d.Name, store.AlgRSA, 0, "test")
	if err != nil {
		t.Fatal(err)
	}
	d, _ := r.st.Domain(ctx, r.d.Name)
	if !r.v.waitingRotation(d) {
		t.Error("a fresh rotation is not checked as often as a pending domain")
	}
	for _, step := range []time.Duration{5 * time.Minute, 40 * time.Hour, 32 * time.Hour, 24 * time.Hour} {
		r.clock.Advance(step)
		if d := r.check(t); d.Status != store.IdentityVerified {
			t.Fatalf("status %s, want verified: the old record is there", d.Status)
		}
		r.sign(t, oldSel)
	}
	if got := r.keys(t)[k.Selector].State; got != store.KeyPending {
		t.Fatalf("new key %s, want still pending", got)
	}
	if !strings.Contains(r.log.String(), "level=WARN msg=\"DKIM key rotation of example.com: the new record TXT "+rec.Name+" is still missing after") {
		t.Errorf("no warning that the new record is still missing:\n%s", r.log)
	}
	if d, _ := r.st.Domain(ctx, r.d.Name); r.v.waitingRotation(d) {
		t.Error("a rotation past pending_timeout is still checked every few minutes")
	}
	if events := r.rotationEvents(t); len(events) < 2 || !strings.Contains(events[len(events)-1], "still missing") {
		t.Errorf("rotation events %q, want the start and then warnings", events)
	}
}

// rotate_every: a key that has signed that long gets a successor; the
// rotation then runs as any other.
func TestScheduledRotation(t *testing.T) {
	r := newRotationSetup(t)
	ctx := context.Background()
	r.v.cfg.RotateEvery = 180 * 24 * time.Hour
	oldSel := r.d.Keys[0].Selector
	tried := map[string]time.Time{}

	r.clock.Advance(179 * 24 * time.Hour)
	next := r.v.runOnce(ctx, tried)
	if len(r.keys(t)) != 1 {
		t.Fatal("a rotation started before rotate_every")
	}
	if want := r.keys(t)[oldSel].ActiveSince.Add(180 * 24 * time.Hour); next.After(want) {
		t.Errorf("next pass at %s, after the scheduled rotation at %s", next, want)
	}
	r.clock.Advance(24 * time.Hour)
	r.v.runOnce(ctx, tried)
	keys := r.keys(t)
	if len(keys) != 2 {
		t.Fatalf("keys %v after rotate_every, want the old one and a pending one", keys)
	}
	var newSel string
	for sel, k := range keys {
		if k.State == store.KeyPending {
			newSel = sel
		}
	}
	if newSel == "" {
		t.Fatal("no pending key")
	}
	r.sign(t, oldSel)
	if ev := r.rotationEvents(t); len(ev) != 1 || !strings.Contains(ev[0], "scheduled") {
		t.Errorf("events %q, want one scheduled start", ev)
	}
	r.v.runOnce(ctx, tried)
	if len(r.keys(t)) != 2 {
		t.Error("a second rotation started while the first waits")
	}
	d, _ := r.st.Domain(ctx, r.d.Name)
	publishAll(t, r.z, r.cfg, d)
	r.clock.Advance(5 * time.Minute)
	r.v.runOnce(ctx, tried)
	r.sign(t, newSel)
}
