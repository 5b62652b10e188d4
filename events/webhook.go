// Package events fans out what the store records. Today that is webhooks:
// every event (store.Event) is POSTed to each configured endpoint that asks
// for it.
//
// The events table is the queue; nothing is held in memory beyond one batch
// per endpoint. Each endpoint has a cursor in the store (the id of the last
// event it has dealt with) and one goroutine that:
//
//   - reads up to Options.BatchSize events after the cursor that the
//     endpoint's filter selects (types, credential), oldest first;
//   - POSTs them one at a time, one event per request, in id order, and
//     moves the cursor durably after each 2xx answer;
//   - on a failure (no connection, no answer within Options.Timeout, an
//     answer other than 2xx) keeps the cursor and tries the same event again
//     after a backoff that doubles from Options.BackoffMin to
//     Options.BackoffMax, so an endpoint sees its events in order, never one
//     before the one it refused;
//   - gives an event up (logged at Error, cursor moved past it) only when it
//     has failed again at an age of Options.GiveUp (a day) or more and the
//     endpoint has failed every attempt for at least as long: every event is
//     retried for at least a day of its life, and a single bad moment never
//     loses one;
//   - polls the store (MAX(id), every Options.Poll) when it has caught up.
//
// Delivery is at least once: an event whose POST is cut short by a shutdown,
// or whose cursor update is lost in a crash, is sent again after the
// restart. Receivers de-duplicate with the X-Sesame-Event-Id header. An
// endpoint's key (Endpoint.Key) derives from its URL, credential and types,
// so changing one of them makes a new endpoint, which starts at the current
// last event: a new endpoint does not replay history.
//
// The request format and its signature are in request.go and in
// docs/operations.md. The body, Payload, is also the shape `sesame events
// --json` prints, so an event reads the same wherever it comes from.
package events

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sesame-mail/sesame/store"
)

// Endpoint is one webhook: where events go, with what key, and which ones.
type Endpoint struct {
	URL        string
	Secret     string   // the HMAC-SHA256 key of the signature
	Types      []string // event types to send; empty: all
	Credential string   // send only this credential's events; "": all
}

// Key is the endpoint's stable id, the key of its cursor: a hash of its URL,
// credential and (sorted) types. The secret is not part of it, so rotating
// the secret neither replays nor skips anything.
func (e Endpoint) Key() string {
	types := slices.Clone(e.Types)
	slices.Sort(types)
	types = slices.Compact(types)
	sum := sha256.Sum256([]byte(e.URL + "\x00" + e.Credential + "\x00" + strings.Join(types, ",")))
	return hex.EncodeToString(sum[:8])
}

// Store is what the dispatcher needs from the store (store.SQLite has it).
//
// The contract that makes the events table a queue: ids increase in commit
// order, so once LastEventID has returned n no event with an id up to n can
// appear later.
type Store interface {
	// LastEventID returns the highest event id, 0 if there are none.
	LastEventID(ctx context.Context) (int64, error)
	// EventsAfter returns, oldest first, at most limit of the events with an
	// id in (after, through] that f selects; fewer than limit means all.
	EventsAfter(ctx context.Context, after, through int64, f store.EventFilter, limit int) ([]store.Event, error)
	// CountEventsAfter counts what EventsAfter would return without a limit.
	CountEventsAfter(ctx context.Context, after, through int64, f store.EventFilter) (int, error)
	// WebhookCursor returns an endpoint's cursor; store.ErrNotFound if it has
	// none yet.
	WebhookCursor(ctx context.Context, endpoint string) (store.WebhookCursor, error)
	// SaveWebhookCursor stores a cursor durably.
	SaveWebhookCursor(ctx context.Context, c store.WebhookCursor) error
}

var _ Store = (*store.SQLite)(nil)

// Options tune the dispatcher; zero fields take the defaults shown.
type Options struct {
	Version    string        // in the User-Agent, "Sesame/<Version>"
	BatchSize  int           // events read from the store at a time: 100
	Poll       time.Duration // how often a caught-up endpoint looks for new events: 1s
	Timeout    time.Duration // for one request, from connecting to the end of the answer: 10s
	BackoffMin time.Duration // the wait after a first failure, doubled after each: 5s
	BackoffMax time.Duration // the longest wait between attempts: 10m
	GiveUp     time.Duration // how long an event is retried (see the package doc): 24h
	Now        func() time.Time
	Logger     *slog.Logger
}

