package warmup

import (
	"fmt"
	"math"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/sesame-mail/sesame/store"
)

// unlimited stands for "no cap" in head-room arithmetic.
const unlimited = math.MaxInt32

// Limiter tracks what each IP sent in the current hour and day and decides
// who may send next. It is safe for concurrent use.
type Limiter struct {
	cfg       Config
	providers map[string]Provider

	mu  sync.Mutex
	ips []*ipState // configuration order
	rr  int        // rotates the choice among equals
}

// ipState is one IP's counters and state.
type ipState struct {
	IP
	day      time.Time      // the UTC day the day counter is for
	dayCount int            // messages granted that day
	hour     time.Time      // the UTC hour the hour counters are for
	hourBy   map[string]int // messages granted that hour, by provider
	paused   *store.IPPause
	susp     map[string]store.IPSuspension // by provider
}

// Grant is permission to send Count messages from IP.
type Grant struct {
	IP            IP
	Provider      string
	Count         int
	PerConnection int // the provider's cap on messages per connection; 0: none
	At            time.Time
}

// Wait says why nothing may be sent now and when that may change.
type Wait struct {
	// Until is the earliest time capacity may return; zero when only an
	// operator can change it (every IP paused) or no IP will ever fit.
	Until  time.Time
	Reason string
	// NoIP says no IP of the pool can ever serve the destination (the pool
	// has none, or none of its address family): waiting will not help.
	NoIP bool
}

// NewLimiter returns a Limiter for cfg with empty counters.
func NewLimiter(cfg Config) *Limiter {
	if cfg.Backoff <= 0 {
		cfg.Backoff = DefaultBackoff
	}
	if cfg.BackoffMax < cfg.Backoff {
		cfg.BackoffMax = max(DefaultBackoffMax, cfg.Backoff)
	}
	l := &Limiter{cfg: cfg, providers: map[string]Provider{}}
	for _, p := range cfg.Providers {
		l.providers[p.Name] = p
	}
	for _, ip := range cfg.IPs {
		l.ips = append(l.ips, &ipState{IP: ip, hourBy: map[string]int{}, susp: map[string]store.IPSuspension{}})
	}
	return l
}

// Config returns the configuration the Limiter was made with.
func (l *Limiter) Config() Config { return l.cfg }

// Classify is Classify over the Limiter's providers.
func (l *Limiter) Classify(hosts []string) string { return Classify(l.cfg.Providers, hosts) }

// HasPool reports whether any IP belongs to pool.
func (l *Limiter) HasPool(pool string) bool {
	for _, s := range l.ips {
		if s.Pool == pool {
			return true
		}
	}
	return false
}

// Load replaces the counters with the stored counts of now's day (rows of
// other days are ignored), and the pauses and suspensions with the stored
// ones.
func (l *Limiter) Load(now time.Time, sends []store.IPSend, susp []store.IPSuspension, pauses []store.IPPause) {
	l.mu.Lock()
	defer l.mu.Unlock()
	today, hour := dayStart(now), hourStart(now)
	for _, s := range l.ips {
		s.day, s.dayCount, s.hour, s.hourBy = today, 0, hour, map[string]int{}
	}
	for _, row := range sends {
		s := l.find(row.IP)
		if s == nil || dayStart(row.Hour) != today {
			continue
		}
		s.dayCount += row.Count
		if hourStart(row.Hour).Equal(hour) {
			s.hourBy[row.Provider] += row.Count
		}
	}
	l.setPauses(pauses)
	l.setSuspensions(susp)
}

// SetPauses replaces the pauses (an operator's `sesame ip pause` reaches a
// running server this way) and reports whether any IP's changed.
// Suspensions are the relay's own: loaded once, then kept in memory and
// written through.
func (l *Limiter) SetPauses(pauses []store.IPPause) (changed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	before := make([]bool, len(l.ips))
	for i, s := range l.ips {
		before[i] = s.paused != nil
	}
	l.setPauses(pauses)
	for i, s := range l.ips {
		changed = changed || before[i] != (s.paused != nil)
	}
	return changed
}

