package account

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/sesame-mail/sesame/store"
)

// ErrInvalidCredentials is returned by Authenticate for a wrong username or a
// wrong password alike, so a client cannot tell which one it got wrong.
var ErrInvalidCredentials = errors.New("invalid credentials")

// ErrUnknownUsername and ErrWrongPassword are the two ErrInvalidCredentials
// that Authenticate returns (errors.Is matches either with it). The client
// gets the same reply for both; they let the caller keep an unknown
// username, which may well be a password typed in the wrong field, out of
// its logs.
var (
	ErrUnknownUsername = fmt.Errorf("%w: unknown username", ErrInvalidCredentials)
	ErrWrongPassword   = fmt.Errorf("%w: wrong password", ErrInvalidCredentials)
)

// defaultCacheEntries bounds the login cache; an entry is about 150 bytes.
const defaultCacheEntries = 10000

// CredentialLookup is what the Authenticator needs from the store.
type CredentialLookup interface {
	// CredentialByUsername returns the credential whose Username is
	// username, or an error wrapping store.ErrNotFound.
	CredentialByUsername(ctx context.Context, username string) (store.Credential, error)
	// TouchCredential records that the credential called name logged in.
	TouchCredential(ctx context.Context, name string, usedAt time.Time) error
}

// Authenticator verifies SMTP logins. It is safe for concurrent use.
//
// Clients that log in once per message (WordPress does) would otherwise pay
// an argon2 computation, 19 MiB and tens of milliseconds, per message. So the
// Authenticator remembers recent successful logins for a short while: per
// username, the PasswordHash the store had and an HMAC of the password under
// a key that lives only in this process. A later login skips argon2 only if
// the store still holds that same PasswordHash and the password gives the
// same HMAC. Because the store is read on every login, a rotation or deletion
// done by another process applies at once.
type Authenticator struct {
	creds   CredentialLookup
	now     func() time.Time
	ttl     time.Duration
	macKey  []byte
	dummy   string        // hash checked for unknown usernames, so they cost the same
	slots   chan struct{} // bounds concurrent argon2 computations and so their memory
	check   func(hash, password string) (bool, error)
	maxSize int

	mu    sync.Mutex
	cache map[string]cacheEntry // by username
}

type cacheEntry struct {
	passwordHash string
	mac          [sha256.Size]byte
	expires      time.Time
}

// NewAuthenticator returns an Authenticator that looks credentials up in creds
// and reads the time from now. Successful logins are remembered for cacheTTL;
// zero or less disables the cache.
func NewAuthenticator(creds CredentialLookup, now func() time.Time, cacheTTL time.Duration) *Authenticator {
	macKey := make([]byte, 32)
	rand.Read(macKey) // never returns an error since Go 1.24
	dummySalt := make([]byte, saltLen)
	rand.Read(dummySalt)
	return &Authenticator{
		creds:  creds,
		now:    now,
		ttl:    cacheTTL,
		macKey: macKey,
		// Same parameters as HashPassword, so a miss costs what a hit on a
		// real credential costs.
		dummy:   hashWith(NewPassword(), dummySalt, argonParams{memory: argonMemory, time: argonTime, threads: argonThreads, keyLen: keyLen}),
		slots:   make(chan struct{}, runtime.NumCPU()),
		check:   CheckPassword,
		maxSize: defaultCacheEntries,
		cache:   make(map[string]cacheEntry),
	}
}

