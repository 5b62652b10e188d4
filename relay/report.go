package relay

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sesame-mail/sesame/store"
)

func smtpCode(a, b, c int) smtp.EnhancedCode { return smtp.EnhancedCode{a, b, c} }

// ClassifyBounce says what a permanent failure means for the address
// (RFC 3463): hard when the address itself is bad (X.1.x bad mailbox, domain
// or syntax; X.2.1 disabled mailbox; or, from a server that gives no
// enhanced code, a reply that says the user is unknown), so mail to it
// should stop (the suppression list); soft for a full mailbox (X.2.2) or
// message too large for it (X.2.3); policy for a refusal by the receiver's
// rules (X.7.x); undetermined otherwise.
func ClassifyBounce(status, reply string) string {
	switch {
	case strings.HasPrefix(status, "5.1."), status == "5.2.1":
		return store.BounceHard
	case status == "5.2.2", status == "5.2.3":
		return store.BounceSoft
	case strings.HasPrefix(status, "5.7."):
		return store.BouncePolicy
	case status != "5.0.0":
		return store.BounceUndetermined
	}
	r := strings.ToLower(reply)
	for _, words := range []string{"user unknown", "unknown user", "no such user", "does not exist", "no such mailbox",
		"mailbox unavailable", "invalid recipient", "recipient address rejected", "address rejected"} {
		if strings.Contains(r, words) {
			return store.BounceHard
		}
	}
	return store.BounceUndetermined
}

// record turns the results of one attempt at d into a store.Report: it
// schedules retries, expires recipients past their lifetime, and writes the
// DSN the sender is owed (a bounce, or the one-time delay warning). Then it
// writes the mail log: one line per recipient.
//
// Waiting for capacity (a parked recipient that was not attempted) is not
// failing: it never makes a recipient expire.
func (r *Relay) record(ctx context.Context, d store.Delivery, results []result, x extras) {
	now := r.now()
	expiry := d.ReceivedAt.Add(r.cfg.MaxLifetime)
	rep := store.Report{QueueID: d.QueueID, Outcomes: make([]store.Outcome, len(results)), Sends: x.sends,
		Replies: x.replies, Events: x.events}
	var failed, delayed []int
	for i := range results {
		res := &results[i]
		o := store.Outcome{Recipient: res.rcpt.Address, State: res.state, Reply: res.reply, RemoteMTA: res.remote,
			Simulated: res.simulated}
		switch {
		case res.state == store.StateDeferred && res.notAttempted:
			o.Park, o.NotAttempted = res.park, true
		case res.state == store.StateDeferred:
			next := now.Add(backoff(res.rcpt.Attempts, r.cfg.RetryFirst, r.cfg.RetryMax))
			switch {
			case !now.Before(expiry):
				res.state, o.State = store.StateExpired, store.StateExpired
				o.Reply = fmt.Sprintf("gave up after %s in the queue; last error: %s", r.cfg.MaxLifetime, res.reply)
				res.status = "4.4.7" // delivery time expired (RFC 3463)
			case next.After(expiry):
				o.NextAttempt = expiry // one last try when the lifetime ends
			default:
				o.NextAttempt = next
			}
			if o.State == store.StateDeferred {
				o.Park = res.park
			}
		}
		switch o.State {
		case store.StateBounced, store.StateExpired:
			o.BounceType = store.BounceSoft // expired: the address may be fine
			if o.State == store.StateBounced {
				o.BounceType = ClassifyBounce(res.status, res.reply)
			}
			failed = append(failed, i)
		case store.StateDeferred:
			delayed = append(delayed, i)
		}
		rep.Outcomes[i] = o
	}

	// Never a DSN to the null sender: that is how bounce loops are avoided
	// (RFC 5321 §4.5.5).
	if d.Sender != "" {
		switch {
		case len(failed) > 0:
			rep.Notice = r.notice(d, results, failed, "failed", time.Time{})
		case len(delayed) > 0 && !d.DelayWarned && r.cfg.DelayWarning > 0 && now.Sub(d.ReceivedAt) >= r.cfg.DelayWarning:
			rep.Notice = r.notice(d, results, delayed, "delayed", expiry)
			rep.DelayWarned = rep.Notice != nil
		}
	}

	cctx, cancel := context.WithTimeout(ctx, completeTimeout)
	defer cancel()
	if err := r.q.Complete(cctx, rep); err != nil {
		// The leases run out and the recipients are claimed again.
		r.log.Error("relay: recording outcomes failed", "queue_id", d.QueueID, "err", err)
	} else {
		for i, o := range rep.Outcomes {
			if o.Park != "" && r.lines.parkedIn(o.Park, 1, results[i].parkUntil) {
				r.log.Info("relay: mail is waiting for capacity", "line", o.Park, "reason", o.Reply)
			}
		}
	}
	r.logResults(ctx, d, results, rep, now)
}

