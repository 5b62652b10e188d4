// Package warmup decides how much mail each outbound IP may send, and
// when: the warm-up schedule that ramps a new IP up over weeks, the shaping
// per mailbox provider (Google, Microsoft, Yahoo, Apple, and the operator's
// own groups), and the suspension of an IP × provider after the provider's
// throttling replies.
//
// A Limiter holds the counters of the current hour and day in memory and
// answers Acquire (which IP may send n messages to this provider now, the
// one with the most head-room) and Opens (when capacity comes back). It
// never blocks and never touches the disk: the relay persists the counts of
// each delivery with its outcomes, and loads them at start-up (Load), so a
// restart neither resets nor double-counts a window.
//
// Windows are UTC clock hours and UTC days. Warm-up day 1 is the IP's
// warm-up start date.
package warmup

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// DefaultPool is the pool of credentials that were not given one.
const DefaultPool = "default"

// OtherProvider names destinations that belong to no provider group.
const OtherProvider = "other"

// IP is one outbound address.
type IP struct {
	// Addr is the local address to send from; invalid for the implicit IP
	// used when none is configured (the operating system chooses).
	Addr netip.Addr
	Pool string
	// Start is warm-up day 1 (a UTC date); zero for an IP that is already
	// warm.
	Start time.Time
}

// Name is the IP as shown to operators and stored with its counters.
func (ip IP) Name() string {
	if !ip.Addr.IsValid() {
		return "auto"
	}
	return ip.Addr.String()
}

// Day is the IP's warm-up day at now: 1 on its start date. It is 0 for a
// warm IP and negative before the start date.
func (ip IP) Day(now time.Time) int {
	if ip.Start.IsZero() {
		return 0
	}
	d := int(dayStart(now).Sub(dayStart(ip.Start)) / (24 * time.Hour))
	if d < 0 {
		return d
	}
	return d + 1
}

// Schedule is the warm-up schedule: a daily cap by warm-up day, spread over
// the day by an hourly cap.
type Schedule struct {
	// Daily[i] caps warm-up day i+1; from the day after the last one the IP
	// is warm and unlimited.
	Daily []int
	// SpreadHours: the hourly cap is the daily cap divided by this,
	// rounded up, so no hour can use more than 1/SpreadHours of the day.
	SpreadHours int
}

// DefaultDaily is the default schedule: 50 messages on day 1, doubling for
// three days, then growing by half a day until day 22 and by a fifth a day
// until day 35, after which the IP is warm (5 weeks). It follows the shape
// of the schedules mailbox providers and the large senders publish (start
// in the tens, grow 1.5–2× a day while the reputation holds, about a month
// in all); see docs/warmup.md.
var DefaultDaily = defaultDaily()

func defaultDaily() []int {
	var out []int
	v := 50.0
	for day := 1; day <= 35; day++ {
		out = append(out, roundCap(v))
		switch {
		case day < 4:
			v *= 2
		case day < 22:
			v *= 1.5
		default:
			v *= 1.2
		}
	}
	return out
}

// roundCap keeps two significant digits, so the schedule reads well.
func roundCap(v float64) int {
	if v < 100 {
		return int(math.Round(v))
	}
	p := math.Pow(10, math.Floor(math.Log10(v))-1)
	return int(math.Round(v/p) * p)
}

// DefaultSpreadHours spreads a day's cap over at least 12 hours.
const DefaultSpreadHours = 12

// Caps returns the daily and hourly caps of an IP on warm-up day (as IP.Day
// gives it); limited is false for a warm IP. Before the start date both
// caps are 0: the IP is not in service yet.
func (s Schedule) Caps(day int) (daily, hourly int, limited bool) {
	switch {
	case day < 0:
		return 0, 0, true
	case day == 0 || day > len(s.Daily):
		return 0, 0, false
	}
	daily = s.Daily[day-1]
	spread := max(s.SpreadHours, 1)
	return daily, (daily + spread - 1) / spread, true
}

// Provider is a group of destination domains recognised by their mail
// exchangers' host names, with its own limits per IP.
type Provider struct {
	Name string
	// MX lists host name suffixes: a destination whose MX host is one of
	// them, or under one, belongs to the group.
	MX []string
	// WarmupHourly caps the messages per IP per hour to this provider while
	// the IP is warming up; 0: only the IP's own caps.
	WarmupHourly int
	// Hourly caps them once the IP is warm; 0: no cap.
	Hourly int
	// PerConnection caps the messages sent over one connection; 0: no cap.
	PerConnection int
}

