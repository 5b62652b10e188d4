package relay

import (
	"context"
	"time"

	"github.com/sesame-mail/sesame/store"
)

// maxPendingPerWorker bounds the claimed messages waiting for a busy
// destination, so memory follows the number of workers, not the queue.
const maxPendingPerWorker = 2

// dispatcher hands claimed mail to the workers, at most Workers deliveries
// at a time and DomainConcurrency per destination. It is the relay's only
// reader of the queue and runs in one goroutine, so its maps need no lock.
type dispatcher struct {
	r    *Relay
	work chan<- store.Delivery
	done <-chan store.Delivery

	busy     int
	inflight map[string]int  // deliveries in flight per destination
	held     map[string]bool // queue id + recipient, claimed and not yet finished
	pending  []store.Delivery
}

func newDispatcher(r *Relay, work chan<- store.Delivery, done <-chan store.Delivery) *dispatcher {
	return &dispatcher{r: r, work: work, done: done, inflight: map[string]int{}, held: map[string]bool{}}
}

// destinations are the keys a delivery counts against: the recipients'
// domains, or the smarthost (bounded by Workers alone).
func (d *dispatcher) destinations(del store.Delivery) []string {
	if d.r.smarthost != nil {
		return nil
	}
	var out []string
	for _, rc := range del.Recipients {
		dom := store.AddressDomain(rc.Address)
		dup := false
		for _, o := range out {
			dup = dup || o == dom
		}
		if !dup {
			out = append(out, dom)
		}
	}
	return out
}

func (d *dispatcher) fits(del store.Delivery) bool {
	for _, dom := range d.destinations(del) {
		if d.inflight[dom] >= d.r.cfg.DomainConcurrency {
			return false
		}
	}
	return true
}

func (d *dispatcher) start(del store.Delivery) {
	for _, dom := range d.destinations(del) {
		d.inflight[dom]++
	}
	d.busy++
	d.work <- del
}

func (d *dispatcher) finish(del store.Delivery) {
	for _, dom := range d.destinations(del) {
		if d.inflight[dom]--; d.inflight[dom] <= 0 {
			delete(d.inflight, dom)
		}
	}
	for _, rc := range del.Recipients {
		delete(d.held, del.QueueID+"\x00"+rc.Address)
	}
	d.busy--
}

// busyDomains are the destinations at their limit, for Claim to skip.
func (d *dispatcher) busyDomains() []string {
	var out []string
	for dom, n := range d.inflight {
		if n >= d.r.cfg.DomainConcurrency {
			out = append(out, dom)
		}
	}
	return out
}

// admit takes a claimed delivery: it drops recipients already held (their
// lease ran out while they waited here, so the queue handed them out again),
// then starts it or puts it aside until its destinations have room.
func (d *dispatcher) admit(del store.Delivery) {
	fresh := del.Recipients[:0:0]
	for _, rc := range del.Recipients {
		key := del.QueueID + "\x00" + rc.Address
		if !d.held[key] {
			d.held[key] = true
			fresh = append(fresh, rc)
		}
	}
	if len(fresh) == 0 {
		return
	}
	del.Recipients = fresh
	if d.busy < d.r.cfg.Workers && d.fits(del) {
		d.start(del)
		return
	}
	d.pending = append(d.pending, del)
}

// startPending starts waiting deliveries whose destinations have room, in
// the order they were claimed.
func (d *dispatcher) startPending() {
	kept := d.pending[:0]
	for _, del := range d.pending {
		if d.busy < d.r.cfg.Workers && d.fits(del) {
			d.start(del)
			continue
		}
		kept = append(kept, del)
	}
	clear(d.pending[len(kept):])
	d.pending = kept
}

// run claims due mail for free workers until ctx ends. When nothing can be
// done it sleeps until the next recipient is due, new mail arrives, a worker
// finishes, or pollInterval passes.
func (d *dispatcher) run(ctx context.Context) {
	r := d.r
	timer := time.NewTimer(pollInterval)
	defer timer.Stop()
	maxPending := maxPendingPerWorker * r.cfg.Workers
	for ctx.Err() == nil {
		d.startPending()
		wait := pollInterval
		if free := r.cfg.Workers - d.busy; free > 0 && len(d.pending) < maxPending {
			n := min(free, maxPending-len(d.pending))
			ds, err := r.q.Claim(ctx, r.now(), n, leaseTime, d.busyDomains())
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				r.log.Error("relay: claiming due mail failed", "err", err)
				wait = storeRetry
			}
			for _, del := range ds {
				d.admit(del)
			}
			if len(ds) == n {
				continue // there may be more
			}
			if err == nil {
				wait = d.untilNextDue(ctx)
			}
		}

		// With every worker busy, only a finishing worker matters: new mail
		// waits for it, and the claim after it sees that mail.
		var ready <-chan struct{}
		var tick <-chan time.Time
		if r.cfg.Workers-d.busy > 0 {
			ready = r.q.Ready()
			timer.Reset(wait)
			tick = timer.C
		}
		select {
		case <-ctx.Done():
			return
		case del := <-d.done:
			d.finish(del)
		case <-ready:
		case <-tick:
		}
		timer.Stop()
	}
}

// untilNextDue is how long to sleep until the queue's next recipient is due.
func (d *dispatcher) untilNextDue(ctx context.Context) time.Duration {
	r := d.r
	next, ok, err := r.q.NextDue(ctx, d.busyDomains())
	switch {
	case err != nil:
		if ctx.Err() == nil {
			r.log.Error("relay: reading the next due time failed", "err", err)
		}
		return storeRetry
	case !ok:
		return pollInterval
	}
	return min(max(next.Sub(r.now()), minWait), pollInterval)
}