// notice builds the DSN for the recipients results[which], or returns nil
// (and logs) if it cannot: the outcomes are recorded regardless.
func (r *Relay) notice(d store.Delivery, results []result, which []int, action string, retryUntil time.Time) *store.Message {
	now := r.now()
	id := store.NewQueueID()
	p := dsnParams{
		Hostname:    r.cfg.Hostname,
		QueueID:     d.QueueID,
		Sender:      d.Sender,
		ArrivalDate: d.ReceivedAt,
		Now:         now,
		Original:    d.Data,
		MessageID:   "<" + id + "@" + r.cfg.Hostname + ">",
	}
	for _, i := range which {
		res := results[i]
		p.Recipients = append(p.Recipients, dsnRecipient{
			Address:       res.rcpt.Address,
			Action:        action,
			Status:        res.status,
			RemoteMTA:     res.remote,
			Diagnostic:    res.reply,
			OwnDiagnostic: res.own,
			LastAttempt:   now,
			RetryUntil:    retryUntil,
		})
	}
	data, err := buildDSN(p)
	if err != nil {
		r.log.Error("relay: building a DSN failed", "queue_id", d.QueueID, "err", err)
		return nil
	}
	if r.cfg.SystemSigner != nil {
		data = r.cfg.SystemSigner.Sign(context.Background(), data)
	}
	return &store.Message{ID: id, Sender: "", Recipients: []string{d.Sender}, MessageID: p.MessageID,
		ReceivedAt: now, Data: data}
}

func (r *Relay) logResults(ctx context.Context, d store.Delivery, results []result, rep store.Report, now time.Time) {
	from := d.Sender
	if from == "" {
		from = "<>"
	}
	for i, res := range results {
		if res.notAttempted {
			// Waiting for capacity: one line per recipient would flood the
			// log when a large queue waits; the dispatcher logs lines.
			r.log.Debug("relay: waiting for capacity", "queue_id", d.QueueID, "rcpt", res.rcpt.Address, "line", res.park,
				"reason", res.reply)
			continue
		}
		r.cfg.Metrics.Delivery(rep.Outcomes[i].State, res.remote, res.source, now.Sub(d.ReceivedAt))
		level := slog.LevelInfo
		attrs := []slog.Attr{
			slog.String("queue_id", d.QueueID),
			slog.String("from", from),
			slog.String("rcpt", res.rcpt.Address),
			slog.String("state", rep.Outcomes[i].State),
			slog.String("reply", rep.Outcomes[i].Reply),
			slog.Int("attempt", res.rcpt.Attempts+1),
			slog.String("relay", res.relay),
			slog.String("tls", res.tls),
			slog.Duration("delay", now.Sub(d.ReceivedAt).Round(time.Millisecond)),
		}
		switch rep.Outcomes[i].State {
		case store.StateDeferred:
			attrs = append(attrs, slog.Time("next_attempt", rep.Outcomes[i].NextAttempt))
		case store.StateBounced, store.StateExpired, store.StateSuppressed:
			level = slog.LevelWarn
		}
		r.log.LogAttrs(ctx, level, "relay: delivery", attrs...)
	}
	if rep.Notice != nil {
		kind := "bounce"
		if rep.DelayWarned {
			kind = "delay warning"
		}
		r.log.Info("relay: DSN queued", "queue_id", d.QueueID, "kind", kind, "dsn_queue_id", rep.Notice.ID, "to", d.Sender)
	}
}

// OperatorBounce builds the DSN for `sesame queue delete --bounce`: every
// recipient of m still waiting fails with status 5.0.0, "deleted by the
// operator". It returns nil when there is no one to tell (a null sender, or
// nobody waiting).
func OperatorBounce(hostname string, m store.QueueEntry, data []byte, now time.Time) (*store.Message, error) {
	if m.Sender == "" {
		return nil, nil
	}
	id := store.NewQueueID()
	p := dsnParams{Hostname: hostname, QueueID: m.ID, Sender: m.Sender, ArrivalDate: m.ReceivedAt, Now: now,
		Original: data, MessageID: "<" + id + "@" + hostname + ">"}
	for _, r := range m.Recipients {
		if store.Final(r.State) {
			continue
		}
		diag := "deleted from the queue by the mail system's operator"
		if r.LastReply != "" {
			diag += "; last error: " + r.LastReply
		}
		p.Recipients = append(p.Recipients, dsnRecipient{Address: r.Address, Action: "failed", Status: "5.0.0",
			Diagnostic: diag, OwnDiagnostic: true})
	}
	if len(p.Recipients) == 0 {
		return nil, nil
	}
	b, err := buildDSN(p)
	if err != nil {
		return nil, err
	}
	return &store.Message{ID: id, Recipients: []string{m.Sender}, MessageID: p.MessageID, ReceivedAt: now, Data: b}, nil
}
