package smtpd

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sesame-mail/sesame/store"
)

// Reject events are what an operator (and every webhook) sees of refused
// submissions. A client in a loop can be refused thousands of times a
// second, and one event per refusal made each of them a store commit and a
// request to every webhook. So, as Postfix's anvil and SES's sending
// statistics summarise rather than log each attempt:
//
//   - On one connection, the first refusal of a kind (its reason and reply
//     code: "not_verified 554 5.7.1") is recorded at once, one event per
//     refused recipient as before, so an operator watching sees it.
//   - Its repeats on that connection are counted, and written as one event
//     whose Count says how many refusals (recipients) it stands for: when
//     the connection ends, or at the next repeat once the oldest one counted
//     is rejectSummaryEvery old.
//   - Every event a credential's connections write takes a token from the
//     credential's bucket, RejectEventsPerMinute a minute. Without one, the
//     event is not written: its refusals are counted in the metric
//     sesame_reject_events_suppressed_total and summed into one event
//     written as soon as the credential has a token again (at its next
//     refusal or the end of one of its connections), or when the server
//     stops (FlushRejectEvents).
//
// So the events' counts always add up to the refusals, and a credential
// writes at most RejectEventsPerMinute reject events a minute (after a burst
// of as many) however many connections it opens.

// RejectEventsPerMinute is how many reject events one credential may write a
// minute, with a burst of as many.
const RejectEventsPerMinute = 100

// rejectSummaryEvery is how long repeats on a connection are counted before
// their sum is written (at the next repeat), so a long connection that keeps
// failing still shows up.
const rejectSummaryEvery = time.Minute

// RejectMetrics is an ability Metrics may have: counting refusals whose
// reject event was not written because their credential was over its cap
// (they are summed into a later event).
type RejectMetrics interface {
	RejectEventsSuppressed(n int)
}

// rejectKind is what makes two refusals "the same" for counting.
type rejectKind struct {
	reason string
	code   int
	ecode  smtp.EnhancedCode
}

// rejectSum is refusals counted but not yet written.
type rejectSum struct {
	count     int
	recipient string // the recipient of every one counted; "" when they differ or none was known
	mixed     bool   // they were for different recipients
	reply     string // the reply of the last one
	first     time.Time
	last      time.Time
}

// add counts n refusals, for rcpts (nil: before any recipient).
func (s *rejectSum) add(n int, rcpts []string, reply string, now time.Time) {
	if s.count == 0 {
		s.first = now
		if len(rcpts) > 0 {
			s.recipient = rcpts[0]
		}
	}
	for _, r := range rcpts {
		if r != s.recipient {
			s.mixed = true
		}
	}
	if len(rcpts) == 0 && s.recipient != "" {
		s.mixed = true
	}
	s.count += n
	s.reply, s.last = reply, now
}

// event is the reject event of the refusals counted.
func (s *rejectSum) event(cred string) store.Event {
	e := store.Event{At: s.last, Type: store.EventReject, Credential: cred, Recipient: s.recipient, Reply: s.reply, Count: s.count}
	if s.mixed {
		e.Recipient = ""
	}
	return e
}

// rejectLog is one connection's refusals: every kind seen, with its repeats
// not yet written. go-smtp may call Logout on another goroutine than the
// connection's (its Server.Close closes every connection), hence the lock.
type rejectLog struct {
	mu     sync.Mutex
	kinds  map[rejectKind]*rejectSum // a handful of reasons: bounded
	closed bool                      // after Logout: nothing is held back any more
}

// rejectEvent records the refusal of rcpts with err.
func (s *session) rejectEvent(rcpts []string, reason string, err error) {
	now := s.srv.now()
	reply := err.Error()
	kind := rejectKind{reason: reason}
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		reply = fmt.Sprintf("%d %d.%d.%d %s", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], se.Message)
		kind.code, kind.ecode = se.Code, se.EnhancedCode
	}
	l := &s.rejects
	l.mu.Lock()
	sum, seen := l.kinds[kind]
	if !seen || l.closed {
		if l.kinds == nil {
			l.kinds = map[rejectKind]*rejectSum{}
		}
		l.kinds[kind] = &rejectSum{}
		l.mu.Unlock()
		var evs []store.Event
		for _, r := range rcpts {
			evs = append(evs, store.Event{At: now, Type: store.EventReject, Credential: s.cred.Name, Recipient: r, Reply: reply})
		}
		if len(evs) == 0 {
			evs = append(evs, store.Event{At: now, Type: store.EventReject, Credential: s.cred.Name, Reply: reply})
		}
		s.writeRejects(evs...)
		return
	}
	sum.add(max(1, len(rcpts)), rcpts, reply, now)
	if now.Sub(sum.first) < rejectSummaryEvery {
		l.mu.Unlock()
		return
	}
	e := sum.event(s.cred.Name)
	*sum = rejectSum{}
	l.mu.Unlock()
	s.writeRejects(e)
}

