package account

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sesame-mail/sesame/store"
)

// Quota refusals; the submission service words them as SES does.
var (
	ErrDailyQuota = errors.New("daily message quota exceeded")
	ErrSendRate   = errors.New("maximum sending rate exceeded")
)

// QuotaDefaults are the configured quotas; a credential's own (non-zero)
// DailyQuota and MaxSendRate override the production ones.
type QuotaDefaults struct {
	Daily, SandboxDaily int     // recipients per rolling 24 hours
	Rate, SandboxRate   float64 // recipients per second
}

// Limits are the quotas that apply to one credential.
type Limits struct {
	Daily int
	Rate  float64
}

// Limits returns the quotas of c: the sandbox's while it is sandboxed,
// else its own or the defaults.
func (d QuotaDefaults) Limits(c store.Credential) Limits {
	if c.Sandbox {
		return Limits{Daily: d.SandboxDaily, Rate: d.SandboxRate}
	}
	l := Limits{Daily: d.Daily, Rate: d.Rate}
	if c.DailyQuota > 0 {
		l.Daily = c.DailyQuota
	}
	if c.MaxSendRate > 0 {
		l.Rate = c.MaxSendRate
	}
	return l
}

// Usage is where the daily count lives: the store counts every queued
// recipient per credential in hour buckets, so the count survives a
// restart.
type Usage interface {
	SentByHour(ctx context.Context, name string, since time.Time) (map[time.Time]int, error)
}

// Quotas enforces sending quotas, counted per recipient as SES does: a
// rolling 24-hour total in hour buckets, read from the store once per
// credential and then kept in memory as messages are queued, and a
// per-second rate kept as a token bucket (a restart forgets at most one
// second of it). This process must be the only one queueing a credential's
// mail, which holds for one node; several nodes on one PostgreSQL will need
// the count in the store. Safe for concurrent use.
type Quotas struct {
	usage    Usage
	defaults QuotaDefaults
	now      func() time.Time

	mu    sync.Mutex // guards state
	state map[string]*quotaState
}

type quotaState struct {
	mu      sync.Mutex
	hours   map[time.Time]int // recipients queued per hour; nil until loaded from the store
	pending int               // reserved by transactions not yet committed to the store
	tokens  float64           // rate bucket
	refill  time.Time         // when tokens was last brought up to date
}

// NewQuotas returns quotas counting with usage.
func NewQuotas(usage Usage, defaults QuotaDefaults, now func() time.Time) *Quotas {
	return &Quotas{usage: usage, defaults: defaults, now: now, state: map[string]*quotaState{}}
}

// Reserve admits n more recipients for c, or refuses with ErrDailyQuota or
// ErrSendRate; other errors come from the store. On success the caller
// must call done once, with whether the message was queued: until then the
// n recipients count as pending, so concurrent sessions of one credential
// cannot overshoot together, and once queued they count in the day's total.
func (q *Quotas) Reserve(ctx context.Context, c store.Credential, n int) (done func(queued bool), err error) {
	lim := q.defaults.Limits(c)
	q.mu.Lock()
	st := q.state[c.Name]
	if st == nil {
		st = &quotaState{tokens: bucketSize(lim.Rate), refill: q.now()}
		q.state[c.Name] = st
	}
	q.mu.Unlock()

	st.mu.Lock()
	defer st.mu.Unlock()
	now := q.now()
	dayStart := now.Add(-24 * time.Hour).Truncate(time.Hour)
	if st.hours == nil {
		hours, err := q.usage.SentByHour(ctx, c.Name, dayStart)
		if err != nil {
			return nil, fmt.Errorf("account: quota of %q: %w", c.Name, err)
		}
		st.hours = hours
	}
	sent := 0
	for h, count := range st.hours {
		if h.Before(dayStart) {
			delete(st.hours, h)
			continue
		}
		sent += count
	}
	if sent+st.pending+n > lim.Daily {
		return nil, ErrDailyQuota
	}
	st.tokens = min(bucketSize(lim.Rate), st.tokens+now.Sub(st.refill).Seconds()*lim.Rate)
	st.refill = now
	// A message with more recipients than the bucket holds may go when the
	// bucket is full; the debt then holds back the next ones.
	if st.tokens < min(float64(n), bucketSize(lim.Rate)) {
		return nil, ErrSendRate
	}
	st.tokens -= float64(n)
	st.pending += n
	var once sync.Once
	return func(queued bool) {
		once.Do(func() {
			st.mu.Lock()
			defer st.mu.Unlock()
			st.pending -= n
			if queued {
				st.hours[q.now().Truncate(time.Hour)] += n
			}
		})
	}, nil
}

// bucketSize is how many recipients may go at once: one second's worth, at
// least one.
func bucketSize(rate float64) float64 { return max(rate, 1) }
