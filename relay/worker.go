package relay

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/sesame-mail/sesame/store"
)

// idleTimeout is how long a worker keeps a connection open with nothing to
// send.
const idleTimeout = 30 * time.Second

// worker delivers one message at a time and keeps its connection open for
// the next message to the same hop.
type worker struct {
	r    *Relay
	sess *session // connection left open by the previous message, or nil
}

// run delivers what arrives on work, signalling done after each delivery,
// until work is closed.
func (w *worker) run(ctx context.Context, work <-chan store.Delivery, done chan<- struct{}) {
	idle := time.NewTimer(idleTimeout)
	idle.Stop()
	defer idle.Stop()
	defer w.quit()
	for {
		select {
		case d, ok := <-work:
			if !ok {
				return
			}
			idle.Stop()
			w.deliver(ctx, d)
			done <- struct{}{}
			if w.sess != nil {
				idle.Reset(idleTimeout)
			}
		case <-idle.C:
			w.r.log.Debug("relay: closing idle connection", "relay", w.sess.hop.String())
			w.quit()
		}
	}
}

// quit ends the open connection politely.
func (w *worker) quit() {
	if w.sess != nil {
		w.sess.quit()
		w.sess = nil
	}
}

// drop closes the open connection without QUIT, after an error.
func (w *worker) drop() {
	if w.sess != nil {
		w.sess.client.Close()
		w.sess = nil
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
				w.r.record(ctx, d, settleAll(d.Recipients, store.StateDeferred, replyInternal, "", ""))
			}
		}
	}()

	actx, cancel := context.WithTimeout(ctx, deliveryTimeout)
	defer cancel()
	var results []result
	for _, l := range w.r.route(d) {
		results = append(results, w.deliverLeg(actx, d, l)...)
	}
	recorded = true
	w.r.record(ctx, d, results)
}

// replyInternal is the reply recorded for recipients whose attempt panicked.
const replyInternal = "internal error, see the relay log"

// recovered logs a panic and drops the connection, whose state is unknown.
func (w *worker) recovered(p any, queueID string) {
	w.r.log.Error("relay: delivery panicked", "queue_id", queueID,
		"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
	w.drop()
}

// deliverLeg runs the transaction for the recipients of l. A panic defers
// them, and only them: other legs' results stand.
func (w *worker) deliverLeg(ctx context.Context, d store.Delivery, l leg) (res []result) {
	defer func() {
		if p := recover(); p != nil {
			w.recovered(p, d.QueueID)
			res = settleAll(l.rcpts, store.StateDeferred, replyInternal, l.hop.String(), "")
		}
	}()
	s, err := w.session(ctx, l.hop)
	if err != nil {
		// Nothing was said about these recipients yet: whatever went wrong
		// on the way (even a 5xx greeting) is the hop's trouble, not theirs.
		return settleAll(l.rcpts, store.StateDeferred, describe(err), l.hop.String(), "")
	}
	stop := context.AfterFunc(ctx, s.abort)
	defer stop()
	res, ok := s.send(w.r.log, d, l.rcpts)
	if !ok {
		w.drop()
	}
	return res
}

// session returns a connection to h ready for a transaction: the open one
// after a successful RSET, else a new one.
func (w *worker) session(ctx context.Context, h hop) (*session, error) {
	if w.sess != nil && w.sess.hop != h {
		w.quit()
	}
	if s := w.sess; s != nil {
		stop := context.AfterFunc(ctx, s.abort)
		err := s.client.Reset()
		stop()
		if err == nil {
			return s, nil
		}
		// Most likely the server closed it while idle; not the mail's fault.
		w.r.log.Debug("relay: reconnecting, open connection failed RSET", "relay", h.String(), "err", err)
		w.drop()
	}
	s, err := w.r.dial(ctx, h)
	if err != nil {
		return nil, err
	}
	w.sess = s
	return s, nil
}

// settleAll gives every recipient of rcpts the same result.
func settleAll(rcpts []store.DueRecipient, state, reply, relay, tls string) []result {
	res := make([]result, len(rcpts))
	for i, rc := range rcpts {
		res[i] = result{rcpt: rc, state: state, reply: reply, relay: relay, tls: tls}
	}
	return res
}

// record stores the outcomes of one attempt at d and writes the mail log:
// one line per recipient.
func (r *Relay) record(ctx context.Context, d store.Delivery, results []result) {
	now := r.now()
	outcomes := make([]store.Outcome, len(results))
	for i, res := range results {
		outcomes[i] = store.Outcome{QueueID: d.QueueID, Recipient: res.rcpt.Address, State: res.state, Reply: res.reply}
		if res.state == store.StateDeferred {
			outcomes[i].NextAttempt = now.Add(backoff(res.rcpt.Attempts, r.cfg.RetryFirst, r.cfg.RetryMax))
		}
	}
	cctx, cancel := context.WithTimeout(ctx, completeTimeout)
	defer cancel()
	if err := r.q.Complete(cctx, outcomes); err != nil {
		// The leases run out and the recipients are claimed again.
		r.log.Error("relay: recording outcomes failed", "queue_id", d.QueueID, "err", err)
	}

	from := d.Sender
	if from == "" {
		from = "<>"
	}
	for i, res := range results {
		level := slog.LevelInfo
		attrs := []slog.Attr{
			slog.String("queue_id", d.QueueID),
			slog.String("from", from),
			slog.String("rcpt", res.rcpt.Address),
			slog.String("state", res.state),
			slog.String("reply", res.reply),
			slog.Int("attempt", res.rcpt.Attempts+1),
			slog.String("relay", res.relay),
			slog.String("tls", res.tls),
			slog.Duration("delay", now.Sub(d.ReceivedAt).Round(time.Millisecond)),
		}
		switch res.state {
		case store.StateDeferred:
			attrs = append(attrs, slog.Time("next_attempt", outcomes[i].NextAttempt))
		case store.StateFailed:
			// No bounce yet: DSNs to the sender come with MX delivery.
			level = slog.LevelWarn
		}
		r.log.LogAttrs(ctx, level, "relay: delivery", attrs...)
	}
}
