package identity

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/sesame-mail/sesame/store"
)

// IdentityStore is what the Authorizer reads.
type IdentityStore interface {
	// DomainStatusOf returns the domain without its keys.
	DomainStatusOf(ctx context.Context, name string) (store.Domain, error)
	Address(ctx context.Context, address string) (store.Address, error)
}

// Authorizer says who may send as whom. It reads the store on every call,
// so a domain that fails verification stops being usable at once, in every
// process.
type Authorizer struct {
	ids  IdentityStore
	opts AuthorizerOptions
}

// AuthorizerOptions are the operator's exceptions to the Authorizer's rules.
type AuthorizerOptions struct {
	// AllowDMARCProtected lets every verified address send, whatever the
	// DMARC policy of its domain ([identity]
	// allow_dmarc_protected_addresses).
	AllowDMARCProtected bool
}

// NewAuthorizer returns an Authorizer that reads identities from ids.
func NewAuthorizer(ids IdentityStore) *Authorizer {
	return NewAuthorizerWith(ids, AuthorizerOptions{})
}

// NewAuthorizerWith is NewAuthorizer with the operator's exceptions.
func NewAuthorizerWith(ids IdentityStore, opts AuthorizerOptions) *Authorizer {
	return &Authorizer{ids: ids, opts: opts}
}

// MaySendAs reports whether cred may use address as a sender (envelope,
// From, Sender or a Resent- field): the address, or its domain, is a
// verified identity, and cred's Allowed list is empty or names the address
// or its domain. Comparisons ignore case.
//
// A verified address whose domain is not verified but publishes DMARC
// p=quarantine or p=reject (as recorded by AddSender and the Verifier: no
// DNS lookup here) may not send unless the operator allowed it: the answer
// is then false with a *DMARCError, a refusal that says why, not a failure.
// Any other error means the store could not answer.
func (a *Authorizer) MaySendAs(ctx context.Context, cred store.Credential, address string) (bool, error) {
	addr, domain, ok := canonical(address)
	if !ok {
		return false, nil
	}
	if len(cred.Allowed) > 0 && !allows(cred.Allowed, addr, domain) {
		return false, nil
	}
	ok, ad, err := a.verifiedAs(ctx, addr, domain)
	if !ok || err != nil || ad == nil {
		return ok, err
	}
	if dmarcProtected(ad.DMARCPolicy) && !ad.Forced && !a.opts.AllowDMARCProtected {
		return false, &DMARCError{Address: addr, Domain: domain, Policy: ad.DMARCPolicy}
	}
	return true, nil
}

// VerifiedRecipient reports whether address is a verified address or in a
// verified domain: the only recipients a sandboxed credential may send to.
func (a *Authorizer) VerifiedRecipient(ctx context.Context, address string) (bool, error) {
	addr, domain, ok := canonical(address)
	if !ok {
		return false, nil
	}
	return a.verified(ctx, addr, domain)
}

// verified reports whether addr is a verified identity or in one.
func (a *Authorizer) verified(ctx context.Context, addr, domain string) (bool, error) {
	ok, _, err := a.verifiedAs(ctx, addr, domain)
	return ok, err
}

// verifiedAs is verified, and returns the address identity when that is
// what is verified (nil when the domain is). It looks at the domain first:
// most identities are domains.
func (a *Authorizer) verifiedAs(ctx context.Context, addr, domain string) (bool, *store.Address, error) {
	d, err := a.ids.DomainStatusOf(ctx, domain)
	switch {
	case err == nil && d.Status == store.IdentityVerified:
		return true, nil, nil
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return false, nil, fmt.Errorf("identity: is %s verified: %w", domain, err)
	}
	ad, err := a.ids.Address(ctx, addr)
	switch {
	case err == nil && ad.Status == store.IdentityVerified:
		return true, &ad, nil
	case err == nil, errors.Is(err, store.ErrNotFound):
		return false, nil, nil
	}
	return false, nil, fmt.Errorf("identity: is %s verified: %w", addr, err)
}

// allows reports whether the list names addr or domain.
func allows(allowed []string, addr, domain string) bool {
	for _, id := range allowed {
		id = strings.TrimSuffix(strings.TrimSpace(id), ".")
		if strings.EqualFold(id, addr) || strings.EqualFold(id, domain) {
			return true
		}
		if !strings.Contains(id, "@") && !isASCII(id) { // a U-label domain
			if d, ok := normalizeDomain(id); ok && d == domain {
				return true
			}
		}
	}
	return false
}

// canonical returns address as identities are stored (lower case, domain
// an A-label) and its domain; false if it has no domain.
func canonical(address string) (addr, domain string, ok bool) {
	at := strings.LastIndexByte(address, '@')
	if at <= 0 || at == len(address)-1 {
		return "", "", false
	}
	domain = strings.ToLower(strings.TrimSuffix(address[at+1:], "."))
	if !isASCII(domain) {
		if domain, ok = normalizeDomain(domain); !ok {
			return "", "", false
		}
	}
	return strings.ToLower(address[:at]) + "@" + domain, domain, true
}

// MayUse reports whether cred's Allowed list lets it use the identity id
// (an address or a domain), verified or not: the list is empty, or names
// the identity (an address also by its domain). The SES API lets a
// credential see and manage only the identities it may use; sending still
// asks MaySendAs.
func MayUse(cred store.Credential, id string) bool {
	if len(cred.Allowed) == 0 {
		return true
	}
	if strings.Contains(id, "@") {
		addr, domain, ok := canonical(id)
		return ok && allows(cred.Allowed, addr, domain)
	}
	d, ok := normalizeDomain(strings.ToLower(id))
	return ok && allows(cred.Allowed, "", d)
}
