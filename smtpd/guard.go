package smtpd

import (
	"strings"
	"sync"
	"time"

	"github.com/sesame-mail/sesame/netguard"
)

// AuthLimits bound password guessing. go-smtp does not count failed AUTH
// attempts at all, so the submission service does: per connection (closed
// with 421 after PerConnection failures), per client network (/32 for IPv4,
// /64 for IPv6: one host usually owns a whole /64) and per username across
// networks (a distributed guess at one account). Each failure within Window
// makes the next refusal wait longer; over a limit the network is refused
// at connect, or the username refused without checking, for BlockFor.
type AuthLimits struct {
	PerConnection int
	PerNetwork    int
	PerUsername   int
	Window        time.Duration
	BlockFor      time.Duration
	// Delay is the wait before the first refusal (default 250 ms); it
	// doubles with each recent failure, up to maxAuthDelay.
	Delay time.Duration
}

// withDefaults fills zero fields: 3 failures a connection, 10 a network
// and 20 a username within 15 minutes, then a 15-minute block.
func (l AuthLimits) withDefaults() AuthLimits {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.PerConnection, 3)
	def(&l.PerNetwork, 10)
	def(&l.PerUsername, 20)
	if l.Window <= 0 {
		l.Window = 15 * time.Minute
	}
	if l.BlockFor <= 0 {
		l.BlockFor = 15 * time.Minute
	}
	if l.Delay <= 0 {
		l.Delay = 250 * time.Millisecond
	}
	return l
}

// maxAuthDelay caps the wait before a refusal, so an honest client that
// mistyped a password a few times still gets an answer quickly.
const maxAuthDelay = 5 * time.Second

// authGuard remembers recent failures. Safe for concurrent use; its memory
// is bounded by pruning records older than the window on every failure.
type authGuard struct {
	limits AuthLimits
	now    func() time.Time

	mu      sync.Mutex
	network map[string]*failures
	user    map[string]*failures
}

type failures struct {
	times        []time.Time // within the window, oldest first
	blockedUntil time.Time
}

func newAuthGuard(l AuthLimits, now func() time.Time) *authGuard {
	return &authGuard{limits: l, now: now, network: map[string]*failures{}, user: map[string]*failures{}}
}

// networkOf is the client's /32 or /64, as the connection caps count it.
func networkOf(ip string) string { return netguard.NetworkOf(ip) }

// networkBlocked reports whether connections from ip are refused for now.
func (g *authGuard) networkBlocked(ip string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	f := g.network[networkOf(ip)]
	return f != nil && g.now().Before(f.blockedUntil)
}

// userBlocked reports whether logins as username are refused for now.
func (g *authGuard) userBlocked(username string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	f := g.user[strings.ToLower(username)]
	return f != nil && g.now().Before(f.blockedUntil)
}

// failed records a failed login and returns how long to wait before
// answering: Delay doubling with each recent failure from the network or
// for the username, capped at maxAuthDelay. It blocks the network or the
// username once over its limit.
func (g *authGuard) failed(ip, username string) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	n := g.record(g.network, networkOf(ip), g.limits.PerNetwork, now)
	if u := g.record(g.user, strings.ToLower(username), g.limits.PerUsername, now); u > n {
		n = u
	}
	delay := g.limits.Delay
	for i := 1; i < n && delay < maxAuthDelay; i++ {
		delay *= 2
	}
	return min(delay, maxAuthDelay)
}

// record adds a failure for key and returns the recent failures, blocking
// key when they exceed limit. Expired records are dropped on the way.
func (g *authGuard) record(m map[string]*failures, key string, limit int, now time.Time) int {
	cutoff := now.Add(-g.limits.Window)
	for k, f := range m {
		if len(f.times) > 0 && f.times[len(f.times)-1].Before(cutoff) && now.After(f.blockedUntil) {
			delete(m, k)
		}
	}
	f := m[key]
	if f == nil {
		f = &failures{}
		m[key] = f
	}
	kept := f.times[:0]
	for _, t := range f.times {
		if !t.Before(cutoff) {
			kept = append(kept, t)
		}
	}
	f.times = append(kept, now)
	if len(f.times) > limit {
		f.blockedUntil = now.Add(g.limits.BlockFor)
		f.times = f.times[len(f.times)-limit:] // bounded
	}
	return len(f.times)
}
