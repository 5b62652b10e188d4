package relay

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/sesame-mail/sesame/store"
	"github.com/sesame-mail/sesame/warmup"
)

// maxAddrsPerLeg bounds the addresses tried for one destination in one
// attempt (Postfix's smtp_mx_address_limit), so a domain with many dead
// exchangers cannot hold a worker for long.
const maxAddrsPerLeg = 5

// worker makes one delivery attempt at one message (the dispatcher starts
// one per delivery).
type worker struct {
	r *Relay

	mu     sync.Mutex // the legs run at once
	extras extras     // what the delivery adds to its report
}

// maxLegsAtOnce bounds the destinations of one message delivered at once.
const maxLegsAtOnce = 32

// extras is what a delivery adds to its outcomes in the store.
type extras struct {
	sends   []store.IPSend   // counted against IP caps
	replies []*store.Message // the simulator's auto-replies
	events  []store.Event    // the simulator's complaints
}

// deliver makes one attempt at every recipient of d and records the
// outcomes.
func (w *worker) deliver(ctx context.Context, d store.Delivery) {
	recorded := false
	w.extras = extras{}
	defer func() {
		if p := recover(); p != nil {
			w.recovered(p, d.QueueID)
			if !recorded {
				w.r.record(ctx, d, settleAll(d.Recipients, store.StateDeferred, replyInternal, "4.3.0"), w.extras)
			}
		}
	}()

	actx, cancel := context.WithTimeout(ctx, deliveryTimeout)
	defer cancel()
	data, err := w.r.q.MessageData(actx, d.QueueID)
	if errors.Is(err, store.ErrNotFound) {
		recorded = true // deleted by the operator while it waited: nothing left to do
		w.r.log.Info("relay: message left the queue before its delivery started", "queue_id", d.QueueID)
		return
	}
	if errors.Is(err, store.ErrCorrupt) {
		// No retry can repair the bytes and a bounce would blame the
		// sender for our loss: set the message aside for the operator, as
		// Postfix moves an unreadable queue file to its corrupt queue.
		recorded = true
		id := d.QueueID
		w.r.log.Error("relay: queued message is unusable; quarantined, not retried", "queue_id", id, "err", err,
			"todo", "inspect with `sesame queue show "+id+"`, then `sesame queue delete "+id+" --bounce` (or `sesame queue retry "+id+"` once repaired)")
		w.r.record(ctx, d, settleAll(d.Recipients, store.StateQuarantined,
			"quarantined: "+err.Error()+"; see sesame queue show "+id, "4.3.0"), extras{})
		return
	}
	if err != nil {
		w.r.log.Error("relay: reading the message failed", "queue_id", d.QueueID, "err", err)
		recorded = true
		w.r.record(ctx, d, settleAll(d.Recipients, store.StateDeferred, "reading the queued message failed: "+err.Error(), "4.3.0"), extras{})
		return
	}
	d.Data = data
	results, rest, err := w.suppressed(actx, d)
	if err != nil {
		w.r.log.Error("relay: reading the suppression list failed", "queue_id", d.QueueID, "err", err)
		recorded = true
		w.r.record(ctx, d, settleAll(d.Recipients, store.StateDeferred, "reading the suppression list failed: "+err.Error(), "4.3.0"), extras{})
		return
	}
	var real []store.DueRecipient
	var simulated []store.DueRecipient
	for _, rc := range rest {
		if w.r.isSimulated(rc.Address) {
			simulated = append(simulated, rc)
		} else {
			real = append(real, rc)
		}
	}
	results = append(results, w.simulate(d, simulated)...)
	d.Recipients = real
	legs := w.r.route(d)
	found := w.r.resolveAll(actx, d.Credential, legs)
	// Every destination at once: each waits for its own server's window,
	// and a slow one does not hold up the others.
	legResults := make([][]result, len(legs))
	if len(legs) == 1 {
		legResults[0] = w.deliverLeg(actx, d, legs[0], found[0]) // no goroutine (and stack) more
	} else {
		sem := make(chan struct{}, maxLegsAtOnce)
		var wg sync.WaitGroup
		for i, l := range legs {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				legResults[i] = w.deliverLeg(actx, d, l, found[i])
			})
		}
		wg.Wait()
	}
	for _, res := range legResults {
		results = append(results, res...)
	}
	recorded = true
	w.r.record(ctx, d, results, w.extras)
}

