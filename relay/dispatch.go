package relay

import (
	"context"
	"sort"
	"strings"
	"time"

	"github.com/sesame-mail/sesame/store"
)

const (
	// maxWindow bounds the claimed messages held in memory waiting for a
	// worker (Postfix's active queue). A delivery in the window costs a few
	// hundred bytes: its bytes are read only when it starts.
	maxWindow = 10000
	// claimBatch bounds one claim, keeping its transaction short: the same
	// committer serves the submissions waiting for their fsync.
	claimBatch = 500
	// claimSpacing is the least time between two claims that return less
	// than a full batch. Under load, mail arrives every millisecond or two and
	// each arrival wakes the dispatcher; claiming at each wake-up would cost
	// one store transaction (and fsync) per message, in the committer that
	// submissions wait on. Spaced claims gather the arrivals of 10 ms into
	// one. An arrival after a quiet spell is claimed at once.
	claimSpacing = 10 * time.Millisecond
)

// dispatcher starts the deliveries of claimed mail, each in a goroutine of
// its own, as many at a time as MemoryBudget holds (each counts its
// message's size and deliveryOverhead) and at most Workers when that is
// set, DomainConcurrency per destination domain, and no more than
// credentialShare of either for one credential, so that one sender's slow
// mail never holds every slot while another's waits. How many connections
// each receiving server gets is the windows' business (window.go): a
// delivery waits there, holding memory but no CPU. Claimed mail waits in a
// window of queues, one per credential and destination, served round-robin
// so that a sender or a domain with a backlog (or a slow one) does not hold
// up the others, and in arrival order within a queue. It runs in one
// goroutine, so its maps need no lock.
type dispatcher struct {
	r      *Relay
	launch func(store.Delivery) // starts a delivery, which reports on done
	done   <-chan store.Delivery

	busy     int
	spent    int64                       // memory held by the deliveries in flight (cost)
	byServer map[string]int              // deliveries in flight per receiving server (serversOf)
	servers  map[string][]string         // by holdKey of a delivery's first recipient: the servers it counts against
	byCred   map[string]credUse          // deliveries in flight per credential
	inflight map[string]int              // deliveries in flight per destination domain
	held     map[string]holdState        // queue id + recipient, claimed and not yet finished
	again    map[string][]store.Delivery // by queue id: claimed again while in flight
	queues   map[string][]store.Delivery // waiting deliveries by destination key
	ring     []string                    // keys of non-empty queues, served in turn
	next     int                         // ring position
	windowed int                         // deliveries waiting in queues
}

// holdState is where a claimed recipient is.
type holdState uint8

const (
	waiting holdState = iota + 1 // in the window
	flying                       // with a worker
)

// credUse is what one credential's deliveries in flight hold.
type credUse struct {
	n     int
	spent int64
}

// deliveryOverhead is the memory one delivery in flight is counted for
// besides its message: its goroutines, its results, and a connection's
// buffers and TLS state (TestMemoryOfOpenConnections measures it).
const deliveryOverhead = 64 << 10

// cost is what del is counted for against the memory budget.
func cost(del store.Delivery) int64 { return int64(del.Size) + deliveryOverhead }

func newDispatcher(r *Relay, launch func(store.Delivery), done <-chan store.Delivery) *dispatcher {
	return &dispatcher{r: r, launch: launch, done: done, byCred: map[string]credUse{}, inflight: map[string]int{},
		byServer: map[string]int{}, servers: map[string][]string{},
		held: map[string]holdState{}, again: map[string][]store.Delivery{}, queues: map[string][]store.Delivery{}}
}

// credentialShare is the most one credential may have in flight out of
// slots (deliveries, or bytes of the budget): three quarters, so that
// whatever one sender's mail is stuck on, another's starts at once.
func credentialShare[T int | int64](slots T) T {
	return max(1, slots-slots/4)
}

// room reports whether another delivery may start at all.
func (d *dispatcher) room() bool {
	return (d.r.cfg.Workers == 0 || d.busy < d.r.cfg.Workers) && d.spent < d.r.cfg.MemoryBudget
}

func holdKey(queueID, rcpt string) string { return queueID + "\x00" + rcpt }