func (l *Limiter) setPauses(pauses []store.IPPause) {
	for _, s := range l.ips {
		s.paused = nil
	}
	for _, p := range pauses {
		if s := l.find(p.IP); s != nil {
			s.paused = &p
		}
	}
}

func (l *Limiter) setSuspensions(susp []store.IPSuspension) {
	for _, s := range l.ips {
		s.susp = map[string]store.IPSuspension{}
	}
	for _, x := range susp {
		if s := l.find(x.IP); s != nil {
			s.susp[x.Provider] = x
		}
	}
}

func (l *Limiter) find(name string) *ipState {
	for _, s := range l.ips {
		if s.Name() == name {
			return s
		}
	}
	return nil
}

// roll moves s's counters to now's hour and day.
func (s *ipState) roll(now time.Time) {
	if d := dayStart(now); !d.Equal(s.day) {
		s.day, s.dayCount = d, 0
	}
	if h := hourStart(now); !h.Equal(s.hour) {
		s.hour, s.hourBy = h, map[string]int{}
	}
}

// hourTotal is what s was granted in its counters' hour.
func (s *ipState) hourTotal() int {
	n := 0
	for _, c := range s.hourBy {
		n += c
	}
	return n
}

// limits is what bounds an IP at a moment.
type limits struct {
	day, hour, provider int // what is left of each; unlimited when uncapped
}

func (x limits) room() int { return max(0, min(x.day, x.hour, x.provider)) }

// limitsAt is what s may still send to provider at t, counting only what
// it was granted in t's hour and day (so a t in a later window sees fresh
// counters). Suspensions and pauses are not considered.
func (l *Limiter) limitsAt(s *ipState, provider string, t time.Time) limits {
	x := limits{unlimited, unlimited, unlimited}
	dayUsed, hourUsed, provUsed := 0, 0, 0
	if dayStart(t).Equal(s.day) {
		dayUsed = s.dayCount
	}
	if hourStart(t).Equal(s.hour) {
		hourUsed, provUsed = s.hourTotal(), s.hourBy[provider]
	}
	day := s.Day(t)
	daily, hourly, limited := l.cfg.Schedule.Caps(day)
	if limited {
		x.day, x.hour = daily-dayUsed, hourly-hourUsed
	}
	if p, ok := l.providers[provider]; ok {
		c := p.Hourly
		if limited {
			c = p.WarmupHourly
		}
		if c > 0 {
			x.provider = c - provUsed
		}
	}
	return x
}

// suspendedUntil is the end of s's suspension for provider after now, or
// zero.
func (s *ipState) suspendedUntil(provider string, now time.Time) time.Time {
	if x, ok := s.susp[provider]; ok && x.Until.After(now) {
		return x.Until
	}
	return time.Time{}
}

// opensAt is the earliest time from now on when s may send at least one
// message to provider; zero if only an operator can change that.
func (l *Limiter) opensAt(s *ipState, provider string, now time.Time) time.Time {
	if s.paused != nil {
		return time.Time{}
	}
	t := now
	if u := s.suspendedUntil(provider, now); !u.IsZero() {
		t = u
	}
	if s.Day(t) < 0 {
		t = dayStart(s.Start) // not in service before its start date
	}
	// Each step moves to the next window that resets the binding limit; a
	// few steps always suffice (day caps only grow with the day number).
	for range 4 {
		x := l.limitsAt(s, provider, t)
		switch {
		case x.room() > 0:
			return t
		case x.day <= 0:
			t = dayStart(t).Add(24 * time.Hour)
		default:
			t = hourStart(t).Add(time.Hour)
		}
	}
	return t
}

