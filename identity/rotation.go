package identity

// DKIM key rotation without a gap. A domain may publish several selectors
// at once (RFC 6376 §3.1), so a key is replaced in three steps, each a log
// line and a dkim_rotation event:
//
//  1. StartRotation (sesame domain rotate, or the Verifier when a key has
//     signed for RotateEvery) makes a new key under a new selector. It is
//     pending: it does not sign, and the operator publishes its record.
//  2. The Verifier checks a domain with a pending key as often as a pending
//     domain. Once the new record is found, it switches: the new key is
//     active and signs; the key it replaces (the active one of the same
//     algorithm) is retiring: it signs no more, but its record must stay
//     published for RotationGrace (7 days), since mail signed with it is
//     still in queues and receivers check signatures again later
//     (forwarding, a user's "report spam").
//  3. After the grace period the Verifier deletes the old key and says its
//     record can be removed.
//
// A record that does not appear leaves the old key signing. Once the new key
// has waited PendingTimeout, every check of the domain (daily from then on)
// warns.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/sesame-mail/sesame/dkim"
	"github.com/sesame-mail/sesame/store"
)

// KeyStore is what rotations read and write.
type KeyStore interface {
	Domain(ctx context.Context, name string) (store.Domain, error)
	// AddDKIMKey stores a new key of a domain (store.ErrExists when its
	// selector is taken).
	AddDKIMKey(ctx context.Context, domain string, k store.DKIMKey) error
	// SetDKIMKeyStates writes the state fields of the given keys in one
	// transaction.
	SetDKIMKeyStates(ctx context.Context, domain string, keys []store.DKIMKey) error
	DeleteDKIMKey(ctx context.Context, domain, selector string) error
	RecordEvent(ctx context.Context, e store.Event) error
}

// StartRotation makes a new key of algorithm alg (store.AlgRSA when "")
// for domain name, to replace its active key of that algorithm, and stores
// it pending. bits is the size of an RSA key (0: that of the key replaced).
// why says who asked ("sesame domain rotate", "scheduled"). It returns the
// key and the record to publish.
func StartRotation(ctx context.Context, cfg Config, keys KeyStore, name, alg string, bits int, why string) (store.DKIMKey, Record, error) {
	cfg = cfg.withDefaults()
	if alg == "" {
		alg = store.AlgRSA
	}
	d, err := keys.Domain(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return store.DKIMKey{}, Record{}, fmt.Errorf("identity: no domain %s; add it with sesame domain add %s: %w", name, name, err)
	}
	if err != nil {
		return store.DKIMKey{}, Record{}, fmt.Errorf("identity: rotate the key of %s: %w", name, err)
	}
	var old []store.DKIMKey
	for _, k := range d.Keys {
		switch {
		case k.Algorithm != alg:
		case k.State == store.KeyPending:
			return store.DKIMKey{}, Record{}, fmt.Errorf("identity: a rotation of the %s key of %s is under way: its new key %s waits for TXT %s "+
				"(sesame domain show %s prints it); publish that first", alg, name, k.Selector, selectorName(k, name), name)
		case dkimSigns(k):
			old = append(old, k)
		}
	}
	if len(old) == 0 {
		return store.DKIMKey{}, Record{}, fmt.Errorf("identity: %s has no %s key that signs, so none to replace; its keys are %s",
			name, alg, strings.Join(selectors(d.Keys), ", "))
	}
	if alg == store.AlgRSA && bits == 0 {
		bits = dkim.KeySize(old[0])
		if !slices.Contains(dkim.RSASizes, bits) {
			bits = dkim.RSASizes[0]
		}
	}
	priv, err := dkim.GenerateKeySize(alg, bits)
	if err != nil {
		return store.DKIMKey{}, Record{}, err
	}
	now := cfg.Now()
	k := store.DKIMKey{Selector: dkim.NewSelector(alg, now, selectors(d.Keys)), Algorithm: alg, PrivateKey: priv,
		CreatedAt: now, State: store.KeyPending}
	rec, err := keyRecord(d.Name, k)
	if err != nil {
		return store.DKIMKey{}, Record{}, err
	}
	if err := keys.AddDKIMKey(ctx, name, k); err != nil {
		return store.DKIMKey{}, Record{}, fmt.Errorf("identity: rotate the key of %s: %w", name, err)
	}
	size := alg
	if alg == store.AlgRSA {
		size = fmt.Sprintf("rsa-%d", bits)
	}
	step(ctx, cfg, keys, now, "started", name,
		fmt.Sprintf("DKIM key rotation of %s started (%s): the new key %s (%s) waits for its record TXT %s; mail is signed with %s until it is published",
			name, why, k.Selector, size, rec.Name, strings.Join(selectors(old), ", ")),
		"selector", k.Selector, "replaces", strings.Join(selectors(old), ","), "why", why)
	return k, rec, nil
}