// destinations are the domains a delivery counts against; none for the
// smarthost, which is one server (serversOf).
func (d *dispatcher) destinations(del store.Delivery) []string {
	if d.r.smarthost != nil {
		return nil
	}
	var out []string
	for _, rc := range del.Recipients {
		dom := store.AddressDomain(rc.Address)
		if !contains(out, dom) {
			out = append(out, dom)
		}
	}
	sort.Strings(out)
	return out
}

// serversOf are the receiving servers a delivery counts against: the
// smarthost, or the server each of its domains was last delivered to
// (Relay.servers); a domain not seen yet counts against none. So the
// deliveries waiting for one server's window (the 500 domains behind one
// provider's MX) hold at most serverShare of the slots, whatever the
// domains.
func (d *dispatcher) serversOf(del store.Delivery) []string {
	if d.r.smarthost != nil {
		return []string{"smarthost"}
	}
	var out []string
	for _, dom := range d.destinations(del) {
		if ip, ok := d.r.servers.of(dom); ok && !contains(out, ip) {
			out = append(out, ip)
		}
	}
	return out
}

// serverShare is the most deliveries in flight for one receiving server:
// twice as many as its window may have connections, so that the window
// stays full while some deliveries read their message, resolve or record.
func (d *dispatcher) serverShare() int {
	if d.r.smarthost != nil {
		return 2 * d.r.cfg.SmarthostConcurrency
	}
	return 2 * d.r.cfg.DestinationConcurrency
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (d *dispatcher) fits(del store.Delivery) bool {
	c, cfg := d.byCred[del.Credential], d.r.cfg
	if cfg.Workers > 0 && c.n >= credentialShare(cfg.Workers) {
		return false
	}
	// The budget admits one delivery however large, so that a message
	// bigger than it still goes, alone.
	if d.busy > 0 && d.spent+cost(del) > cfg.MemoryBudget {
		return false
	}
	if c.n > 0 && c.spent+cost(del) > credentialShare(cfg.MemoryBudget) {
		return false
	}
	for _, srv := range d.serversOf(del) {
		if d.byServer[srv] >= d.serverShare() {
			return false
		}
	}
	for _, dom := range d.destinations(del) {
		if d.inflight[dom] >= d.r.cfg.DomainConcurrency {
			return false
		}
	}
	return true
}

// admit takes a claimed delivery into the window. A recipient the window
// already holds was handed out again by the queue: if it waits here, its
// lease ran out and the claim renewed it, so the copy is dropped; if it is
// with a worker, its outcome was saved (due again at once) before the worker
// reported back, so the copy is kept until that delivery finishes, then
// admitted.
func (d *dispatcher) admit(del store.Delivery) {
	fresh := del.Recipients[:0:0]
	var later []store.DueRecipient
	for _, rc := range del.Recipients {
		switch d.held[holdKey(del.QueueID, rc.Address)] {
		case waiting:
			if del.Parked != "" {
				d.r.lines.finished(del.Parked, 1) // never reaches a worker
			}
		case flying:
			later = append(later, rc)
		default:
			d.held[holdKey(del.QueueID, rc.Address)] = waiting
			fresh = append(fresh, rc)
		}
	}
	if len(later) > 0 {
		again := del
		again.Recipients = later
		d.again[del.QueueID] = append(d.again[del.QueueID], again)
	}
	if len(fresh) == 0 {
		return
	}
	del.Recipients = fresh
	key := del.Credential + "\x00" + strings.Join(d.destinations(del), " ")
	if len(d.queues[key]) == 0 {
		d.ring = append(d.ring, key)
	}
	d.queues[key] = append(d.queues[key], del)
	d.windowed++
}

// startReady hands waiting deliveries to free workers, one destination at a
// time in turn, while any head of queue fits. It reports whether deliveries
// are waiting that could not start for want of destination capacity.
func (d *dispatcher) startReady() (blocked bool) {
	for d.room() && len(d.ring) > 0 {
		started := false
		for range len(d.ring) {
			if d.next >= len(d.ring) {
				d.next = 0
			}
			key := d.ring[d.next]
			q := d.queues[key]
			if !d.fits(q[0]) {
				d.next++
				continue
			}
			d.start(q[0])
			q[0] = store.Delivery{}
			if q = q[1:]; len(q) == 0 {
				delete(d.queues, key)
				d.ring = append(d.ring[:d.next], d.ring[d.next+1:]...)
			} else {
				d.queues[key] = q
				d.next++
			}
			started = true
			break
		}
		if !started {
			return true
		}
	}
	return false
}

func (d *dispatcher) start(del store.Delivery) {
	for _, dom := range d.destinations(del) {
		d.inflight[dom]++
	}
	for _, rc := range del.Recipients {
		d.held[holdKey(del.QueueID, rc.Address)] = flying
	}
	// What a domain maps to may change while the delivery runs: finish
	// takes back what start counted.
	srvs := d.serversOf(del)
	for _, srv := range srvs {
		d.byServer[srv]++
	}
	d.servers[holdKey(del.QueueID, del.Recipients[0].Address)] = srvs
	d.busy++
	d.spent += cost(del)
	c := d.byCred[del.Credential]
	d.byCred[del.Credential] = credUse{n: c.n + 1, spent: c.spent + cost(del)}
	d.windowed--
	d.launch(del)
}

func (d *dispatcher) finish(del store.Delivery) {
	key := holdKey(del.QueueID, del.Recipients[0].Address)
	for _, srv := range d.servers[key] {
		if d.byServer[srv]--; d.byServer[srv] <= 0 {
			delete(d.byServer, srv)
		}
	}
	delete(d.servers, key)
	for _, dom := range d.destinations(del) {
		if d.inflight[dom]--; d.inflight[dom] <= 0 {
			delete(d.inflight, dom)
		}
	}
	for _, rc := range del.Recipients {
		delete(d.held, holdKey(del.QueueID, rc.Address))
	}
	d.busy--
	d.spent -= cost(del)
	if c := d.byCred[del.Credential]; c.n <= 1 {
		delete(d.byCred, del.Credential)
	} else {
		d.byCred[del.Credential] = credUse{n: c.n - 1, spent: c.spent - cost(del)}
	}
	if del.Parked != "" {
		d.r.lines.finished(del.Parked, len(del.Recipients))
	}
	if again, ok := d.again[del.QueueID]; ok {
		delete(d.again, del.QueueID)
		for _, a := range again {
			d.admit(a)
		}
	}
}

// run claims due mail into the window and starts it, until ctx ends. It
// claims when the window is less than half full, or when workers are free
// and nothing waiting can use them, at most once per claimSpacing unless the
// last claim was full; otherwise, and when nothing is due, it
// sleeps until a worker finishes, new mail arrives, the next recipient is
// due, or pollInterval passes.
func (d *dispatcher) run(ctx context.Context) {
	r := d.r
	timer := time.NewTimer(pollInterval)
	defer timer.Stop()
	var refreshed time.Time // when the IPs' state was last reread
	stale := false          // the store changed since
	var claimed time.Time   // when the last claim short of a full batch ran
	for ctx.Err() == nil {
		if stale && r.shaper != nil && time.Since(refreshed) >= refreshInterval {
			r.refreshShaping(ctx)
			refreshed, stale = time.Now(), false
		}
		opens := d.releaseParked(ctx)
		blocked := d.startReady()
		free := d.room()
		wait := pollInterval
		wantMore := d.windowed < maxWindow/2 || (free && blocked && d.windowed < maxWindow)
		if gap := claimSpacing - time.Since(claimed); wantMore && gap > 0 {
			wait = gap // gather more arrivals into the next claim
		} else if wantMore {
			n := min(claimBatch, maxWindow-d.windowed)
			ds, err := r.q.Claim(ctx, r.now(), n, leaseTime)
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
			claimed = time.Now()
			d.startReady()
			if err == nil {
				wait = d.untilNextDue(ctx)
			}
		}
		if !opens.IsZero() {
			wait = min(wait, max(opens.Sub(r.now()), minWait))
		}
		if stale {
			wait = min(wait, max(refreshInterval-time.Since(refreshed), minWait))
		}
		select {
		case <-ctx.Done():
			return
		case del := <-d.done:
			d.finish(del)
		case <-r.q.Ready():
			stale = r.shaper != nil // the IPs' pauses may have changed
		case <-d.reset(timer, wait):
		}
	}
}

func (d *dispatcher) reset(t *time.Timer, wait time.Duration) <-chan time.Time {
	t.Reset(wait)
	return t.C
}

// untilNextDue is how long to sleep until the queue's next recipient is due.
func (d *dispatcher) untilNextDue(ctx context.Context) time.Duration {
	r := d.r
	next, ok, err := r.q.NextDue(ctx)
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
