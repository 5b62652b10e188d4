package account

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sesame-mail/sesame/store"
	"github.com/sesame-mail/sesame/testkit"
)

// fakeCreds is an in-memory CredentialLookup, standing in for the store
// (possibly in another process) at the interface boundary.
type fakeCreds struct {
	mu        sync.Mutex
	byUser    map[string]store.Credential
	lookupErr error
	touchErr  error
	touched   map[string]time.Time
	lookups   int
}

func newFakeCreds() *fakeCreds {
	return &fakeCreds{byUser: make(map[string]store.Credential), touched: make(map[string]time.Time)}
}

func (f *fakeCreds) CredentialByUsername(_ context.Context, username string) (store.Credential, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lookups++
	if f.lookupErr != nil {
		return store.Credential{}, f.lookupErr
	}
	c, ok := f.byUser[username]
	if !ok {
		return store.Credential{}, fmt.Errorf("credential by username: %w", store.ErrNotFound)
	}
	return c, nil
}

func (f *fakeCreds) TouchCredential(_ context.Context, name string, usedAt time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.touched[name] = usedAt
	return f.touchErr
}

// add creates a credential with a cheap argon2id hash of password: real
// verification, without 19 MiB per check slowing the tests down.
func (f *fakeCreds) add(t testing.TB, name, username, password string) {
	t.Helper()
	f.set(name, username, hashWith(password, []byte("test salt"), argonParams{memory: 64, time: 1, threads: 1, keyLen: 32}))
}

func (f *fakeCreds) set(name, username, passwordHash string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.byUser[username] = store.Credential{Name: name, Username: username, PasswordHash: passwordHash}
}

func (f *fakeCreds) remove(username string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.byUser, username)
}

func (f *fakeCreds) touchCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.touched)
}

// newTestAuth returns an Authenticator whose argon2 checks are counted.
func newTestAuth(creds CredentialLookup, clk *testkit.Clock, ttl time.Duration) (*Authenticator, *atomic.Int64) {
	a := NewAuthenticator(creds, clk.Now, ttl)
	var n atomic.Int64
	a.check = func(hash, password string) (bool, error) {
		n.Add(1)
		return CheckPassword(hash, password)
	}
	return a, &n
}

func mustLogin(t *testing.T, a *Authenticator, username, password, wantName string) {
	t.Helper()
	c, err := a.Authenticate(context.Background(), username, password)
	if err != nil {
		t.Fatalf("Authenticate(%s) = %v, want success", username, err)
	}
	if c.Name != wantName {
		t.Fatalf("Authenticate(%s) returned credential %q, want %q", username, c.Name, wantName)
	}
}

func mustFail(t *testing.T, a *Authenticator, username, password string) {
	t.Helper()
	_, err := a.Authenticate(context.Background(), username, password)
	if !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("Authenticate(%s) = %v, want ErrInvalidCredentials", username, err)
	}
}

func TestAuthenticateCacheHit(t *testing.T) {
	creds := newFakeCreds()
	creds.add(t, "shop", "SMUSER", "pw")
	clk := testkit.NewClock(t)
	a, checks := newTestAuth(creds, clk, 5*time.Minute)

	mustLogin(t, a, "SMUSER", "pw", "shop")
	if got := creds.touched["shop"]; !got.Equal(clk.Now()) {
		t.Errorf("last used = %v, want %v", got, clk.Now())
	}
	clk.Advance(time.Minute)
	for range 3 {
		mustLogin(t, a, "SMUSER", "pw", "shop")
	}
	if n := checks.Load(); n != 1 {
		t.Errorf("argon2 checks = %d, want 1 (later logins from the cache)", n)
	}
	if creds.lookups != 4 {
		t.Errorf("store lookups = %d, want 4 (one per login, cache or not)", creds.lookups)
	}
	if got := creds.touched["shop"]; !got.Equal(clk.Now().Add(-time.Minute)) {
		t.Errorf("cache hit touched the credential: last used = %v", got)
	}

	// A wrong password for a cached user is checked (and fails) the slow
	// way and does not evict the good entry.
	mustFail(t, a, "SMUSER", "wrong")
	mustFail(t, a, "SMUSER", "wrong")
	if n := checks.Load(); n != 3 {
		t.Errorf("argon2 checks = %d, want 3 (wrong passwords are never cached)", n)
	}
	mustLogin(t, a, "SMUSER", "pw", "shop")
	if n := checks.Load(); n != 3 {
		t.Errorf("argon2 checks = %d, want 3 (good entry survives wrong tries)", n)
	}
}

