package smtpd

import (
	"context"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// DefaultMaxInflightBytes is the memory budget for messages when
// Config.MaxInflightBytes is 0: a dozen messages of SES's maximum size.
const DefaultMaxInflightBytes = 512 << 20

// inflightWait bounds how long a message waits for room in the budget.
// The client is waiting for the reply to its data meanwhile, which RFC
// 5321 §4.5.3.2.6 lets take 10 minutes.
const inflightWait = 2 * time.Minute

// errInflight refuses a message that found no room in the memory budget
// within inflightWait. 452 is RFC 5321's "insufficient system storage"
// and 4.3.1 RFC 3463's "mail system full": temporary, so the client keeps
// the message and tries again.
var errInflight = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1},
	Message: "Insufficient system resources: too much mail is being received at once; try again later"}

// inflight is the submission service's memory budget for whole messages:
// a message larger than a pooled buffer arrives into a spool file
// (msgbuf.go), and is read into memory, to be signed and queued, only
// once it has a reservation here. Reservations are granted first come,
// first served, within max in total and a quarter of max for one client
// network (/32, /64, as for failed logins), so neither many large uploads
// nor one client's can take the server's memory, and a burst of them is
// queued one after the other rather than refused. (Reserving as the bytes
// arrived and refusing the upload that found no more room failed a burst
// of 30 uploads of 40 MB whole: each held a part, none could grow.) Safe
// for concurrent use.
type inflight struct {
	max, maxPerNetwork int64

	mu      sync.Mutex
	total   int64
	nets    map[string]int64
	waiting []*waiter // in order of arrival
}

type waiter struct {
	network string
	n       int64
	granted chan struct{} // closed when the reservation is made
}

// newInflight returns a budget of total bytes, a quarter of it for each
// network; both are raised to largest, so that the largest message can
// always be reserved alone.
func newInflight(total, largest int64) *inflight {
	return &inflight{max: max(total, largest), maxPerNetwork: max(total/4, largest), nets: map[string]int64{}}
}

// fits reports whether n bytes more for network stay within the bounds.
// b.mu is held.
func (b *inflight) fits(network string, n int64) bool {
	return b.total+n <= b.max && b.nets[network]+n <= b.maxPerNetwork
}

func (b *inflight) take(network string, n int64) {
	b.total += n
	b.nets[network] += n
}

// reserve takes n bytes for network at once, or reports false when they do
// not fit or others are waiting (who come first).
func (b *inflight) reserve(network string, n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.waiting) > 0 || !b.fits(network, n) {
		return false
	}
	b.take(network, n)
	return true
}

// wait takes n bytes for network, in its turn; errInflight when ctx ends
// first, or at once when n could never fit.
func (b *inflight) wait(ctx context.Context, network string, n int64) error {
	w := &waiter{network: network, n: n, granted: make(chan struct{})}
	b.mu.Lock()
	if n > b.maxPerNetwork {
		b.mu.Unlock()
		return errInflight
	}
	b.waiting = append(b.waiting, w)
	b.grant()
	b.mu.Unlock()
	select {
	case <-w.granted:
		return nil
	case <-ctx.Done():
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-w.granted:
		return nil // granted as ctx ended: keep it, the caller releases it
	default:
	}
	for i, x := range b.waiting {
		if x == w {
			b.waiting = append(b.waiting[:i], b.waiting[i+1:]...)
			break
		}
	}
	b.grant() // those behind w may fit where w did not
	return errInflight
}

// release gives back n bytes reserved for network.
func (b *inflight) release(network string, n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.total -= n
	if b.nets[network] -= n; b.nets[network] <= 0 {
		delete(b.nets, network)
	}
	b.grant()
}

// grant makes the reservations of the waiters that fit now, in order of
// arrival. The first that does not fit in the total stops the line, so a
// large message is not passed over forever by smaller ones; one whose
// network has its share already lets the others go ahead. b.mu is held.
func (b *inflight) grant() {
	for i := 0; i < len(b.waiting); {
		w := b.waiting[i]
		if b.total+w.n > b.max {
			return
		}
		if b.nets[w.network]+w.n > b.maxPerNetwork {
			i++
			continue
		}
		b.take(w.network, w.n)
		close(w.granted)
		b.waiting = append(b.waiting[:i], b.waiting[i+1:]...)
	}
}

// bytes is the total reserved now.
func (b *inflight) bytes() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.total
}

// InflightBytes is the memory reserved now for messages being signed and
// queued (Config.MaxInflightBytes bounds it).
func (s *Server) InflightBytes() int64 { return s.inflight.bytes() }
