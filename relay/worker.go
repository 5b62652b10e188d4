package relay

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"runtime/debug"
	"strconv"

	"github.com/sesame-mail/sesame/store"
)

// maxAddrsPerLeg bounds the addresses tried for one destination in one
// attempt (Postfix's smtp_mx_address_limit), so a domain with many dead
// exchangers cannot hold a worker for long.
const maxAddrsPerLeg = 5

// worker delivers one message at a time.
type worker struct {
	r *Relay
}

// run delivers what arrives on work, handing each delivery back on done,
// until work is closed.
func (w *worker) run(ctx context.Context, work <-chan store.Delivery, done chan<- store.Delivery) {
	for d := range work {
		w.deliver(ctx, d)
		done <- d
	}
}

// deliver makes one attempt at every recipient of d and records the
// outcomes.
func (w *worker) deliver(ctx context.Context, d store.Delivery) {
	recorded := false
	defer func() {
		if p := recover(); p != nil {
			w.recovered(p, d.QueueID)
			if !recorded {
				w.r.record(ctx, d, settleAll(d.Recipients, store.StateDeferred, replyInternal, "4.3.0"))
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
	if err != nil {
		w.r.log.Error("relay: reading the message failed", "queue_id", d.QueueID, "err", err)
		recorded = true
		w.r.record(ctx, d, settleAll(d.Recipients, store.StateDeferred, "reading the queued message failed: "+err.Error(), "4.3.0"))
		return
	}
	d.Data = data
	results, rest, err := w.suppressed(actx, d)
	if err != nil {
		w.r.log.Error("relay: reading the suppression list failed", "queue_id", d.QueueID, "err", err)
		recorded = true
		w.r.record(ctx, d, settleAll(d.Recipients, store.StateDeferred, "reading the suppression list failed: "+err.Error(), "4.3.0"))
		return
	}
	d.Recipients = rest
	for _, l := range w.r.route(d) {
		results = append(results, w.deliverLeg(actx, d, l)...)
	}
	recorded = true
	w.r.record(ctx, d, results)
}

// suppressed settles the recipients on the suppression list (accepted, as
// SES does, but never attempted) and returns the others.
func (w *worker) suppressed(ctx context.Context, d store.Delivery) ([]result, []store.DueRecipient, error) {
	addrs := make([]string, len(d.Recipients))
	for i, rc := range d.Recipients {
		addrs[i] = rc.Address
	}
	on, err := w.r.q.Suppressed(ctx, addrs)
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
// §5.1). Once MAIL is answered, the answers stand for this attempt. A panic
// defers l's recipients, and only them: other legs' results stand.
func (w *worker) deliverLeg(ctx context.Context, d store.Delivery, l leg) (res []result) {
	defer func() {
		if p := recover(); p != nil {
			w.recovered(p, d.QueueID)
			res = settleAll(l.rcpts, store.StateDeferred, replyInternal, "4.3.0")
		}
	}()
	targets, err := w.r.targets(ctx, l)
	if err != nil {
		return settleAll(l.rcpts, verdict(err), describe(err), statusOf(err))
	}
	var lastErr error
	tried := 0
	for _, t := range targets {
		port, err := strconv.ParseUint(t.port, 10, 16)
		if err != nil {
			return settleAll(l.rcpts, store.StateDeferred, fmt.Sprintf("port of %s: %v", t.name, err), "4.4.0")
		}
		for _, a := range t.addrs {
			if tried == maxAddrsPerLeg || ctx.Err() != nil {
				break
			}
			tried++
			s, err := w.r.connect(ctx, t.name, netip.AddrPortFrom(a, uint16(port)))
			if err != nil {
				w.r.log.Info("relay: server unavailable, trying the next", "queue_id", d.QueueID,
					"server", t.name, "addr", a.String(), "err", err)
				lastErr = err
				continue
			}
			stop := context.AfterFunc(ctx, s.abort)
			res, ok := s.send(d, l.rcpts)
			stop()
			if ok {
				w.r.conns.put(s, w.r.now())
			} else {
				s.client.Close()
			}
			return res
		}
	}
	if lastErr == nil {
		lastErr = temporaryFailure(smtpCode(4, 4, 1), "no address to connect to")
	}
	// Nothing was said about these recipients: whatever went wrong on the
	// way (even a 5xx greeting) is the servers' trouble, not theirs.
	return settleAll(l.rcpts, store.StateDeferred, describe(lastErr), "4.4.1")
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