func TestAuthenticateRotation(t *testing.T) {
	creds := newFakeCreds()
	creds.add(t, "shop", "SMUSER", "old")
	clk := testkit.NewClock(t)
	a, checks := newTestAuth(creds, clk, 5*time.Minute)

	mustLogin(t, a, "SMUSER", "old", "shop")
	mustLogin(t, a, "SMUSER", "old", "shop") // now cached
	// `sesame user rotate` in another process.
	creds.add(t, "shop", "SMUSER", "new")
	mustFail(t, a, "SMUSER", "old")
	mustLogin(t, a, "SMUSER", "new", "shop")
	mustLogin(t, a, "SMUSER", "new", "shop")
	mustFail(t, a, "SMUSER", "old")
	if n := checks.Load(); n != 4 {
		t.Errorf("argon2 checks = %d, want 4", n)
	}
}

func TestAuthenticateDeletion(t *testing.T) {
	creds := newFakeCreds()
	creds.add(t, "shop", "SMUSER", "pw")
	clk := testkit.NewClock(t)
	a, _ := newTestAuth(creds, clk, 5*time.Minute)

	mustLogin(t, a, "SMUSER", "pw", "shop")
	creds.remove("SMUSER")
	mustFail(t, a, "SMUSER", "pw")
	// Re-created with the same username but a new password: the old one
	// must not work from the cache.
	creds.add(t, "shop", "SMUSER", "pw2")
	mustFail(t, a, "SMUSER", "pw")
	mustLogin(t, a, "SMUSER", "pw2", "shop")
}

func TestAuthenticateExpiry(t *testing.T) {
	creds := newFakeCreds()
	creds.add(t, "shop", "SMUSER", "pw")
	clk := testkit.NewClock(t)
	const ttl = 5 * time.Minute
	a, checks := newTestAuth(creds, clk, ttl)

	mustLogin(t, a, "SMUSER", "pw", "shop")
	clk.Advance(ttl - time.Nanosecond)
	mustLogin(t, a, "SMUSER", "pw", "shop")
	if n := checks.Load(); n != 1 {
		t.Fatalf("argon2 checks = %d just before expiry, want 1", n)
	}
	clk.Advance(time.Nanosecond)
	mustLogin(t, a, "SMUSER", "pw", "shop")
	if n := checks.Load(); n != 2 {
		t.Fatalf("argon2 checks = %d at expiry, want 2", n)
	}
	if got := creds.touched["shop"]; !got.Equal(clk.Now()) {
		t.Errorf("slow path after expiry did not touch: last used = %v, want %v", got, clk.Now())
	}
	// The fresh entry is good for another ttl.
	clk.Advance(ttl / 2)
	mustLogin(t, a, "SMUSER", "pw", "shop")
	if n := checks.Load(); n != 2 {
		t.Errorf("argon2 checks = %d, want 2", n)
	}
}

func TestAuthenticateNoCache(t *testing.T) {
	creds := newFakeCreds()
	creds.add(t, "shop", "SMUSER", "pw")
	a, checks := newTestAuth(creds, testkit.NewClock(t), 0)
	mustLogin(t, a, "SMUSER", "pw", "shop")
	mustLogin(t, a, "SMUSER", "pw", "shop")
	if n := checks.Load(); n != 2 {
		t.Errorf("argon2 checks = %d with cache disabled, want 2", n)
	}
}

