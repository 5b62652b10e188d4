package smtpd

import (
	"strings"
	"sync"
	"time"

	"github.com/sesame-mail/sesame/netguard"
	"github.com/sesame-mail/sesame/store"
)

// AuthLimits bound password guessing. go-smtp does not count failed AUTH
// attempts at all, so the submission service does: per connection (closed
// with 421 after PerConnection failures), per client network (/32 for IPv4,
// /64 for IPv6: one host usually owns a whole /64) and per username across
// networks (a distributed guess at one account). Each failure within Window
// makes the next refusal wait longer; a network over PerNetwork is refused
// at connect for BlockFor.
//
// A username over PerUsername is not locked: that would let anyone who
// knows it lock its owner out. Instead, as Dovecot's auth penalty and
// fail2ban act on the failing address rather than the account, the
// networks that failed as it are refused as it, without a check, until
// BlockFor after each one's own last failure; a network that did not fail
// (the owner's) still has its password checked. A refusal without a check
// proves nothing and does not extend the block. Sesame generates the
// passwords (256 random bits), so the few guesses a network gets per block
// are worth nothing to a guesser.
type AuthLimits struct {
	PerConnection int
	PerNetwork    int
	PerUsername   int
	Window        time.Duration
	BlockFor      time.Duration
	// Delay is the wait before the first refusal (default 250 ms); it
	// doubles with each recent failure, up to maxAuthDelay.
	Delay time.Duration
	// ReportEvery is how often the summaries of failed logins are written
	// to the store for "sesame user show" (default 10 s): at most one
	// write per credential per interval, however many failures.
	ReportEvery time.Duration
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
	if l.ReportEvery <= 0 {
		l.ReportEvery = 10 * time.Second
	}
	return l
}

// maxAuthDelay caps the wait before a refusal, so an honest client that
// mistyped a password a few times still gets an answer quickly.
const maxAuthDelay = 5 * time.Second

// The guard's memory bounds: the networks and usernames it remembers
// failures of, and the networks per username. When one is full, the entry
// whose last failure is oldest is forgotten; one under attack keeps failing,
// so it is the last to go. A few hundred bytes an entry: at most about
// 30 MB however the failures are spread.
const (
	maxGuardNetworks     = 16384
	maxGuardUsernames    = 1024
	maxGuardUserNetworks = 256
)

// loginFailure says what kind of failed login the guard records.
type loginFailure int

const (
	// unknownUsername: no credential has the username. Counted like a
	// wrong password (so that response times do not tell which usernames
	// exist), but never reported to the store.
	unknownUsername loginFailure = iota
	// wrongPassword: a credential has the username.
	wrongPassword
	// unchecked: refused without a check, the network being blocked for
	// the username. Counts for the network only.
	unchecked
)

// authGuard remembers recent failures. Safe for concurrent use; its memory
// is bounded by pruning records older than the window on every failure and
// by the caps above.
type authGuard struct {
	limits AuthLimits
	now    func() time.Time
	// The caps (the constants above; tests lower them).
	maxNetworks, maxUsernames, maxUserNetworks int

	mu      sync.Mutex
	network map[string]*failures     // by client network
	user    map[string]*userFailures // by lower-cased username
}

type failures struct {
	// times are the failures within the window, oldest first; at most the
	// limit plus one are kept, enough to tell that the limit is passed.
	times        []time.Time
	blockedUntil time.Time
}

// userFailures are the failed logins as one username during a run of
// failures: from its first failure until a whole window passes without
// one (and no network is still blocked for it).
type userFailures struct {
	recent failures // for PerUsername; its blockedUntil is unused
	// nets are the networks that failed as the username in this run.
	nets map[string]*userNetwork
	// username is the username as its credential has it, once a wrong
	// password proved that one does: only such runs are reported.
	username string

	// The run, as reported to the store.
	first, last  time.Time
	count        int
	networks     int // distinct networks (approximate past maxGuardUserNetworks)
	lastNetwork  string
	blockedUntil time.Time // the latest block of any of nets
	dirty        bool      // changed since the last report
}