func (o *Options) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 100
	}
	def(&o.Poll, time.Second)
	def(&o.Timeout, 10*time.Second)
	def(&o.BackoffMin, 5*time.Second)
	def(&o.BackoffMax, 10*time.Minute)
	def(&o.GiveUp, 24*time.Hour)
	if o.BackoffMax < o.BackoffMin {
		o.BackoffMax = o.BackoffMin
	}
	if o.Version == "" {
		o.Version = "dev"
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Dispatcher sends the events to the endpoints.
type Dispatcher struct {
	st        Store
	opts      Options
	client    *http.Client
	endpoints []endpoint
}

type endpoint struct {
	Endpoint
	key    string
	filter store.EventFilter
	log    *slog.Logger
}

// NewDispatcher returns a dispatcher of the events in st to endpoints. Two
// endpoints with the same key (same URL, credential and types) are one.
func NewDispatcher(st Store, endpoints []Endpoint, opts Options) *Dispatcher {
	opts.setDefaults()
	d := &Dispatcher{st: st, opts: opts, client: newClient(opts.Timeout)}
	seen := map[string]bool{}
	for _, e := range endpoints {
		key := e.Key()
		log := opts.Logger.With("webhook", key, "url", redactURL(e.URL))
		if seen[key] {
			log.Warn("webhook endpoint listed twice (same url, credential and events); sending once")
			continue
		}
		seen[key] = true
		d.endpoints = append(d.endpoints, endpoint{Endpoint: e, key: key, log: log,
			filter: store.EventFilter{Types: e.Types, Credential: e.Credential}})
	}
	return d
}

// Run sends events until ctx ends, then returns once every endpoint's
// goroutine has stopped (a request in flight is cancelled; its event is sent
// again by the next run).
func (d *Dispatcher) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, e := range d.endpoints {
		w := &worker{d: d, ep: e}
		wg.Go(func() { w.run(ctx) })
	}
	wg.Wait()
}

// Backlog returns, by endpoint key, how many events wait behind the
// endpoint's cursor (for a gauge). An endpoint that has not started yet
// counts 0.
func (d *Dispatcher) Backlog(ctx context.Context) (map[string]int, error) {
	through, err := d.st.LastEventID(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]int, len(d.endpoints))
	for _, e := range d.endpoints {
		c, err := d.st.WebhookCursor(ctx, e.key)
		if errors.Is(err, store.ErrNotFound) {
			out[e.key] = 0
			continue
		}
		if err != nil {
			return nil, err
		}
		n, err := d.st.CountEventsAfter(ctx, c.LastEvent, through, e.filter)
		if err != nil {
			return nil, err
		}
		out[e.key] = n
	}
	return out, nil
}

// worker is the goroutine of one endpoint. cur mirrors the stored cursor.
type worker struct {
	d   *Dispatcher
	ep  endpoint
	cur store.WebhookCursor
	// failingSince is when the current run of failures began (zero while
	// the endpoint answers). After a restart it is estimated from
	// cur.Attempts, on the late side: see start.
	failingSince time.Time
}

func (w *worker) run(ctx context.Context) {
	if !w.start(ctx) {
		return
	}
	o := &w.d.opts
	for {
		through, err := w.d.st.LastEventID(ctx)
		if err == nil && through > w.cur.LastEvent {
			var batch []store.Event
			batch, err = w.d.st.EventsAfter(ctx, w.cur.LastEvent, through, w.ep.filter, o.BatchSize)
			if err == nil {
				for _, e := range batch {
					if !w.deliver(ctx, e) {
						return
					}
				}
				if len(batch) == o.BatchSize {
					continue // more may follow at once
				}
				// The batch held every event up to through that the filter
				// selects: step over the others, so the next read starts
				// here rather than scanning them again.
				if w.cur.LastEvent < through {
					w.cur.LastEvent = through
					w.save(ctx)
				}
			}
		}
		if err != nil && ctx.Err() == nil {
			w.ep.log.Error("reading events for the webhook failed; retrying", "err", err)
		}
		if !sleep(ctx, o.Poll) {
			return
		}
	}
}