func TestAuthenticateUnknownUser(t *testing.T) {
	creds := newFakeCreds()
	creds.add(t, "shop", "SMUSER", "pw")
	a, checks := newTestAuth(creds, testkit.NewClock(t), 5*time.Minute)

	_, errUnknown := a.Authenticate(context.Background(), "SMNOBODY", "pw")
	_, errWrong := a.Authenticate(context.Background(), "SMUSER", "nope")
	// Both are ErrInvalidCredentials (the client gets one reply for both);
	// only the caller's log can tell them apart.
	if !errors.Is(errUnknown, ErrInvalidCredentials) || !errors.Is(errWrong, ErrInvalidCredentials) {
		t.Errorf("unknown user: %v; wrong password: %v; want ErrInvalidCredentials for both", errUnknown, errWrong)
	}
	if !errors.Is(errUnknown, ErrUnknownUsername) || !errors.Is(errWrong, ErrWrongPassword) {
		t.Errorf("unknown user: %v; wrong password: %v; want ErrUnknownUsername and ErrWrongPassword", errUnknown, errWrong)
	}
	// Both must have paid for one argon2 check: equal work, equal time.
	if n := checks.Load(); n != 2 {
		t.Errorf("argon2 checks = %d, want 2 (one each)", n)
	}
	if n := creds.touchCount(); n != 0 {
		t.Errorf("failed logins touched %d credentials", n)
	}
}

func TestAuthenticateStoreErrors(t *testing.T) {
	creds := newFakeCreds()
	creds.add(t, "shop", "SMUSER", "pw")
	a, _ := newTestAuth(creds, testkit.NewClock(t), 5*time.Minute)

	creds.touchErr = errors.New("disk full")
	mustLogin(t, a, "SMUSER", "pw", "shop") // touch failure is not a login failure

	boom := errors.New("database is locked")
	creds.lookupErr = boom
	_, err := a.Authenticate(context.Background(), "SMUSER", "pw")
	if !errors.Is(err, boom) || errors.Is(err, ErrInvalidCredentials) {
		t.Errorf("lookup failure gave %v, want it wrapped and not ErrInvalidCredentials", err)
	}
	creds.lookupErr = nil

	creds.set("shop", "SMUSER", "$argon2id$garbage")
	_, err = a.Authenticate(context.Background(), "SMUSER", "pw")
	if !errors.Is(err, errMalformedHash) || errors.Is(err, ErrInvalidCredentials) {
		t.Errorf("malformed stored hash gave %v, want errMalformedHash", err)
	}
}