// advanceRotation takes d's rotations a step on after a check found
// findings: a pending key whose record is published replaces the key of
// its algorithm; a retiring key past its grace period is deleted. It
// returns d's keys as they are now.
func (v *Verifier) advanceRotation(ctx context.Context, d store.Domain, findings []Finding) ([]store.DKIMKey, error) {
	now := v.cfg.Now()
	status := map[string]Finding{}
	for _, f := range findings {
		if f.kind == kindDKIM {
			status[f.Name] = f
		}
	}
	keys := slices.Clone(d.Keys)
	for i, k := range keys {
		if k.State != store.KeyPending {
			continue
		}
		name := selectorName(k, d.Name)
		f := status[name]
		if f.Status != StatusOK {
			waited := now.Sub(k.CreatedAt)
			if waited < v.cfg.PendingTimeout {
				v.log.Info(fmt.Sprintf("DKIM key rotation of %s: the new record TXT %s is %s; %s signs until it is published",
					d.Name, name, f.Status, strings.Join(activeSelectors(keys, k.Algorithm), ", ")),
					"domain", d.Name, "selector", k.Selector, "record", f.Status)
				continue
			}
			step(ctx, v.cfg, v.domains, now, "waiting", d.Name,
				fmt.Sprintf("DKIM key rotation of %s: the new record TXT %s is still %s after %s; mail is still signed with %s. Publish it: %s",
					d.Name, name, f.Status, waited.Round(time.Minute), strings.Join(activeSelectors(keys, k.Algorithm), ", "), f.Value),
				"selector", k.Selector, "record", f.Status, "waited", waited.Round(time.Minute))
			continue
		}
		// Published: the new key signs from now on, and the one it
		// replaces stays published for the grace period.
		keys[i].State, keys[i].ActiveSince = store.KeyActive, now
		changed := []store.DKIMKey{keys[i]}
		var retired []string
		for j, o := range keys {
			if j != i && o.Algorithm == k.Algorithm && dkimSigns(o) {
				keys[j].State, keys[j].RetireAt = store.KeyRetiring, now.Add(v.cfg.RotationGrace)
				changed = append(changed, keys[j])
				retired = append(retired, "TXT "+selectorName(o, d.Name))
			}
		}
		if err := v.domains.SetDKIMKeyStates(ctx, d.Name, changed); err != nil {
			return d.Keys, fmt.Errorf("identity: switch %s to its new DKIM key %s: %w", d.Name, k.Selector, err)
		}
		step(ctx, v.cfg, v.domains, now, "switched", d.Name,
			fmt.Sprintf("DKIM key rotation of %s: the record of %s is published; mail is signed with it from now on. Keep %s published until %s "+
				"(mail signed with the old key is still on its way), then it can be removed",
				d.Name, k.Selector, strings.Join(retired, " and "), now.Add(v.cfg.RotationGrace).UTC().Format(time.DateTime+" MST")),
			"selector", k.Selector, "retire_at", now.Add(v.cfg.RotationGrace))
	}
	kept := keys[:0]
	for _, k := range keys {
		if k.State != store.KeyRetiring || now.Before(k.RetireAt) {
			kept = append(kept, k)
			continue
		}
		if err := v.domains.DeleteDKIMKey(ctx, d.Name, k.Selector); err != nil && !errors.Is(err, store.ErrNotFound) {
			return kept, fmt.Errorf("identity: retire DKIM key %s of %s: %w", k.Selector, d.Name, err)
		}
		step(ctx, v.cfg, v.domains, now, "retired", d.Name,
			fmt.Sprintf("DKIM key rotation of %s done: the old key %s is retired; its record TXT %s can now be removed from DNS",
				d.Name, k.Selector, selectorName(k, d.Name)),
			"selector", k.Selector)
	}
	return kept, nil
}

// rotationDue is when d's keys next need the Verifier: the first retiring
// key's end of grace, or the first scheduled rotation (RotateEvery after a
// key began to sign, for a verified domain); zero when nothing is due.
func (v *Verifier) rotationDue(d store.Domain) time.Time {
	var due time.Time
	earlier := func(t time.Time) {
		if due.IsZero() || t.Before(due) {
			due = t
		}
	}
	for _, k := range d.Keys {
		switch {
		case k.State == store.KeyRetiring:
			earlier(k.RetireAt)
		case dkimSigns(k) && v.cfg.RotateEvery > 0 && d.Status == store.IdentityVerified && !rotating(d, k.Algorithm):
			earlier(k.ActiveSince.Add(v.cfg.RotateEvery))
		}
	}
	return due
}

