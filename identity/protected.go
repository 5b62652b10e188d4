package identity

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/sesame-mail/sesame/store"
)

// A verified address in someone else's domain (gmail.com, yahoo.com,
// outlook.com, ...) is proven to be the operator's, but mail From: it that
// Sesame sends carries neither a DKIM signature of that domain nor comes
// from its servers, so it fails DMARC everywhere. When the domain publishes
// p=quarantine or p=reject, every receiver that checks DMARC junks or
// refuses it: such an address may send only when the operator said so.

// ErrDMARCProtected is wrapped by a *DMARCError.
var ErrDMARCProtected = errors.New("identity: the domain's DMARC policy makes receivers refuse this sender's mail sent through Sesame")

// DMARCError says that address may not send through Sesame because its
// domain publishes DMARC policy quarantine or reject. MaySendAs returns it
// for a verified address the operator has not allowed, AddSender for one
// added without force.
type DMARCError struct {
	Address, Domain, Policy string
}

func (e *DMARCError) Error() string {
	what := "rejects"
	if e.Policy == "quarantine" {
		what = "puts in spam"
	}
	return fmt.Sprintf("%s publishes DMARC p=%s: every receiver that checks DMARC %s mail From: %s that %s's own servers did not send "+
		"(Sesame can neither sign for %s nor send from its servers); verify a domain of your own with sesame domain add and send from it, "+
		"or allow %s anyway with sesame address add %s --force",
		e.Domain, e.Policy, what, e.Address, e.Domain, e.Domain, e.Address, e.Address)
}

func (e *DMARCError) Unwrap() error { return ErrDMARCProtected }

// dmarcProtected reports whether a DMARC policy makes receivers junk or
// refuse mail that fails DMARC.
func dmarcProtected(policy string) bool { return policy == "quarantine" || policy == "reject" }

// DMARCLookup finds the DMARC policy of a domain (a *Checker does).
type DMARCLookup interface {
	// DMARCPolicy returns "none", "quarantine", "reject", or "" when no
	// policy applies; an error when the lookup failed.
	DMARCPolicy(ctx context.Context, domain string) (string, error)
}

// AddSender is Add for an address that is to send through Sesame (sesame
// address add): it looks up the DMARC policy of the address's domain first
// and records it on the address. When that policy is quarantine or reject,
// the address is not added and the error is a *DMARCError, unless force,
// which adds it and records the operator's choice; for an address verified
// already, force only records that choice, so it may send again. A lookup
// that fails leaves the policy unknown (the Verifier looks again) and adds
// the address: the error is about DNS, not about the address.
func (a *AddressVerifier) AddSender(ctx context.Context, address string, dmarc DMARCLookup, force bool) (store.Address, string, error) {
	addr, err := normalizeAddress(address)
	if err != nil {
		return store.Address{}, "", err
	}
	domain := store.AddressDomain(addr)
	policy, lookupErr := dmarc.DMARCPolicy(ctx, domain)
	checked := a.cfg.Now()
	if lookupErr != nil {
		policy, checked = "", time.Time{}
		a.log.Warn("the DMARC policy of a new sender address's domain could not be looked up; it is looked up again later",
			"address", addr, "err", lookupErr)
	}
	cur, err := a.addrs.Address(ctx, addr)
	exists := err == nil
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return store.Address{}, "", fmt.Errorf("identity: add %s: %w", addr, err)
	}
	if exists && lookupErr == nil {
		if err := a.addrs.SetAddressDMARC(ctx, addr, policy, checked); err != nil {
			return store.Address{}, "", fmt.Errorf("identity: add %s: %w", addr, err)
		}
		cur.DMARCPolicy, cur.DMARCCheckedAt = policy, checked
	}
	if dmarcProtected(policy) && !force {
		return cur, "", &DMARCError{Address: addr, Domain: domain, Policy: policy}
	}
	if exists && force {
		if err := a.addrs.SetAddressForced(ctx, addr, true); err != nil {
			return store.Address{}, "", fmt.Errorf("identity: add %s: %w", addr, err)
		}
		cur.Forced = true
		if cur.Status == store.IdentityVerified {
			a.log.Info("sender address allowed whatever its domain's DMARC policy", "address", addr, "dmarc_policy", policy)
			return cur, "", nil
		}
	}
	if !exists {
		// Created here with what is known, so the address never exists
		// without its policy; Add then finds it pending and links it.
		n := store.Address{Address: addr, Status: store.IdentityPending, CreatedAt: a.cfg.Now(),
			DMARCPolicy: policy, DMARCCheckedAt: checked, Forced: force}
		if err := a.addrs.CreateAddress(ctx, n); err != nil && !errors.Is(err, store.ErrExists) {
			return store.Address{}, "", fmt.Errorf("identity: add %s: %w", addr, err)
		}
	}
	return a.Add(ctx, addr)
}