// start loads the endpoint's cursor, creating it at the current last event
// for a new endpoint. It returns false when ctx ends first.
func (w *worker) start(ctx context.Context) bool {
	for {
		c, err := w.d.st.WebhookCursor(ctx, w.ep.key)
		if err == nil {
			w.cur = c
			if c.Attempts > 0 {
				// The failures were at least the backoffs apart: this
				// estimate of when they began is late, never early, so a
				// restart can only lengthen the retries.
				w.failingSince = w.d.opts.Now().Add(-w.minFailingFor(c.Attempts))
				w.ep.log.Info("webhook endpoint was failing; resuming its retries", "event", c.LastEvent+1,
					"attempts", c.Attempts, "last_error", c.LastError)
			}
			return true
		}
		if errors.Is(err, store.ErrNotFound) {
			var last int64
			if last, err = w.d.st.LastEventID(ctx); err == nil {
				c = store.WebhookCursor{Endpoint: w.ep.key, LastEvent: last}
				if err = w.d.st.SaveWebhookCursor(ctx, c); err == nil {
					w.cur = c
					w.ep.log.Info("new webhook endpoint: sending the events after the current last one", "after", last)
					return true
				}
			}
		}
		if ctx.Err() != nil {
			return false
		}
		w.ep.log.Error("reading the webhook cursor failed; retrying", "err", err)
		if !sleep(ctx, w.d.opts.Poll) {
			return false
		}
	}
}

// deliver sends e until the endpoint takes it or it is given up, and reports
// whether to go on (false: ctx ended, the cursor stays before e).
func (w *worker) deliver(ctx context.Context, e store.Event) bool {
	o := &w.d.opts
	for {
		if !w.cur.NextAttempt.IsZero() {
			if wait := min(w.cur.NextAttempt.Sub(o.Now()), o.BackoffMax); wait > 0 && !sleep(ctx, wait) {
				return false
			}
		}
		err := w.d.post(ctx, w.ep, e)
		if err == nil {
			if w.cur.Attempts > 0 {
				w.ep.log.Info("webhook endpoint answers again", "event", e.ID, "failed_attempts", w.cur.Attempts)
			}
			w.cur = store.WebhookCursor{Endpoint: w.ep.key, LastEvent: e.ID}
			w.failingSince = time.Time{}
			w.save(ctx)
			return true
		}
		if ctx.Err() != nil {
			return false // cut short: sent again by the next run
		}
		now := o.Now()
		if w.failingSince.IsZero() {
			w.failingSince = now
		}
		w.cur.Attempts++
		w.cur.LastError = truncate(err.Error(), 500)
		delay := w.backoff(w.cur.Attempts)
		// The next attempt, of this event or the next, waits even after a
		// give-up: a dead endpoint is not hammered.
		w.cur.NextAttempt = now.Add(delay)
		if failing, age := now.Sub(w.failingSince), now.Sub(e.At); failing >= o.GiveUp && age >= o.GiveUp {
			w.ep.log.Error("webhook endpoint failed for too long; giving up on an event", "event", e.ID,
				"type", e.Type, "queue_id", e.QueueID, "recipient", e.Recipient, "event_age", age.Round(time.Second),
				"failing_for", failing.Round(time.Second), "attempts", w.cur.Attempts, "err", err)
			w.cur.LastEvent = e.ID
			w.save(ctx)
			return true
		}
		w.ep.log.Warn("webhook delivery failed; will retry", "event", e.ID, "attempt", w.cur.Attempts,
			"retry_in", delay, "err", err)
		w.save(ctx)
	}
}

// backoff is the wait after the n-th consecutive failure (n >= 1).
func (w *worker) backoff(n int) time.Duration {
	o := &w.d.opts
	d := o.BackoffMin
	for i := 1; i < n && d < o.BackoffMax; i++ {
		d *= 2
	}
	return min(d, o.BackoffMax)
}

// minFailingFor is the least time n consecutive failures can have taken: the
// backoffs between them.
func (w *worker) minFailingFor(n int) time.Duration {
	var total time.Duration
	for i := 1; i < n; i++ {
		b := w.backoff(i)
		if b == w.d.opts.BackoffMax {
			return total + time.Duration(n-i)*b
		}
		total += b
	}
	return total
}

// save stores the cursor. It is not cut short by ctx: an event delivered just
// before a shutdown should not be sent again. A failure is logged; the next
// save catches up, and a crash before it only repeats events.
func (w *worker) save(ctx context.Context) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := w.d.st.SaveWebhookCursor(sctx, w.cur); err != nil {
		w.ep.log.Error("saving the webhook cursor failed", "event", w.cur.LastEvent, "err", err)
	}
}

// sleep waits for d, or returns false when ctx ends first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// redactURL is u for logs: no user information, no query (either may hold
// a token).
func redactURL(u string) string {
	pu, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	q := pu.RawQuery != ""
	pu.User, pu.RawQuery, pu.ForceQuery, pu.Fragment, pu.RawFragment = nil, "", false, "", ""
	if q {
		return pu.String() + "?…"
	}
	return pu.String()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}