// waitingRotation reports whether d has a pending key that waited less than
// PendingTimeout: such a domain is checked as often as a pending one.
func (v *Verifier) waitingRotation(d store.Domain) bool {
	for _, k := range d.Keys {
		if k.State == store.KeyPending && v.cfg.Now().Sub(k.CreatedAt) < v.cfg.PendingTimeout {
			return true
		}
	}
	return false
}

// startScheduled starts the rotations RotateEvery asks for: each signing
// key of a verified domain that has signed that long, unless a rotation of
// its algorithm is under way.
func (v *Verifier) startScheduled(ctx context.Context, d store.Domain) {
	if v.cfg.RotateEvery <= 0 || d.Status != store.IdentityVerified {
		return
	}
	now := v.cfg.Now()
	for _, k := range d.Keys {
		if !dkimSigns(k) || rotating(d, k.Algorithm) || now.Before(k.ActiveSince.Add(v.cfg.RotateEvery)) {
			continue
		}
		if _, _, err := StartRotation(ctx, v.cfg, v.domains, d.Name, k.Algorithm, 0,
			fmt.Sprintf("scheduled: %s signed for %s, dkim.rotate_every", k.Selector, v.cfg.RotateEvery)); err != nil {
			v.log.Error("identity: starting a scheduled DKIM key rotation failed; trying again at the next check", "domain", d.Name, "err", err)
		}
		return // one rotation per pass: the domain is read afresh next time
	}
}

// step logs one step of a rotation and records it as an event (what
// failed to be recorded is logged: the step itself is done).
func step(ctx context.Context, cfg Config, keys KeyStore, now time.Time, what, domain, msg string, args ...any) {
	level := cfg.Logger.Info
	if what == "waiting" {
		level = cfg.Logger.Warn
	}
	level(msg, append([]any{"domain", domain, "rotation", what}, args...)...)
	if err := keys.RecordEvent(ctx, store.Event{At: now, Type: store.EventDKIMRotation, Reply: msg}); err != nil {
		cfg.Logger.Error("identity: recording a DKIM rotation event failed", "domain", domain, "err", err)
	}
}

// keyRecord is the TXT record of key k of domain, required only while the
// key signs: a pending key's record is what the rotation waits for, a
// retiring key's stays published until its grace period ends.
func keyRecord(domain string, k store.DKIMKey) (Record, error) {
	r, err := dkim.DNSRecord(domain, k)
	if err != nil {
		return Record{}, fmt.Errorf("identity: records for %s: %w", domain, err)
	}
	rec := Record{Type: r.Type, Name: r.Name, Value: r.Value, kind: kindDKIM}
	switch k.State {
	case store.KeyPending:
		rec.Purpose = "DKIM public key of selector " + k.Selector + ", the new key of a rotation: publish it; Sesame signs with it once it is found, " +
			"and until then with the key it replaces"
	case store.KeyRetiring:
		rec.Purpose = "DKIM public key of selector " + k.Selector + ", replaced by a rotation: it signs no more, but keep it published until " +
			k.RetireAt.UTC().Format(time.DateTime+" MST") + " for mail signed with it that is still on its way; then remove it"
	default:
		rec.Required = true
		rec.Purpose = "DKIM public key of selector " + k.Selector + " (RFC 6376): receivers check Sesame's signatures " +
			"with it, and Sesame sends mail from " + domain + " only once it is published"
	}
	return rec, nil
}

// dkimSigns reports whether k signs (is active).
func dkimSigns(k store.DKIMKey) bool { return len(dkim.Signing([]store.DKIMKey{k})) == 1 }

// rotating reports whether d has a pending key of algorithm alg.
func rotating(d store.Domain, alg string) bool {
	return slices.ContainsFunc(d.Keys, func(k store.DKIMKey) bool { return k.State == store.KeyPending && k.Algorithm == alg })
}

func activeSelectors(keys []store.DKIMKey, alg string) []string {
	var out []string
	for _, k := range keys {
		if k.Algorithm == alg && dkimSigns(k) {
			out = append(out, k.Selector)
		}
	}
	return out
}

func selectors(keys []store.DKIMKey) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.Selector
	}
	return out
}

func selectorName(k store.DKIMKey, domain string) string { return k.Selector + "._domainkey." + domain }