// DefaultProviders are the groups Sesame knows without configuration: the
// four largest mailbox providers, with caps conservative enough for a new IP.
// Their MX host names are the providers' own (Google Workspace domains point
// at google.com hosts, Microsoft 365 ones at outlook.com, AOL at Yahoo's).
func DefaultProviders() []Provider {
	return []Provider{
		{Name: "google", MX: []string{"google.com", "googlemail.com"}, WarmupHourly: 1000, PerConnection: 100},
		{Name: "microsoft", MX: []string{"outlook.com", "hotmail.com"}, WarmupHourly: 500, PerConnection: 20},
		{Name: "yahoo", MX: []string{"yahoodns.net", "yahoo.com", "aol.com"}, WarmupHourly: 500, PerConnection: 20},
		{Name: "apple", MX: []string{"icloud.com", "me.com", "apple.com"}, WarmupHourly: 500, PerConnection: 20},
	}
}

// MergeProviders returns base with own applied over it: a group of own
// replaces the group of base with the same name, in base's place; the
// others follow in their order. This is how an operator's [[provider]]
// changes one of DefaultProviders or adds one. MX suffixes are compared
// without case and without a final dot, so they are stored that way.
func MergeProviders(base, own []Provider) []Provider {
	out := slices.Clone(base)
	for _, p := range own {
		p.MX = slices.Clone(p.MX)
		for i, h := range p.MX {
			p.MX[i] = strings.ToLower(strings.TrimSuffix(h, "."))
		}
		if i := slices.IndexFunc(out, func(q Provider) bool { return q.Name == p.Name }); i >= 0 {
			out[i] = p
		} else {
			out = append(out, p)
		}
	}
	return out
}

// Config is what a Limiter needs.
type Config struct {
	IPs       []IP // in configuration order; at least one
	Schedule  Schedule
	Providers []Provider
	// Backoff is the first suspension of an IP × provider after a
	// throttling reply; it doubles for each further one up to BackoffMax,
	// and starts over after a delivery succeeds there.
	Backoff    time.Duration
	BackoffMax time.Duration
}

// Default suspension lengths.
const (
	DefaultBackoff    = 15 * time.Minute
	DefaultBackoffMax = 4 * time.Hour
)

// matches reports whether host is suffix or a name under it.
func matches(host, suffix string) bool {
	return host == suffix || strings.HasSuffix(host, "."+suffix)
}

// Classify returns the provider group of a destination whose mail
// exchangers are hosts (best first): the group of the first host any group
// claims, or OtherProvider.
func Classify(providers []Provider, hosts []string) string {
	for _, h := range hosts {
		h = strings.ToLower(strings.TrimSuffix(h, "."))
		for _, p := range providers {
			for _, s := range p.MX {
				if matches(h, s) {
					return p.Name
				}
			}
		}
	}
	return OtherProvider
}

// throttleWords are what providers write when they slow a sender down
// rather than refuse the mail (Gmail's 4.7.28 "unusual rate", Microsoft's
// 4.7.650 "temporarily rate limited", Yahoo's TSS04 "temporarily
// deferred", and the common "try again later").
var throttleWords = []string{"rate limit", "ratelimit", "rate-limit", "rate limited", "unusual rate",
	"try again later", "too many", "throttl", "temporarily deferred", "temporarily rate"}

// IsThrottle reports whether a temporary reply from a provider's server
// says the sender is going too fast: 421 (the server closes the
// connection), a 4.7.x status (451 4.7.x and others), or the wording above
// on any 4xx.
func IsThrottle(code int, status, text string) bool {
	if code < 400 || code >= 500 {
		return false
	}
	if code == 421 || strings.HasPrefix(status, "4.7.") {
		return true
	}
	t := strings.ToLower(text)
	for _, w := range throttleWords {
		if strings.Contains(t, w) {
			return true
		}
	}
	return false
}

// hourStart and dayStart are the UTC windows counters belong to.
func hourStart(t time.Time) time.Time { return t.UTC().Truncate(time.Hour) }
func dayStart(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
}

// ParseDate reads a warm-up start date, "2006-01-02", as a UTC date.
func ParseDate(s string) (time.Time, error) {
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("warm-up start %q: want a date as YYYY-MM-DD", s)
	}
	return t, nil
}