// flushRejects writes the repeats counted on the connection, which ends.
func (s *session) flushRejects() {
	l := &s.rejects
	l.mu.Lock()
	l.closed = true
	var evs []store.Event
	for _, sum := range l.kinds {
		if sum.count > 0 {
			evs = append(evs, sum.event(s.cred.Name))
			*sum = rejectSum{}
		}
	}
	l.mu.Unlock()
	s.writeRejects(evs...) // with none, still the credential's suppressed sum if it has a token now
}

// writeRejects writes evs, each if the credential's cap allows (after the
// sum of the refusals suppressed before, when there is one).
func (s *session) writeRejects(evs ...store.Event) {
	if s.cred.Name == "" || s.srv.deps.Events == nil {
		return
	}
	write, suppressed := s.srv.rejects.admit(s.cred.Name, s.srv.now(), evs)
	if suppressed > 0 {
		if m, ok := s.srv.deps.Metrics.(RejectMetrics); ok {
			m.RejectEventsSuppressed(suppressed)
		}
	}
	s.srv.recordRejects(write)
}

// recordRejects stores evs.
func (srv *Server) recordRejects(evs []store.Event) {
	if len(evs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, e := range evs {
		if err := srv.deps.Events.RecordEvent(ctx, e); err != nil {
			srv.log.Error("recording a reject event failed", "credential", e.Credential, "err", err)
			return
		}
	}
}

// rejectCaps is every credential's bucket of reject events. Its zero value
// is ready to use. Credentials are made by the operator, so the map is as
// bounded as they are.
type rejectCaps struct {
	mu        sync.Mutex
	perMinute int // 0: RejectEventsPerMinute
	buckets   map[string]*rejectBucket
}

// rejectBucket is one credential's tokens, and the refusals it could not
// write.
type rejectBucket struct {
	tokens     float64
	at         time.Time // when tokens was last brought up to date
	suppressed rejectSum
}

// setPerMinute changes the cap (tests).
func (c *rejectCaps) setPerMinute(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.perMinute = n
}

// admit returns the events of cred to write now: the sum of its suppressed
// refusals first when a token allows, then those of evs that tokens allow.
// It counts the rest as suppressed and returns how many refusals that was.
func (c *rejectCaps) admit(cred string, now time.Time, evs []store.Event) (write []store.Event, suppressed int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	rate := float64(c.perMinute)
	if rate <= 0 {
		rate = RejectEventsPerMinute
	}
	b := c.buckets[cred]
	if b == nil {
		if c.buckets == nil {
			c.buckets = map[string]*rejectBucket{}
		}
		b = &rejectBucket{tokens: rate, at: now}
		c.buckets[cred] = b
	}
	if now.After(b.at) {
		b.tokens = min(rate, b.tokens+now.Sub(b.at).Minutes()*rate)
		b.at = now
	}
	if b.suppressed.count > 0 && b.tokens >= 1 {
		b.tokens--
		write = append(write, b.suppressed.event(cred))
		b.suppressed = rejectSum{}
	}
	for _, e := range evs {
		if b.tokens >= 1 {
			b.tokens--
			write = append(write, e)
			continue
		}
		n := max(1, e.Count)
		var rcpts []string
		if e.Recipient != "" {
			rcpts = []string{e.Recipient}
		}
		b.suppressed.add(n, rcpts, e.Reply, e.At)
		suppressed += n
	}
	return write, suppressed
}

// FlushRejectEvents writes, past the cap, the sum of every credential's
// suppressed refusals. Call it after Shutdown, when no connection is left
// to write them.
func (srv *Server) FlushRejectEvents() {
	if srv.deps.Events == nil {
		return
	}
	c := &srv.rejects
	c.mu.Lock()
	var evs []store.Event
	for cred, b := range c.buckets {
		if b.suppressed.count > 0 {
			evs = append(evs, b.suppressed.event(cred))
			b.suppressed = rejectSum{}
		}
	}
	c.mu.Unlock()
	srv.recordRejects(evs)
}
