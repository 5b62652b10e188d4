package relay

import (
	"context"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sesame-mail/sesame/store"
	"github.com/sesame-mail/sesame/warmup"
)

// Warm-up and provider shaping (package warmup decides; this file applies
// its decisions to deliveries).
//
// Before a leg is sent, its IP pool (the credential's) and provider group
// (from the MX host names) name a waiting line, "pool/provider". The
// Limiter grants the leg's recipients to the IP of the pool with the most
// head-room, or says none may go now. Recipients that may not go are
// parked in their line in the store (state deferred, never due by time),
// and so is every new recipient of a line that already has mail waiting,
// so that a line is served in arrival order. The dispatcher releases a
// line's oldest recipients (ClaimParked) when the Limiter has capacity for
// them, and otherwise sleeps until the earliest time a line opens.

// refreshInterval bounds how often the dispatcher rereads the IP pauses and
// suspensions after the store signals a change (an operator's `sesame ip
// resume` arrives that way).
const refreshInterval = time.Second

// lineName names the waiting line of pool × provider.
func lineName(pool, provider string) string { return pool + "/" + provider }

// splitLine is lineName's inverse.
func splitLine(line string) (pool, provider string) {
	pool, provider, _ = strings.Cut(line, "/")
	return pool, provider
}

// poolOf is the IP pool of d's credential.
func poolOf(d store.Delivery) string {
	if d.Pool == "" {
		return warmup.DefaultPool
	}
	return d.Pool
}

// lines counts what waits in each line. Workers and the dispatcher share
// it.
type lines struct {
	mu        sync.Mutex
	parked    map[string]int       // recipients parked in the store
	releasing map[string]int       // released to the window and not yet finished
	notBefore map[string]time.Time // do not release before: the Limiter said so when they parked
}

func newLines() *lines {
	return &lines{parked: map[string]int{}, releasing: map[string]int{}, notBefore: map[string]time.Time{}}
}

// busy reports whether line has mail waiting that new mail must not pass.
func (w *lines) busy(line string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.parked[line] > 0 || w.releasing[line] > 0
}

// parkedIn records n recipients parked in line (once the store has them);
// until, if not zero, is when the Limiter expects capacity. It reports
// whether the line was empty.
func (w *lines) parkedIn(line string, n int, until time.Time) (first bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	first = w.parked[line] == 0
	w.parked[line] += n
	if !until.IsZero() && until.After(w.notBefore[line]) {
		w.notBefore[line] = until
	}
	return first
}

// finished records that n released recipients of line are done with.
func (w *lines) finished(line string, n int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.releasing[line] -= n; w.releasing[line] <= 0 {
		delete(w.releasing, line)
	}
}

// reset forgets every notBefore: an operator changed the IPs' state.
func (w *lines) reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	clear(w.notBefore)
}

// load replaces the parked counts with the store's.
func (w *lines) load(counts map[string]int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.parked = counts
}

// lineState is a line with parked mail, as the dispatcher sees it.
type lineState struct {
	line      string
	parked    int
	releasing int
	notBefore time.Time
}

func (w *lines) snapshot() []lineState {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []lineState
	for line, n := range w.parked {
		if n > 0 {
			out = append(out, lineState{line, n, w.releasing[line], w.notBefore[line]})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].line < out[j].line })
	return out
}

// released records that got of the asked recipients of line left the
// store for the window. Fewer than asked means the store had no more (the
// operator deleted some): the line is empty.
func (w *lines) released(line string, got, asked int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.releasing[line] += got
	w.parked[line] -= got
	if got < asked || w.parked[line] <= 0 {
		delete(w.parked, line)
	}
}