// suppressed settles the recipients on the suppression list (accepted, as
// SES does, but never attempted) and returns the others.
func (w *worker) suppressed(ctx context.Context, d store.Delivery) ([]result, []store.DueRecipient, error) {
	addrs := make([]string, len(d.Recipients))
	for i, rc := range d.Recipients {
		addrs[i] = rc.Address
	}
	on, err := w.r.q.Suppressed(ctx, d.Credential, addrs)
	if err != nil || len(on) == 0 {
		return nil, d.Recipients, err
	}
	var results []result
	var rest []store.DueRecipient
	for _, rc := range d.Recipients {
		if on[rc.Address] {
			results = append(results, result{rcpt: rc, state: store.StateSuppressed, own: true, status: "5.1.1",
				reply: "not attempted: the address is on the suppression list (sesame suppression show " + rc.Address + ")"})
		} else {
			rest = append(rest, rc)
		}
	}
	return results, rest, nil
}

// replyInternal is the reply recorded for recipients whose attempt panicked.
const replyInternal = "internal error, see the relay log"

// recovered logs a panic.
func (w *worker) recovered(p any, queueID string) {
	w.r.log.Error("relay: delivery panicked", "queue_id", queueID,
		"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
}

// deliverLeg runs one transaction for the recipients of l with the first
// server that takes it: servers are tried in preference order, and the next
// one when a server cannot be reached or will not start a session (RFC 5321
// §5.1). Once MAIL is answered, the answers stand for this attempt. With
// shaping, only the recipients the Limiter grants are sent, from the IP it
// chooses; the others wait in their line. A panic defers l's recipients,
// and only them: other legs' results stand.
func (w *worker) deliverLeg(ctx context.Context, d store.Delivery, l leg, found resolved) (res []result) {
	defer func() {
		if p := recover(); p != nil {
			w.recovered(p, d.QueueID)
			res = settleAll(l.rcpts, store.StateDeferred, replyInternal, "4.3.0")
		}
	}()
	targets, err := found.targets, found.err
	if err != nil {
		return settleAll(l.rcpts, verdict(err), describe(err), statusOf(err))
	}
	if l.domain != "" && len(targets[0].addrs) > 0 {
		w.r.servers.learn(l.domain, targets[0].addrs[0]) // the dispatcher counts the domain's mail against it
	}
	if w.r.shaper == nil {
		return w.send(ctx, d, l.returnPath, l.rcpts, targets, warmup.Grant{})
	}
	g, line, waiting := w.acquire(d, l.rcpts, targets)
	if g.Count == 0 {
		return waiting
	}
	sent := w.send(ctx, d, l.returnPath, l.rcpts[:g.Count], targets, g)
	return append(w.shaped(g, line, sent), waiting...)
}

// send runs the transaction from the return path from for rcpts, from g's
// IP when there is a grant.
func (w *worker) send(ctx context.Context, d store.Delivery, from string, rcpts []store.DueRecipient, targets []target, g warmup.Grant) []result {
	src := g.IP.Addr
	var lastErr error
	tried := 0
	for _, t := range targets {
		port, err := strconv.ParseUint(t.port, 10, 16)
		if err != nil {
			return settleAll(rcpts, store.StateDeferred, fmt.Sprintf("port of %s: %v", t.name, err), "4.4.0")
		}
		for _, a := range t.addrs {
			if src.IsValid() && src.Is4() != a.Is4() {
				continue // the granted IP cannot reach this address
			}
			if tried == maxAddrsPerLeg || ctx.Err() != nil {
				break
			}
			tried++
			s, res, ok, err := w.r.transact(ctx, src, t.name, netip.AddrPortFrom(a, uint16(port)), d, from, rcpts)
			if err != nil {
				w.r.log.Info("relay: server unavailable, trying the next", "queue_id", d.QueueID,
					"server", t.name, "addr", a.String(), "err", err)
				lastErr = err // the window heard of it (transact)
				continue
			}
			switch feedback(res) {
			case 1:
				w.r.windows.succeeded(a)
			case -1:
				w.r.windows.failed(a)
			}
			s.messages++
			switch {
			case !ok:
				s.close()
			case g.PerConnection > 0 && s.messages >= g.PerConnection:
				s.quit() // the provider's cap on messages per connection
			case w.r.windows.over(a):
				s.quit() // the server's window shrank
			default:
				w.r.conns.put(s, w.r.now())
				w.r.windows.pooled(a)
			}
			if g.Count > 0 {
				w.mu.Lock()
				w.extras.sends = append(w.extras.sends, store.IPSend{IP: g.IP.Name(), Provider: g.Provider, Hour: g.At, Count: g.Count})
				w.mu.Unlock()
			}
			return res
		}
	}
	if g.Count > 0 {
		w.r.shaper.Refund(g, g.Count) // nothing reached a server
	}
	if lastErr == nil {
		lastErr = temporaryFailure(smtpCode(4, 4, 1), "no address to connect to")
	}
	// Nothing was said about these recipients: whatever went wrong on the
	// way (even a 5xx greeting) is the servers' trouble, not theirs.
	res := settleAll(rcpts, store.StateDeferred, describe(lastErr), "4.4.1")
	for i := range res {
		res[i].code = replyCode(lastErr) // a 421 greeting is a throttle too
	}
	return res
}

// feedback is what a transaction's results say about the server, for its
// window: 1 when it answered for the mail (delivered, or refused for good),
// -1 when it is in trouble (421, no answer, or every recipient deferred
// with a 4xx: the whole transaction refused for now), 0 when some
// recipients were deferred and none delivered.
func feedback(res []result) int {
	deferred := 0
	for _, x := range res {
		switch {
		case x.code == 421:
			return -1
		case x.state == store.StateDeferred:
			deferred++
		}
	}
	switch {
	case deferred == 0:
		return 1
	case deferred < len(res):
		for _, x := range res {
			if x.state == store.StateDelivered {
				return 1
			}
		}
		return 0
	}
	return -1
}

// acquire asks the Limiter for rcpts' line. It returns the grant (Count 0
// when nothing may go), the line, and the results of the recipients that
// wait: parked, or deferred as usual when no IP of the pool can ever serve
// the destination (a configuration error the operator must see).
func (w *worker) acquire(d store.Delivery, rcpts []store.DueRecipient, targets []target) (warmup.Grant, string, []result) {
	r := w.r
	pool := poolOf(d)
	provider := r.shaper.Classify(hostsOf(targets))
	line := lineName(pool, provider)
	if d.Parked == "" && r.lines.busy(line) {
		return warmup.Grant{}, line, parkAll(rcpts, line,
			fmt.Sprintf("waiting for warm-up capacity behind earlier mail: pool %s, provider %s", pool, provider), time.Time{})
	}
	g, wait := r.shaper.Acquire(pool, provider, len(rcpts), usableFrom(targets), r.now())
	switch {
	case g.Count == 0 && wait.NoIP:
		return g, line, settleAll(rcpts, store.StateDeferred, wait.Reason, "4.4.5")
	case g.Count == 0:
		return g, line, parkAll(rcpts, line, wait.Reason, wait.Until)
	}
	return g, line, parkAll(rcpts[g.Count:], line,
		fmt.Sprintf("waiting for warm-up capacity: pool %s, provider %s", pool, provider), time.Time{})
}

// shaped applies a transaction's results to the Limiter: a throttling
// reply from a provider suspends the IP × provider and parks the deferred
// recipients until the suspension ends; a delivery ends the throttling
// streak.
func (w *worker) shaped(g warmup.Grant, line string, res []result) []result {
	r := w.r
	now := r.now()
	var throttle *result
	delivered := false
	for i := range res {
		switch x := &res[i]; {
		case x.state == store.StateDelivered:
			delivered = true
		case x.state == store.StateDeferred && x.code != 0 && warmup.IsThrottle(x.code, x.status, x.reply):
			throttle = x
		}
	}
	if delivered && r.shaper.Delivered(g.IP, g.Provider, now) {
		w.saveSuspension(store.IPSuspension{IP: g.IP.Name(), Provider: g.Provider})
	}
	if throttle == nil || g.Provider == warmup.OtherProvider {
		return res
	}
	x := r.shaper.Throttled(g.IP, g.Provider, throttle.reply, now)
	r.log.Warn("relay: provider throttled an outbound IP; suspending it there", "ip", x.IP, "provider", x.Provider,
		"until", x.Until, "suspensions_in_a_row", x.Level, "reply", x.Reply)
	w.saveSuspension(x)
	// Parked without a time: the pool's other IPs may take them at once.
	for i := range res {
		if res[i].state == store.StateDeferred {
			res[i].park = line
		}
	}
	return res
}

func (w *worker) saveSuspension(x store.IPSuspension) {
	ctx, cancel := context.WithTimeout(context.Background(), completeTimeout)
	defer cancel()
	if err := w.r.q.SetIPSuspension(ctx, x); err != nil {
		w.r.log.Error("relay: saving an IP suspension failed", "ip", x.IP, "provider", x.Provider, "err", err)
	}
}

// settleAll gives every recipient of rcpts the same result: one of our own,
// since no server answered for them.
func settleAll(rcpts []store.DueRecipient, state, reply, status string) []result {
	res := make([]result, len(rcpts))
	for i, rc := range rcpts {
		res[i] = result{rcpt: rc, state: state, reply: reply, status: status, own: true}
	}
	return res
}