// Acquire asks to send n messages to provider from an IP of pool whose
// address family suits (usable reports that; nil accepts any). It grants
// up to n from the usable IP with the most head-room (ties taken in turn),
// counting them at once; or, when no usable IP has room, it says how long
// to wait. A grant of fewer than n leaves the rest to wait.
func (l *Limiter) Acquire(pool, provider string, n int, usable func(netip.Addr) bool, now time.Time) (Grant, Wait) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var best *ipState
	bestRoom := 0
	var candidates []*ipState
	for i := range l.ips {
		s := l.ips[(l.rr+i)%len(l.ips)]
		if s.Pool != pool || (s.Addr.IsValid() && usable != nil && !usable(s.Addr)) {
			continue
		}
		candidates = append(candidates, s)
		if s.paused != nil || !s.suspendedUntil(provider, now).IsZero() {
			continue
		}
		s.roll(now)
		if r := l.limitsAt(s, provider, now).room(); r > bestRoom {
			best, bestRoom = s, r
		}
	}
	if best == nil {
		return Grant{}, l.wait(pool, provider, candidates, now)
	}
	l.rr++
	k := min(n, bestRoom)
	best.dayCount += k
	best.hourBy[provider] += k
	return Grant{IP: best.IP, Provider: provider, Count: k, PerConnection: l.providers[provider].PerConnection, At: now}, Wait{}
}

// wait explains why none of candidates may send now.
func (l *Limiter) wait(pool, provider string, candidates []*ipState, now time.Time) Wait {
	if len(candidates) == 0 {
		return Wait{NoIP: true, Reason: fmt.Sprintf(
			"IP pool %q has no outbound IP of this destination's address family; check [[ip]] in the configuration", pool)}
	}
	var until time.Time
	for _, s := range candidates {
		if t := l.opensAt(s, provider, now); !t.IsZero() && (until.IsZero() || t.Before(until)) {
			until = t
		}
	}
	if until.IsZero() {
		return Wait{Reason: fmt.Sprintf("waiting for warm-up capacity: every IP of pool %s is paused (sesame ip resume)", pool)}
	}
	return Wait{Until: until, Reason: fmt.Sprintf("waiting for warm-up capacity: pool %s, provider %s, until %s",
		pool, provider, until.UTC().Format(time.RFC3339))}
}

// Available is how many messages pool's IPs may send to provider now, in
// all (at most unlimited).
func (l *Limiter) Available(pool, provider string, now time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	total := 0
	for _, s := range l.ips {
		if s.Pool != pool || s.paused != nil || !s.suspendedUntil(provider, now).IsZero() {
			continue
		}
		s.roll(now)
		total = min(unlimited, total+l.limitsAt(s, provider, now).room())
	}
	return total
}

// Opens is the earliest time pool may send to provider again; zero when
// only an operator can change that (every IP paused).
func (l *Limiter) Opens(pool, provider string, now time.Time) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	var until time.Time
	for _, s := range l.ips {
		if s.Pool != pool {
			continue
		}
		s.roll(now)
		if t := l.opensAt(s, provider, now); !t.IsZero() && (until.IsZero() || t.Before(until)) {
			until = t
		}
	}
	return until
}

// Refund gives back n messages of g that were never sent (no server could
// be reached), if g's windows are still current.
func (l *Limiter) Refund(g Grant, n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.find(g.IP.Name())
	if s == nil || n <= 0 {
		return
	}
	if dayStart(g.At).Equal(s.day) {
		s.dayCount = max(0, s.dayCount-n)
	}
	if hourStart(g.At).Equal(s.hour) {
		s.hourBy[g.Provider] = max(0, s.hourBy[g.Provider]-n)
	}
}

// Throttled suspends ip × provider after a throttling reply: for Backoff,
// doubled for each suspension since the last successful delivery there, up
// to BackoffMax. It returns the suspension, for the store and the log.
func (l *Limiter) Throttled(ip IP, provider, reply string, now time.Time) store.IPSuspension {
	l.mu.Lock()
	defer l.mu.Unlock()
	x := store.IPSuspension{IP: ip.Name(), Provider: provider, Reply: reply, Level: 1}
	s := l.find(ip.Name())
	if s == nil {
		return x
	}
	if prev, ok := s.susp[provider]; ok {
		if prev.Until.After(now) {
			return prev // already suspended: replies from deliveries in flight
		}
		x.Level = prev.Level + 1
	}
	d := l.cfg.Backoff << min(x.Level-1, 20)
	x.Until = now.Add(min(d, l.cfg.BackoffMax))
	s.susp[provider] = x
	return x
}