// loadShaping reads the IPs' counters and states and the parked counts
// from the store, at start-up.
func (r *Relay) loadShaping(ctx context.Context) error {
	now := r.now()
	// Only today's counts matter; two days are kept for operators.
	if err := r.q.PruneIPSends(ctx, now.Add(-48*time.Hour)); err != nil {
		return err
	}
	sends, err := r.q.IPSends(ctx, now.Add(-24*time.Hour))
	if err != nil {
		return err
	}
	susp, err := r.q.IPSuspensions(ctx)
	if err != nil {
		return err
	}
	pauses, err := r.q.IPPauses(ctx)
	if err != nil {
		return err
	}
	r.shaper.Load(now, sends, susp, pauses)
	counts, err := r.q.ParkedCounts(ctx)
	if err != nil {
		return err
	}
	r.lines.load(counts)
	return nil
}

// refreshShaping rereads the IPs' pauses.
func (r *Relay) refreshShaping(ctx context.Context) {
	pauses, err := r.q.IPPauses(ctx)
	if err != nil {
		r.log.Error("relay: reading the outbound IPs' pauses failed", "err", err)
		return
	}
	if r.shaper.SetPauses(pauses) {
		r.lines.reset() // what the Limiter said about when lines open may no longer hold
	}
}

// usableFrom reports which source addresses can reach one of targets: an
// IPv4 source needs an IPv4 target, and so on.
func usableFrom(targets []target) func(netip.Addr) bool {
	var has4, has6 bool
	for _, t := range targets {
		for _, a := range t.addrs {
			has4, has6 = has4 || a.Is4(), has6 || a.Is6()
		}
	}
	return func(a netip.Addr) bool { return (a.Is4() && has4) || (a.Is6() && has6) }
}

// hostsOf lists the targets' host names, best first.
func hostsOf(targets []target) []string {
	out := make([]string, len(targets))
	for i, t := range targets {
		out[i] = t.name
	}
	return out
}

// parkAll parks rcpts in line without an attempt.
func parkAll(rcpts []store.DueRecipient, line, reason string, until time.Time) []result {
	res := make([]result, len(rcpts))
	for i, rc := range rcpts {
		res[i] = result{rcpt: rc, state: store.StateDeferred, reply: reason, status: "4.4.5", own: true,
			park: line, notAttempted: true, parkUntil: until}
	}
	return res
}

// releaseParked moves the oldest parked recipients of every line that has
// capacity into the window, and returns the earliest time a line that has
// none may open (zero if none will by itself).
func (d *dispatcher) releaseParked(ctx context.Context) time.Time {
	r := d.r
	if r.shaper == nil {
		return time.Time{}
	}
	now := r.now()
	var wake time.Time
	earliest := func(t time.Time) {
		if !t.IsZero() && (wake.IsZero() || t.Before(wake)) {
			wake = t
		}
	}
	for _, w := range r.lines.snapshot() {
		if d.windowed >= maxWindow {
			break // finishing deliveries wake the dispatcher
		}
		if now.Before(w.notBefore) {
			earliest(w.notBefore)
			continue
		}
		pool, provider := splitLine(w.line)
		avail := r.shaper.Available(pool, provider, now) - w.releasing
		if avail <= 0 {
			if w.releasing == 0 { // else their deliveries finishing wake us
				earliest(r.shaper.Opens(pool, provider, now))
			}
			continue
		}
		n := min(avail, w.parked, claimBatch, maxWindow-d.windowed)
		ds, err := r.q.ClaimParked(ctx, w.line, now, n, leaseTime)
		if err != nil {
			if ctx.Err() == nil {
				r.log.Error("relay: releasing parked mail failed", "line", w.line, "err", err)
			}
			earliest(now.Add(storeRetry))
			continue
		}
		got := 0
		for _, del := range ds {
			got += len(del.Recipients)
		}
		r.lines.released(w.line, got, n)
		for _, del := range ds {
			d.admit(del)
		}
		r.log.Info("relay: released mail that waited for capacity", "line", w.line, "recipients", got,
			"still_waiting", max(0, w.parked-got))
	}
	return wake
}