// userNetwork is one network's failures as one username.
type userNetwork struct {
	last         time.Time // its last failure as the username
	blockedUntil time.Time // refused as the username without a check until then
}

func newAuthGuard(l AuthLimits, now func() time.Time) *authGuard {
	return &authGuard{limits: l, now: now,
		maxNetworks: maxGuardNetworks, maxUsernames: maxGuardUsernames, maxUserNetworks: maxGuardUserNetworks,
		network: map[string]*failures{}, user: map[string]*userFailures{}}
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

// blocked reports whether a login as username from ip is refused without
// a check: the username went over its limit, and this network is one of
// those that failed as it.
func (g *authGuard) blocked(ip, username string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	u := g.user[strings.ToLower(username)]
	if u == nil {
		return false
	}
	n := u.nets[networkOf(ip)]
	return n != nil && g.now().Before(n.blockedUntil)
}

// succeeded forgets the network's failures as username: it knows the
// password, so an attack on the username later must not block it for its
// earlier typos (Dovecot too resets the penalty on success).
func (g *authGuard) succeeded(ip, username string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if u := g.user[strings.ToLower(username)]; u != nil {
		delete(u.nets, networkOf(ip))
	}
}

// failed records a failed login and returns how long to wait before
// answering: Delay doubling with each recent failure from the network or
// for the username, capped at maxAuthDelay. It blocks the network once over
// its limit; attack is true when this failure took the username over its
// limit, from then on blocking its failing networks for it.
func (g *authGuard) failed(ip, username string, kind loginFailure) (delay time.Duration, attack bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	network := networkOf(ip)
	n := g.recordNetwork(network, now)
	key := strings.ToLower(username)
	if kind == unchecked {
		if u := g.user[key]; u != nil {
			n = max(n, u.recent.within(now.Add(-g.limits.Window)))
		}
	} else {
		var u *userFailures
		u, attack = g.recordUser(key, username, network, kind == wrongPassword, now)
		n = max(n, len(u.recent.times))
	}
	delay = g.limits.Delay
	for i := 1; i < n && delay < maxAuthDelay; i++ {
		delay *= 2
	}
	return min(delay, maxAuthDelay), attack
}

// recordNetwork adds a failure from network and returns its recent
// failures, blocking it when they exceed the limit.
func (g *authGuard) recordNetwork(network string, now time.Time) int {
	cutoff := now.Add(-g.limits.Window)
	for k, f := range g.network {
		if f.stale(cutoff, now) {
			delete(g.network, k)
		}
	}
	f := g.network[network]
	if f == nil {
		makeRoom(g.network, g.maxNetworks, func(f *failures) time.Time { return f.times[len(f.times)-1] })
		f = &failures{}
		g.network[network] = f
	}
	if f.add(now, cutoff, g.limits.PerNetwork) {
		f.blockedUntil = now.Add(g.limits.BlockFor)
	}
	return len(f.times)
}

// recordUser adds a failure as username from network. Over the limit, every
// network that failed as it within the window is blocked for it until
// BlockFor after that network's own last failure; attack reports that this
// failure is the one that went over.
func (g *authGuard) recordUser(key, username, network string, known bool, now time.Time) (u *userFailures, attack bool) {
	cutoff := now.Add(-g.limits.Window)
	for k, u := range g.user {
		if u.stale(cutoff, now) {
			delete(g.user, k)
		}
	}
	u = g.user[key]
	if u == nil {
		makeRoom(g.user, g.maxUsernames, func(u *userFailures) time.Time { return u.last })
		u = &userFailures{nets: map[string]*userNetwork{}, first: now}
		g.user[key] = u
	}
	if known {
		u.username = username
	}
	wasOver := u.recent.within(cutoff) > g.limits.PerUsername
	over := u.recent.add(now, cutoff, g.limits.PerUsername)
	u.count++
	u.last, u.lastNetwork, u.dirty = now, network, true
	n := u.nets[network]
	if n == nil {
		makeRoom(u.nets, g.maxUserNetworks, func(n *userNetwork) time.Time { return n.last })
		n = &userNetwork{}
		u.nets[network] = n
		u.networks++
	}
	n.last = now
	if over {
		for _, n := range u.nets {
			if !n.last.Before(cutoff) {
				n.blockedUntil = n.last.Add(g.limits.BlockFor)
				u.blockedUntil = maxTime(u.blockedUntil, n.blockedUntil)
			}
		}
	}
	return u, over && !wasOver
}

// add records a failure at now, dropping those before cutoff, and reports
// whether the failures within the window exceed limit.
func (f *failures) add(now, cutoff time.Time, limit int) bool {
	kept := f.times[:0]
	for _, t := range f.times {
		if !t.Before(cutoff) {
			kept = append(kept, t)
		}
	}
	f.times = append(kept, now)
	if len(f.times) > limit+1 {
		f.times = f.times[len(f.times)-limit-1:] // bounded
	}
	return len(f.times) > limit
}

// within counts the failures from cutoff on.
func (f *failures) within(cutoff time.Time) int {
	n := 0
	for _, t := range f.times {
		if !t.Before(cutoff) {
			n++
		}
	}
	return n
}

// stale reports whether the record has nothing left to remember: its last
// failure is before cutoff and its block is over.
func (f *failures) stale(cutoff, now time.Time) bool {
	return len(f.times) > 0 && f.times[len(f.times)-1].Before(cutoff) && !now.Before(f.blockedUntil)
}

func (u *userFailures) stale(cutoff, now time.Time) bool {
	return u.last.Before(cutoff) && !now.Before(u.blockedUntil)
}

// makeRoom forgets the entry whose last failure is oldest when m holds max
// entries. The scan is linear, but it runs only for a failed login, after
// an argon2 computation that costs far more.
func makeRoom[V any](m map[string]V, max int, last func(V) time.Time) {
	if len(m) < max {
		return
	}
	var oldest string
	var at time.Time
	found := false
	for k, v := range m {
		if t := last(v); !found || t.Before(at) {
			oldest, at, found = k, t, true
		}
	}
	delete(m, oldest)
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// loginReport is the summary of one credential's failed logins, for the
// store.
type loginReport struct {
	username string
	summary  store.LoginFailures
}

// reports returns the summaries that changed since the last call, of the
// usernames a credential has (an unknown username is never reported: it
// may be a password typed in the wrong field).
func (g *authGuard) reports() []loginReport {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	var out []loginReport
	for _, u := range g.user {
		if !u.dirty || u.username == "" {
			continue
		}
		u.dirty = false
		s := store.LoginFailures{First: u.first, Last: u.last, Failures: u.count, Networks: u.networks,
			LastNetwork: u.lastNetwork, UpdatedAt: now}
		for _, n := range u.nets {
			if now.Before(n.blockedUntil) {
				s.BlockedNetworks++
				s.BlockedUntil = maxTime(s.BlockedUntil, n.blockedUntil)
			}
		}
		out = append(out, loginReport{username: u.username, summary: s})
	}
	return out
}

// GuardStats is what the failed-login guard holds now, for the metrics.
type GuardStats struct {
	// UsernameAttacks counts the usernames of credentials over the
	// per-username limit within the window.
	UsernameAttacks int
	// BlockedNetworks counts the networks refused at connect;
	// BlockedUsernameNetworks the (network, username) pairs refused
	// without a check.
	BlockedNetworks         int
	BlockedUsernameNetworks int
}

func (g *authGuard) stats() GuardStats {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	cutoff := now.Add(-g.limits.Window)
	var s GuardStats
	for _, f := range g.network {
		if now.Before(f.blockedUntil) {
			s.BlockedNetworks++
		}
	}
	for _, u := range g.user {
		if u.username != "" && u.recent.within(cutoff) > g.limits.PerUsername {
			s.UsernameAttacks++
		}
		for _, n := range u.nets {
			if now.Before(n.blockedUntil) {
				s.BlockedUsernameNetworks++
			}
		}
	}
	return s
}
