package inbound

import (
	"net/netip"
	"sync"
	"time"
)

// The processing budget of report senders. Port 25 is open to anyone, and
// reading a report costs CPU (parsing, a DKIM verification, a store
// lookup): each client address earns processing time at a fixed rate into
// a bucket of limited size, pays for every report it sends with the time
// the report took, and while its bucket is empty its reports are stored
// unexamined. A mailbox provider's feedback loop spends a few milliseconds
// a report and never empties its bucket; a client sending costly reports
// one after the other gets a small share of one CPU at most.
//
// The time is real time measured around the work (monotonic clock), not
// the server's Now, which dates records and may be a test clock.

// Defaults of the budget (Config.ReportBudget, Config.ReportBudgetRate).
const (
	defaultReportBudget     = 10 * time.Second // the bucket: a burst of that much processing
	defaultReportBudgetRate = 0.1              // seconds earned per second: a tenth of a CPU, sustained
	// maxBudgetClients bounds the addresses tracked. Past it, those whose
	// bucket is full again are forgotten; if that is not enough, all are.
	maxBudgetClients = 10000
)

// budget is a token bucket of processing time per client address (IPv6
// per /64: one host owns a /64 and could change address within it).
type budget struct {
	size time.Duration
	rate float64 // seconds earned per second

	mu      sync.Mutex
	clients map[netip.Addr]*bucket
}

type bucket struct {
	balance time.Duration // negative: in debt
	at      time.Time     // when balance was last brought up to date
}

func newBudget(size time.Duration, rate float64) *budget {
	return &budget{size: size, rate: rate, clients: map[netip.Addr]*bucket{}}
}

// budgetKey is the address a client's spending is counted under.
func budgetKey(ip netip.Addr) netip.Addr {
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.Addr()
	}
	return ip
}

// refill brings b up to date at now.
func (bg *budget) refill(b *bucket, now time.Time) {
	earned := time.Duration(float64(now.Sub(b.at)) * bg.rate)
	b.balance = min(bg.size, b.balance+earned)
	b.at = now
}

// allow reports whether ip may have a report examined now: its bucket is
// not empty. A client seen for the first time has a full bucket.
func (bg *budget) allow(ip netip.Addr, now time.Time) bool {
	bg.mu.Lock()
	defer bg.mu.Unlock()
	b, ok := bg.clients[budgetKey(ip)]
	if !ok {
		return true
	}
	bg.refill(b, now)
	return b.balance > 0
}

// charge takes spent from ip's bucket. The balance may go below zero: a
// report is never cut short, but its client then waits the longer.
func (bg *budget) charge(ip netip.Addr, spent time.Duration, now time.Time) {
	bg.mu.Lock()
	defer bg.mu.Unlock()
	key := budgetKey(ip)
	b, ok := bg.clients[key]
	if !ok {
		if len(bg.clients) >= maxBudgetClients {
			bg.forget(now)
		}
		b = &bucket{balance: bg.size, at: now}
		bg.clients[key] = b
	}
	bg.refill(b, now)
	b.balance -= spent
}

// forget drops the clients whose bucket is full again, or all of them if
// none is: their debts are forgiven rather than the memory growing.
func (bg *budget) forget(now time.Time) {
	for k, b := range bg.clients {
		if bg.refill(b, now); b.balance >= bg.size {
			delete(bg.clients, k)
		}
	}
	if len(bg.clients) >= maxBudgetClients {
		clear(bg.clients)
	}
}