// refreshAddresses looks up again the DMARC policy of every address
// identity not looked up for VerifiedCheckInterval (or never), once per
// domain, and records it; tried holds when an address was last tried. It
// returns when the next one is due (zero if none is waiting).
func (v *Verifier) refreshAddresses(ctx context.Context, tried map[string]time.Time) time.Time {
	addrs, err := v.domains.ListAddresses(ctx)
	if err != nil {
		if ctx.Err() == nil {
			v.log.Error("identity: cannot list sender addresses to look up their domains' DMARC policies; trying again in a minute", "err", err)
		}
		return time.Time{}
	}
	type result struct {
		policy string
		err    error
	}
	policies := map[string]result{} // by domain, for this run
	var next time.Time
	for _, a := range addrs {
		key := a.Address
		due := a.DMARCCheckedAt.Add(v.cfg.VerifiedCheckInterval)
		if a.DMARCCheckedAt.IsZero() {
			due = time.Time{}
		}
		// A lookup that failed is tried again after the shorter interval.
		if t := tried[key]; !t.IsZero() && t.After(a.DMARCCheckedAt) {
			due = later(due, t.Add(v.cfg.PendingCheckInterval))
		}
		if now := v.cfg.Now(); now.Before(due) {
			next = earliest(next, due)
			continue
		}
		if ctx.Err() != nil {
			return time.Time{}
		}
		domain := store.AddressDomain(a.Address)
		r, seen := policies[domain]
		if !seen {
			r.policy, r.err = v.checker.DMARCPolicy(ctx, domain)
			policies[domain] = r
		}
		now := v.cfg.Now()
		tried[key] = now
		if r.err != nil {
			v.log.Warn("identity: looking up the DMARC policy of a sender address's domain failed; trying again later",
				"address", a.Address, "err", r.err)
			next = earliest(next, now.Add(v.cfg.PendingCheckInterval))
			continue
		}
		if err := v.domains.SetAddressDMARC(ctx, a.Address, r.policy, now); err != nil {
			if ctx.Err() == nil && !errors.Is(err, store.ErrNotFound) {
				v.log.Error("identity: recording the DMARC policy of a sender address failed", "address", a.Address, "err", err)
			}
			continue
		}
		if dmarcProtected(r.policy) && !dmarcProtected(a.DMARCPolicy) && !a.Forced && a.Status == store.IdentityVerified {
			v.log.Warn(fmt.Sprintf("sender address %s: %s; mail from it is refused from now on", a.Address,
				(&DMARCError{Address: a.Address, Domain: domain, Policy: r.policy}).Error()),
				"address", a.Address, "dmarc_policy", r.policy)
		}
		next = earliest(next, now.Add(v.cfg.VerifiedCheckInterval))
	}
	// Forget addresses that are gone.
	for key := range tried {
		if !slices.ContainsFunc(addrs, func(a store.Address) bool { return a.Address == key }) {
			delete(tried, key)
		}
	}
	return next
}

// earliest returns the earlier of two times, a zero one counting as none.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