// Authenticate returns the credential for username and password. A wrong
// username or password gives ErrInvalidCredentials; any other error means the
// store or the context failed, and the client should try again later.
func (a *Authenticator) Authenticate(ctx context.Context, username, password string) (store.Credential, error) {
	cred, err := a.creds.CredentialByUsername(ctx, username)
	if errors.Is(err, store.ErrNotFound) {
		a.forget(username)
		// Spend the same work as for a known user, so response times do not
		// reveal which usernames exist.
		if _, err := a.verify(ctx, a.dummy, password); err != nil {
			return store.Credential{}, err
		}
		return store.Credential{}, ErrUnknownUsername
	}
	if err != nil {
		return store.Credential{}, fmt.Errorf("account: look up credential: %w", err)
	}

	mac := a.mac(password)
	if a.cached(username, cred.PasswordHash, mac) {
		return cred, nil
	}

	ok, err := a.verifyUnlessCached(ctx, cred.PasswordHash, password,
		func() bool { return a.cached(username, cred.PasswordHash, mac) },
		func() {
			now := a.now()
			a.remember(username, cacheEntry{passwordHash: cred.PasswordHash, mac: mac, expires: now.Add(a.ttl)}, now)
		})
	if err != nil {
		return store.Credential{}, fmt.Errorf("account: credential %q: %w", cred.Name, err)
	}
	if !ok {
		return store.Credential{}, ErrWrongPassword
	}
	now := a.now()
	// Last-used time is informational; failing to record it must not turn
	// away a client that proved its password.
	_ = a.creds.TouchCredential(ctx, cred.Name, now)
	return cred, nil
}

// verify runs one argon2 check, waiting for a free slot first.
func (a *Authenticator) verify(ctx context.Context, hash, password string) (bool, error) {
	return a.verifyUnlessCached(ctx, hash, password, nil, nil)
}

// verifyUnlessCached is verify, except that once it has a slot it first asks
// cached (if not nil) whether another login proved the same password while
// this one waited, and then skips argon2; after a successful check it calls
// remember (if not nil) before giving the slot up, so the next login to get
// the slot finds it. When many connections log in with one credential at
// once (a pool of app workers after a restart of either side), one
// computation per free slot is done instead of one per connection.
func (a *Authenticator) verifyUnlessCached(ctx context.Context, hash, password string, cached func() bool, remember func()) (bool, error) {
	select {
	case a.slots <- struct{}{}:
	case <-ctx.Done():
		return false, fmt.Errorf("account: wait to verify password: %w", ctx.Err())
	}
	defer func() { <-a.slots }()
	if cached != nil && cached() {
		return true, nil
	}
	ok, err := a.check(hash, password)
	if ok && err == nil && remember != nil {
		remember()
	}
	return ok, err
}

func (a *Authenticator) mac(password string) [sha256.Size]byte {
	h := hmac.New(sha256.New, a.macKey)
	h.Write([]byte(password))
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

// cached reports whether username logged in with this password (by MAC)
// while the store held passwordHash, recently enough. Stale entries go.
func (a *Authenticator) cached(username, passwordHash string, mac [sha256.Size]byte) bool {
	if a.ttl <= 0 {
		return false
	}
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	e, ok := a.cache[username]
	if !ok {
		return false
	}
	if !now.Before(e.expires) || e.passwordHash != passwordHash {
		delete(a.cache, username)
		return false
	}
	// A wrong password leaves the entry alone: it is still true that the
	// right one was verified against this hash.
	return hmac.Equal(e.mac[:], mac[:])
}

// remember stores e, making room when the cache is full: first by dropping
// expired entries, then the entry that expires first (the oldest, as every
// entry lives for the same ttl). The scan is linear, but it runs only after
// an argon2 computation, which costs far more.
func (a *Authenticator) remember(username string, e cacheEntry, now time.Time) {
	if a.ttl <= 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.cache[username]; !ok && len(a.cache) >= a.maxSize {
		var oldest string
		var oldestExp time.Time
		found := false
		for u, c := range a.cache {
			if !now.Before(c.expires) {
				delete(a.cache, u)
				continue
			}
			if !found || c.expires.Before(oldestExp) {
				oldest, oldestExp, found = u, c.expires, true
			}
		}
		if len(a.cache) >= a.maxSize {
			delete(a.cache, oldest)
		}
	}
	a.cache[username] = e
}

func (a *Authenticator) forget(username string) {
	a.mu.Lock()
	delete(a.cache, username)
	a.mu.Unlock()
}
