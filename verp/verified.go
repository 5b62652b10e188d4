package verp

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/sesame-mail/sesame/store"
)

// Domains reads a sending domain's verification status (store.SQLite has
// it).
type Domains interface {
	// DomainStatusOf returns the domain without its keys, or an error
	// wrapping store.ErrNotFound.
	DomainStatusOf(ctx context.Context, name string) (store.Domain, error)
}

// statusTTL is how long a domain's status is believed: a lookup per
// recipient would cost a store read each, and a domain that stops being
// verified costs at most this long of return paths whose bounces still come
// back (its bounce subdomain was published).
const statusTTL = time.Minute

// ForVerifiedDomains returns the return path each recipient of a message
// gets (what relay.Config.ReturnPath asks for): a signed return path under
// the sender's domain when that domain is verified, whose MX the operator
// was told to point at Sesame; otherwise "", so the message keeps its
// sender (a verified address in someone else's domain: bounce.THATDOMAIN is
// not Sesame's). Statuses are cached for a minute; a status that cannot be
// read counts as not verified and is asked again for the next recipient.
func (s *Signer) ForVerifiedDomains(domains Domains, now func() time.Time) func(sender, queueID, rcpt string) string {
	type entry struct {
		ok bool
		at time.Time
	}
	var mu sync.Mutex
	cache := map[string]entry{}
	verified := func(domain string) bool {
		t := now()
		mu.Lock()
		e, found := cache[domain]
		mu.Unlock()
		if found && t.Sub(e.at) < statusTTL {
			return e.ok
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		d, err := domains.DomainStatusOf(ctx, domain)
		ok := err == nil && d.Status == store.IdentityVerified
		if err == nil || errors.Is(err, store.ErrNotFound) {
			mu.Lock()
			if len(cache) > 10000 {
				clear(cache) // senders' domains are few; this only bounds a flood of strangers
			}
			cache[domain] = entry{ok, t}
			mu.Unlock()
		}
		return ok
	}
	return func(sender, queueID, rcpt string) string {
		domain := store.AddressDomain(sender)
		if !verified(domain) {
			return ""
		}
		return s.ReturnPath(domain, queueID, rcpt)
	}
}