func TestAuthenticateContextWhileWaiting(t *testing.T) {
	creds := newFakeCreds()
	creds.add(t, "shop", "SMUSER", "pw")
	a, checks := newTestAuth(creds, testkit.NewClock(t), 5*time.Minute)
	// Take every slot, as a burst of logins would.
	for range cap(a.slots) {
		a.slots <- struct{}{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, user := range []string{"SMUSER", "SMNOBODY"} {
		_, err := a.Authenticate(ctx, user, "pw")
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Authenticate(%s) with all slots busy and ctx cancelled = %v, want context.Canceled", user, err)
		}
	}
	if n := checks.Load(); n != 0 {
		t.Errorf("argon2 checks = %d, want 0", n)
	}
}

// tally reads n login results from errs and counts the successes and the
// wrong passwords; any other error fails the test.
func tally(t *testing.T, errs <-chan error, n int) (ok, bad int) {
	t.Helper()
	for range n {
		switch err := <-errs; {
		case err == nil:
			ok++
		case errors.Is(err, ErrInvalidCredentials):
			bad++
		default:
			t.Errorf("unexpected error %v", err)
		}
	}
	return ok, bad
}

// TestAuthenticateConcurrencyBound checks that no more argon2 computations run
// at once than there are slots, under a burst of logins.
func TestAuthenticateConcurrencyBound(t *testing.T) {
	creds := newFakeCreds()
	creds.add(t, "shop", "SMUSER", "pw")
	a := NewAuthenticator(creds, testkit.NewClock(t).Now, 0)
	const slots = 2
	a.slots = make(chan struct{}, slots)
	var inFlight, peak atomic.Int64
	release := make(chan struct{})
	a.check = func(hash, password string) (bool, error) {
		n := inFlight.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		<-release
		inFlight.Add(-1)
		return CheckPassword(hash, password)
	}

	const logins = 8
	errs := make(chan error, logins)
	for i := range logins {
		user := "SMUSER"
		if i%2 == 1 {
			user = "SMNOBODY"
		}
		go func() {
			_, err := a.Authenticate(context.Background(), user, "pw")
			errs <- err
		}()
	}
	// Wait until the slots are full, then let logins through one at a time.
	deadline := time.After(10 * time.Second) // a hang guard, not a speed check
	for inFlight.Load() < slots {
		select {
		case <-deadline:
			t.Fatalf("only %d argon2 checks started, want %d", inFlight.Load(), slots)
		case <-time.After(time.Millisecond):
		}
	}
	for i := range logins {
		select {
		case release <- struct{}{}:
		case <-deadline:
			t.Fatalf("only %d of %d logins reached the argon2 check", i, logins)
		}
	}
	ok, bad := tally(t, errs, logins)
	if ok != logins/2 || bad != logins/2 {
		t.Errorf("%d logins succeeded and %d failed, want %d each", ok, bad, logins/2)
	}
	if p := peak.Load(); p != slots {
		t.Errorf("peak concurrent argon2 checks = %d, want %d", p, slots)
	}
}

// TestAuthenticateBurstSharesOneCheck checks that a burst of logins with one
// credential, arriving while its first argon2 check runs, waits for that
// check and reuses it instead of each computing its own; wrong passwords in
// the same burst are still each checked and refused.
func TestAuthenticateBurstSharesOneCheck(t *testing.T) {
	creds := newFakeCreds()
	creds.add(t, "shop", "SMUSER", "pw")
	a, checks := newTestAuth(creds, testkit.NewClock(t), 5*time.Minute)
	a.slots = make(chan struct{}, 1)
	const right, wrong = 10, 2
	entered := make(chan struct{}, right+wrong)
	release := make(chan struct{})
	check := a.check
	a.check = func(hash, password string) (bool, error) {
		entered <- struct{}{}
		<-release
		return check(hash, password)
	}

	errs := make(chan error, right+wrong)
	for i := range right + wrong {
		password := "pw"
		if i >= right {
			password = "wrong"
		}
		go func() {
			_, err := a.Authenticate(context.Background(), "SMUSER", password)
			errs <- err
		}()
	}
	// Hold the first check until every login has looked its credential up
	// (and so missed the cache), then let the checks through.
	deadline := time.After(10 * time.Second) // a hang guard, not a speed check
	select {
	case <-entered:
	case <-deadline:
		t.Fatal("no argon2 check started")
	}
	for {
		creds.mu.Lock()
		n := creds.lookups
		creds.mu.Unlock()
		if n == right+wrong {
			break
		}
		select {
		case <-deadline:
			t.Fatalf("only %d of %d logins looked their credential up", n, right+wrong)
		case <-time.After(time.Millisecond):
		}
	}
	time.Sleep(20 * time.Millisecond) // lets them reach the slot
	close(release)

	ok, bad := tally(t, errs, right+wrong)
	if ok != right || bad != wrong {
		t.Errorf("%d logins succeeded and %d failed, want %d and %d", ok, bad, right, wrong)
	}
	// One check for the right password (whichever login got the slot first;
	// the others found it cached) and one per wrong password. A wrong
	// password checked first leaves the right ones to one check too.
	if n := checks.Load(); n != 1+wrong {
		t.Errorf("%d argon2 checks for %d logins with the right password and %d with a wrong one, want %d", n, right, wrong, 1+wrong)
	}
}

// TestAuthenticateParallel runs many logins at once for the race detector.
func TestAuthenticateParallel(t *testing.T) {
	creds := newFakeCreds()
	creds.add(t, "a", "SMA", "pa")
	creds.add(t, "b", "SMB", "pb")
	a := NewAuthenticator(creds, testkit.NewClock(t).Now, time.Minute)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			user, pw := "SMA", "pa"
			if i%2 == 1 {
				user, pw = "SMB", "pb"
			}
			for range 5 {
				if _, err := a.Authenticate(context.Background(), user, pw); err != nil {
					t.Errorf("Authenticate(%s) = %v", user, err)
				}
			}
		})
	}
	wg.Wait()
}