// Delivered notes a successful delivery from ip to provider: the next
// throttling there starts over at Backoff. It reports whether a past
// suspension was forgotten (the store should forget it too).
func (l *Limiter) Delivered(ip IP, provider string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.find(ip.Name())
	if s == nil {
		return false
	}
	if x, ok := s.susp[provider]; ok && !x.Until.After(now) {
		delete(s.susp, provider)
		return true
	}
	return false
}

// IPStatus is an IP as the operator sees it (sesame ip list, metrics).
type IPStatus struct {
	IP          string       `json:"ip"`
	Pool        string       `json:"pool"`
	WarmupStart string       `json:"warmup_start,omitempty"` // "" when warm
	Day         int          `json:"warmup_day"`             // 0 when warm
	Warm        bool         `json:"warm"`
	DailyCap    int          `json:"daily_cap"` // -1: unlimited
	SentToday   int          `json:"sent_today"`
	HourlyCap   int          `json:"hourly_cap"` // -1: unlimited
	SentHour    int          `json:"sent_this_hour"`
	Paused      bool         `json:"paused"`
	PausedAt    *time.Time   `json:"paused_at,omitempty"`
	Providers   []ProvStatus `json:"providers"`
}

// ProvStatus is an IP's standing with one provider group.
type ProvStatus struct {
	Provider       string     `json:"provider"`
	HourlyCap      int        `json:"hourly_cap"` // -1: unlimited
	SentHour       int        `json:"sent_this_hour"`
	SuspendedUntil *time.Time `json:"suspended_until,omitempty"`
	Reply          string     `json:"reply,omitempty"`
}

// Status reports every IP at now.
func (l *Limiter) Status(now time.Time) []IPStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []IPStatus
	for _, s := range l.ips {
		s.roll(now)
		day := s.Day(now)
		daily, hourly, limited := l.cfg.Schedule.Caps(day)
		st := IPStatus{IP: s.Name(), Pool: s.Pool, Day: max(day, 0), Warm: !limited, DailyCap: -1, HourlyCap: -1,
			SentToday: s.dayCount, SentHour: s.hourTotal(), Paused: s.paused != nil}
		if !s.Start.IsZero() {
			st.WarmupStart = s.Start.Format(time.DateOnly)
		}
		if limited {
			st.DailyCap, st.HourlyCap = daily, hourly
		}
		if s.paused != nil {
			at := s.paused.At
			st.PausedAt = &at
		}
		names := make([]string, 0, len(l.cfg.Providers)+1)
		for _, p := range l.cfg.Providers {
			names = append(names, p.Name)
		}
		names = append(names, OtherProvider)
		for _, name := range names {
			ps := ProvStatus{Provider: name, HourlyCap: -1, SentHour: s.hourBy[name]}
			if p, ok := l.providers[name]; ok {
				c := p.Hourly
				if limited {
					c = p.WarmupHourly
				}
				if c > 0 {
					ps.HourlyCap = c
				}
			}
			if u := s.suspendedUntil(name, now); !u.IsZero() {
				ps.SuspendedUntil, ps.Reply = &u, s.susp[name].Reply
			}
			st.Providers = append(st.Providers, ps)
		}
		out = append(out, st)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Pool < out[j].Pool })
	return out
}

// DayPlan is one day of an IP's upcoming schedule.
type DayPlan struct {
	Date      string `json:"date"`
	Day       int    `json:"warmup_day"`
	DailyCap  int    `json:"daily_cap"`  // -1: unlimited
	HourlyCap int    `json:"hourly_cap"` // -1: unlimited
}

// Plan lists ip's caps from now's day until it is warm (at most days
// entries; the last says unlimited).
func (l *Limiter) Plan(ip IP, now time.Time, days int) []DayPlan {
	var out []DayPlan
	for i := range days {
		t := dayStart(now).Add(time.Duration(i) * 24 * time.Hour)
		day := ip.Day(t)
		daily, hourly, limited := l.cfg.Schedule.Caps(day)
		p := DayPlan{Date: t.Format(time.DateOnly), Day: max(day, 0), DailyCap: daily, HourlyCap: hourly}
		if !limited {
			p.DailyCap, p.HourlyCap = -1, -1
		}
		out = append(out, p)
		if !limited {
			break
		}
	}
	return out
}