func TestAuthenticateCacheBound(t *testing.T) {
	creds := newFakeCreds()
	clk := testkit.NewClock(t)
	a, checks := newTestAuth(creds, clk, 5*time.Minute)
	a.maxSize = 2
	for _, u := range []string{"SM1", "SM2", "SM3"} {
		creds.add(t, u, u, "pw")
	}

	mustLogin(t, a, "SM1", "pw", "SM1")
	clk.Advance(time.Second)
	mustLogin(t, a, "SM2", "pw", "SM2")
	clk.Advance(time.Second)
	mustLogin(t, a, "SM3", "pw", "SM3") // evicts SM1, the oldest
	if n := len(a.cache); n != 2 {
		t.Fatalf("cache holds %d entries, want 2", n)
	}
	checks.Store(0)
	mustLogin(t, a, "SM2", "pw", "SM2")
	mustLogin(t, a, "SM3", "pw", "SM3")
	if n := checks.Load(); n != 0 {
		t.Errorf("argon2 checks = %d for the two newest users, want 0", n)
	}
	mustLogin(t, a, "SM1", "pw", "SM1") // evicted: slow path, evicts SM2
	if n := checks.Load(); n != 1 {
		t.Errorf("argon2 checks = %d for the evicted user, want 1", n)
	}

}

// TestAuthenticateCacheDropsExpired checks that a full cache sheds every
// expired entry before it evicts a live one.
func TestAuthenticateCacheDropsExpired(t *testing.T) {
	creds := newFakeCreds()
	clk := testkit.NewClock(t)
	a, _ := newTestAuth(creds, clk, 5*time.Minute)
	a.maxSize = 3
	for _, u := range []string{"SM1", "SM2", "SM3", "SM4"} {
		creds.add(t, u, u, "pw")
	}
	mustLogin(t, a, "SM1", "pw", "SM1")
	clk.Advance(time.Minute)
	mustLogin(t, a, "SM2", "pw", "SM2")
	clk.Advance(3 * time.Minute)
	mustLogin(t, a, "SM3", "pw", "SM3")
	clk.Advance(2 * time.Minute) // SM1 and SM2 have expired, SM3 has not
	mustLogin(t, a, "SM4", "pw", "SM4")
	if len(a.cache) != 2 {
		t.Errorf("cache holds %d entries, want 2 (SM3, SM4)", len(a.cache))
	}
	for _, u := range []string{"SM3", "SM4"} {
		if _, ok := a.cache[u]; !ok {
			t.Errorf("live entry %s missing", u)
		}
	}
}

func BenchmarkAuthenticateCached(b *testing.B) {
	creds := newFakeCreds()
	h, err := HashPassword("pw") // real cost, unlike the tests
	if err != nil {
		b.Fatal(err)
	}
	creds.set("shop", "SMUSER", h)
	a := NewAuthenticator(creds, time.Now, 5*time.Minute)
	ctx := context.Background()
	if _, err := a.Authenticate(ctx, "SMUSER", "pw"); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := a.Authenticate(ctx, "SMUSER", "pw"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAuthenticateUncached(b *testing.B) {
	creds := newFakeCreds()
	h, err := HashPassword("pw") // real cost, unlike the tests
	if err != nil {
		b.Fatal(err)
	}
	creds.set("shop", "SMUSER", h)
	a := NewAuthenticator(creds, time.Now, 0)
	ctx := context.Background()
	for b.Loop() {
		if _, err := a.Authenticate(ctx, "SMUSER", "pw"); err != nil {
			b.Fatal(err)
		}
	}
}
