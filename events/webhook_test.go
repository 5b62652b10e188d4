package events

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sesame-mail/sesame/store"
	"github.com/sesame-mail/sesame/testkit"
)

const testSecret = "0123456789abcdef-test-secret"

func openStore(t *testing.T) *store.SQLite {
	t.Helper()
	st, err := store.OpenSQLite(filepath.Join(t.TempDir(), "sesame.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// request is one request an endpoint received.
type request struct {
	path   string
	at     time.Time
	header http.Header
	body   []byte
	id     int64 // from the body
	status int   // what the endpoint answered; 0 if it never did
}

// receiver is a webhook endpoint on loopback. answer decides the status of
// the n-th request (from 1); it may block.
type receiver struct {
	srv    *httptest.Server
	mu     sync.Mutex
	reqs   []request
	answer func(n int, r *http.Request, p Payload) int
}

func newReceiver(t *testing.T, answer func(n int, r *http.Request, p Payload) int) *receiver {
	rc := &receiver{answer: answer}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var p Payload
		if err := json.Unmarshal(body, &p); err != nil {
			t.Errorf("body %q: %v", body, err)
		}
		rc.mu.Lock()
		rc.reqs = append(rc.reqs, request{path: r.URL.Path, at: time.Now(), header: r.Header.Clone(), body: body, id: p.ID})
		n := len(rc.reqs)
		rc.mu.Unlock()
		status := http.StatusOK
		if rc.answer != nil {
			status = rc.answer(n, r, p)
		}
		rc.mu.Lock()
		rc.reqs[n-1].status = status
		rc.mu.Unlock()
		if status == 0 {
			panic(http.ErrAbortHandler) // no answer
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) requests() []request {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.reqs)
}

// delivered lists the ids of the events answered 2xx, in order.
func (rc *receiver) delivered() []int64 {
	var out []int64
	for _, r := range rc.requests() {
		if r.status >= 200 && r.status <= 299 {
			out = append(out, r.id)
		}
	}
	return out
}

// start runs a dispatcher until the test ends, or until the returned stop
// is called (which waits for Run to return, and fails if that takes long).
func start(t *testing.T, st Store, eps []Endpoint, opts Options) (d *Dispatcher, stop func()) {
	t.Helper()
	if opts.Poll == 0 {
		opts.Poll = 10 * time.Millisecond
	}
	if opts.Version == "" {
		opts.Version = "1.2.3-test"
	}
	d = NewDispatcher(st, eps, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Error("Run did not return within 5s of the cancel")
			}
		})
	}
	t.Cleanup(stop)
	// Wait until every endpoint has its cursor: events recorded from now
	// on are theirs.
	for _, e := range eps {
		eventually(t, "the cursor of "+e.URL, func() bool {
			_, err := st.WebhookCursor(context.Background(), e.Key())
			return err == nil
		})
	}
	return d, stop
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// caughtUp waits until the endpoint's cursor is at the last event.
func caughtUp(t *testing.T, st *store.SQLite, e Endpoint) {
	t.Helper()
	ctx := context.Background()
	eventually(t, "the webhook to catch up", func() bool {
		last, err := st.LastEventID(ctx)
		if err != nil {
			t.Fatal(err)
		}
		c, err := st.WebhookCursor(ctx, e.Key())
		return err == nil && c.LastEvent == last
	})
}

func reject(t *testing.T, st *store.SQLite, credential, recipient string) {
	t.Helper()
	rejectAt(t, st, time.Now(), credential, recipient)
}

// rejectAt records a reject event at the time at, for a test whose webhooks
// run on a test clock.
func rejectAt(t *testing.T, st *store.SQLite, at time.Time, credential, recipient string) {
	t.Helper()
	err := st.RecordEvent(context.Background(), store.Event{At: at, Type: store.EventReject,
		Credential: credential, Recipient: recipient, Reply: "554 5.7.1 not verified"})
	if err != nil {
		t.Fatal(err)
	}
}

// mail sends one message with two recipients through the queue: two send
// events, then a delivery and a hard bounce.
func mail(t *testing.T, st *store.SQLite, credential string) {
	t.Helper()
	ctx := context.Background()
	now := time.Now()
	m := &store.Message{Credential: credential, Sender: "shop@example.com",
		Recipients: []string{"ok@example.net", "gone@example.net"}, MessageID: "<1@example.com>",
		ReceivedAt: now, Data: []byte("Subject: hi\r\n\r\nhello\r\n")}
	if err := st.Enqueue(ctx, m); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Claim(ctx, now, 10, time.Minute); err != nil {
		t.Fatal(err)
	}
	err := st.Complete(ctx, store.Report{QueueID: m.ID, Outcomes: []store.Outcome{
		{Recipient: "ok@example.net", State: store.StateDelivered, Reply: "250 2.0.0 ok", RemoteMTA: "mx.example.net"},
		{Recipient: "gone@example.net", State: store.StateBounced, Reply: "550 5.1.1 no such user",
			RemoteMTA: "mx.example.net", BounceType: store.BounceHard},
	}})
	if err != nil {
		t.Fatal(err)
	}
}

func allEvents(t *testing.T, st *store.SQLite) []store.Event {
	t.Helper()
	es, err := st.QueryEvents(context.Background(), store.EventQuery{})
	if err != nil {
		t.Fatal(err)
	}
	return es
}

func ids(es []store.Event) []int64 {
	var out []int64
	for _, e := range es {
		out = append(out, e.ID)
	}
	return out
}

// checkSignature verifies a request as a receiver would, with its own code.
func checkSignature(t *testing.T, r request) {
	t.Helper()
	ts := r.header.Get("X-Sesame-Timestamp")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		t.Fatalf("X-Sesame-Timestamp %q", ts)
	}
	if age := time.Since(time.Unix(sec, 0)); age > 5*time.Minute || age < -5*time.Minute {
		t.Fatalf("timestamp %s is %s old", ts, age)
	}
	mac := hmac.New(sha256.New, []byte(testSecret))
	fmt.Fprintf(mac, "%s.%s", ts, r.body)
	want := "v1=" + hex.EncodeToString(mac.Sum(nil))
	if got := r.header.Get("X-Sesame-Signature"); !hmac.Equal([]byte(got), []byte(want)) {
		t.Fatalf("X-Sesame-Signature = %q, want %q", got, want)
	}
}

func TestWebhookOrderSignatureAndFormat(t *testing.T) {
	st := openStore(t)
	rc := newReceiver(t, nil)
	ep := Endpoint{URL: rc.srv.URL + "/hook", Secret: testSecret}
	start(t, st, []Endpoint{ep}, Options{})

	mail(t, st, "shop")
	reject(t, st, "shop", "someone@example.org")
	// Repeated refusals summed into one event (package smtpd).
	if err := st.RecordEvent(context.Background(), store.Event{At: time.Now(), Type: store.EventReject,
		Credential: "shop", Reply: "554 5.7.1 not verified", Count: 7}); err != nil {
		t.Fatal(err)
	}
	mail(t, st, "")
	want := allEvents(t, st)
	if len(want) != 10 {
		t.Fatalf("%d events recorded, want 10", len(want))
	}
	caughtUp(t, st, ep)
	reqs := rc.requests()
	if got := rc.delivered(); !slices.Equal(got, ids(want)) || len(reqs) != len(want) {
		t.Fatalf("delivered %v in %d requests, want %v once each", got, len(reqs), ids(want))
	}
	for i, r := range reqs {
		e := want[i]
		checkSignature(t, r)
		for h, v := range map[string]string{
			"Content-Type":      "application/json",
			"User-Agent":        "Sesame/1.2.3-test",
			"X-Sesame-Event-Id": strconv.FormatInt(e.ID, 10),
		} {
			if got := r.header.Get(h); got != v {
				t.Errorf("event %d: %s = %q, want %q", e.ID, h, got, v)
			}
		}
		var p map[string]any
		if err := json.Unmarshal(r.body, &p); err != nil {
			t.Fatal(err)
		}
		at, err := time.Parse(time.RFC3339Nano, p["time"].(string))
		if err != nil || !at.Equal(e.At) || !strings.HasSuffix(p["time"].(string), "Z") {
			t.Errorf("event %d: time %q (%v), want %v in UTC", e.ID, p["time"], err, e.At)
		}
		wantFields := map[string]any{"id": float64(e.ID), "type": e.Type, "credential": e.Credential,
			"queue_id": e.QueueID, "message_id": e.MessageID, "recipient": e.Recipient, "remote_mta": e.RemoteMTA,
			"reply": e.Reply, "count": float64(max(1, e.Count))}
		if e.BounceType != "" {
			wantFields["bounce_type"] = e.BounceType
		}
		for k, v := range wantFields {
			if p[k] != v {
				t.Errorf("event %d: %s = %v, want %v", e.ID, k, p[k], v)
			}
		}
		if len(p) != len(wantFields)+1 {
			t.Errorf("event %d: fields %v", e.ID, p)
		}
	}
	// Spot checks that the events are what the queue recorded.
	if p := reqs[3]; !bytes.Contains(p.body, []byte(`"type":"bounce"`)) ||
		!bytes.Contains(p.body, []byte(`"bounce_type":"hard"`)) || !bytes.Contains(p.body, []byte(`"message_id":"<1@example.com>"`)) {
		t.Errorf("fourth request %s, want the hard bounce with its Message-ID unescaped", p.body)
	}
	if p := reqs[5]; !bytes.Contains(p.body, []byte(`"type":"reject"`)) || !bytes.Contains(p.body, []byte(`"count":7`)) {
		t.Errorf("sixth request %s, want the summed reject with its count", p.body)
	}
}

func TestWebhookFilters(t *testing.T) {
	st := openStore(t)
	rc := newReceiver(t, nil)
	eps := []Endpoint{
		{URL: rc.srv.URL + "/all", Secret: testSecret},
		{URL: rc.srv.URL + "/bounces", Secret: testSecret, Types: []string{store.EventBounce, store.EventReject}},
		{URL: rc.srv.URL + "/shop", Secret: testSecret, Credential: "shop"},
		{URL: rc.srv.URL + "/shop-sends", Secret: testSecret, Credential: "shop", Types: []string{store.EventSend}},
	}
	// Small batches, so that reading past events that do not match takes
	// several rounds.
	start(t, st, eps, Options{BatchSize: 2})

	for range 3 {
		mail(t, st, "shop")
		mail(t, st, "blog")
		reject(t, st, "shop", "a@example.org")
		reject(t, st, "blog", "b@example.org")
	}
	for _, ep := range eps {
		caughtUp(t, st, ep)
	}
	got := map[string][]int64{}
	for _, r := range rc.requests() {
		if r.status != http.StatusOK {
			t.Fatalf("request %+v", r)
		}
		got[r.path] = append(got[r.path], r.id)
	}
	events := allEvents(t, st)
	for _, ep := range eps {
		var want []int64
		for _, e := range events {
			if (len(ep.Types) == 0 || slices.Contains(ep.Types, e.Type)) && (ep.Credential == "" || ep.Credential == e.Credential) {
				want = append(want, e.ID)
			}
		}
		path := strings.TrimPrefix(ep.URL, rc.srv.URL)
		if len(want) == 0 || len(want) == len(events) && path != "/all" {
			t.Fatalf("%s: the test selects %d of %d events", path, len(want), len(events))
		}
		if !slices.Equal(got[path], want) {
			t.Errorf("%s received %v, want %v", path, got[path], want)
		}
	}
}

func TestWebhookRetriesInOrder(t *testing.T) {
	st := openStore(t)
	const failures = 4
	var ep Endpoint
	var failingState []store.WebhookCursor
	rc := newReceiver(t, func(n int, r *http.Request, p Payload) int {
		if n <= failures {
			if n > 1 {
				// The failures so far are on record.
				c, _ := st.WebhookCursor(context.Background(), ep.Key())
				failingState = append(failingState, c)
			}
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	ep = Endpoint{URL: rc.srv.URL, Secret: testSecret}
	const minWait, maxWait = 20 * time.Millisecond, 80 * time.Millisecond
	start(t, st, []Endpoint{ep}, Options{BackoffMin: minWait, BackoffMax: maxWait})

	for i := range 5 {
		reject(t, st, "shop", fmt.Sprintf("r%d@example.org", i))
	}
	want := ids(allEvents(t, st))
	caughtUp(t, st, ep)
	if got := rc.delivered(); !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want %v once each", got, want)
	}
	reqs := rc.requests()
	if len(reqs) != len(want)+failures {
		t.Fatalf("%d requests, want %d", len(reqs), len(want)+failures)
	}
	for i := 0; i <= failures; i++ {
		if reqs[i].id != want[0] {
			t.Fatalf("request %d was event %d; the retries must repeat event %d", i+1, reqs[i].id, want[0])
		}
	}
	// The waits double from BackoffMin to BackoffMax.
	for i, wait := range []time.Duration{minWait, 2 * minWait, maxWait, maxWait} {
		if gap := reqs[i+1].at.Sub(reqs[i].at); gap < wait {
			t.Errorf("attempt %d came %s after the previous one, want at least %s", i+2, gap, wait)
		}
	}
	for i, c := range failingState {
		if c.LastEvent != want[0]-1 || c.Attempts != i+1 || !strings.Contains(c.LastError, "HTTP 500") || c.NextAttempt.IsZero() {
			t.Errorf("cursor after %d failures = %+v", i+1, c)
		}
	}
	c, err := st.WebhookCursor(context.Background(), ep.Key())
	if err != nil || c != (store.WebhookCursor{Endpoint: ep.Key(), LastEvent: want[len(want)-1]}) {
		t.Errorf("cursor once healthy = %+v, %v", c, err)
	}
}

// countingStore counts the events the dispatcher reads.
type countingStore struct {
	*store.SQLite
	read atomic.Int64
}

func (s *countingStore) EventsAfter(ctx context.Context, after, through int64, f store.EventFilter, limit int) ([]store.Event, error) {
	es, err := s.SQLite.EventsAfter(ctx, after, through, f, limit)
	s.read.Add(int64(len(es)))
	return es, err
}

func TestWebhookHangingEndpoint(t *testing.T) {
	st := openStore(t)
	release := make(chan struct{})
	var hung atomic.Int64
	rc := newReceiver(t, func(n int, r *http.Request, p Payload) int {
		hung.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
		return http.StatusOK
	})
	t.Cleanup(func() { close(release) }) // runs before the server's Close
	ep := Endpoint{URL: rc.srv.URL, Secret: testSecret}
	cs := &countingStore{SQLite: st}
	const batch = 10
	d, stop := start(t, cs, []Endpoint{ep}, Options{BatchSize: batch, Timeout: time.Minute})

	reject(t, st, "shop", "first@example.org")
	eventually(t, "the first request", func() bool { return hung.Load() == 1 })

	// Mail flow goes on at full speed while the endpoint hangs.
	const n = 1000
	began := time.Now()
	var wg sync.WaitGroup
	for w := range 10 {
		wg.Go(func() {
			for i := range n / 10 {
				if err := st.RecordEvent(context.Background(), store.Event{At: time.Now(), Type: store.EventReject,
					Credential: "shop", Recipient: fmt.Sprintf("r%d-%d@example.org", w, i)}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	mail(t, st, "shop")
	if took := time.Since(began); took > 20*time.Second {
		t.Errorf("recording %d events and a message took %s with a hanging webhook", n, took)
	}
	t.Logf("recorded %d events and a message in %s", n, time.Since(began))
	time.Sleep(50 * time.Millisecond) // several polls
	if read := cs.read.Load(); read > batch+1 {
		t.Fatalf("the dispatcher read %d events from the store; it should hold one batch (%d) at most", read, batch)
	}
	if got := hung.Load(); got != 1 {
		t.Fatalf("%d requests, want the one hanging", got)
	}
	backlog, err := d.Backlog(context.Background())
	if err != nil || backlog[ep.Key()] != n+1+4 {
		t.Errorf("Backlog = %v, %v; want %d for %s", backlog, err, n+1+4, ep.Key())
	}
	// Stopping does not wait for the endpoint.
	began = time.Now()
	stop()
	if took := time.Since(began); took > 2*time.Second {
		t.Errorf("stopping took %s", took)
	}
	c, err := st.WebhookCursor(context.Background(), ep.Key())
	if err != nil || c.LastEvent != 0 {
		t.Errorf("cursor after the cut request = %+v, %v; want it before event 1", c, err)
	}
}

func TestWebhookRestart(t *testing.T) {
	st := openStore(t)
	var hang atomic.Bool
	hang.Store(true)
	inFlight := make(chan struct{}, 1)
	rc := newReceiver(t, func(n int, r *http.Request, p Payload) int {
		if n == 3 && hang.Load() {
			inFlight <- struct{}{}
			<-r.Context().Done() // until the first dispatcher stops
			return 0
		}
		return http.StatusOK
	})
	ep := Endpoint{URL: rc.srv.URL, Secret: testSecret}
	_, stop := start(t, st, []Endpoint{ep}, Options{})
	for i := range 5 {
		reject(t, st, "shop", fmt.Sprintf("r%d@example.org", i))
	}
	<-inFlight
	stop()
	hang.Store(false)
	for i := range 2 {
		reject(t, st, "shop", fmt.Sprintf("later%d@example.org", i))
	}

	start(t, st, []Endpoint{ep}, Options{})
	caughtUp(t, st, ep)
	want := ids(allEvents(t, st))
	if got := rc.delivered(); !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want %v once each", got, want)
	}
	var sent []int64
	for _, r := range rc.requests() {
		sent = append(sent, r.id)
	}
	// The request cut by the stop is the only one sent twice.
	if wantSent := slices.Insert(slices.Clone(want), 2, want[2]); !slices.Equal(sent, wantSent) {
		t.Fatalf("requests for %v, want %v", sent, wantSent)
	}
}

func TestWebhookGiveUp(t *testing.T) {
	st := openStore(t)
	ctx := context.Background()
	clk := testkit.NewClock(t)
	var attempts sync.Map // event id → *atomic.Int64
	rc := newReceiver(t, func(n int, r *http.Request, p Payload) int {
		v, _ := attempts.LoadOrStore(p.ID, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
		if strings.HasPrefix(p.Recipient, "bad") {
			return http.StatusBadRequest
		}
		return http.StatusOK
	})
	tries := func(id int64) int64 {
		v, _ := attempts.LoadOrStore(id, new(atomic.Int64))
		return v.(*atomic.Int64).Load()
	}
	ep := Endpoint{URL: rc.srv.URL, Secret: testSecret}
	var logs testkit.Buffer
	start(t, st, []Endpoint{ep}, Options{BackoffMin: time.Millisecond, BackoffMax: 4 * time.Millisecond,
		Now: clk.Now, Logger: slog.New(slog.NewTextHandler(&logs, nil))})

	// Event 1 fails for good. Event 2 fails too, but it is a day younger
	// (its time is what the clock will say after the first jump). Event 3
	// is fine.
	rejectAt(t, st, clk.Now(), "shop", "bad1@example.org")
	rejectAt(t, st, clk.Now().Add(25*time.Hour), "", "bad2@example.org")
	rejectAt(t, st, clk.Now(), "shop", "good@example.org")
	es := allEvents(t, st)
	first, second, third := es[0].ID, es[1].ID, es[2].ID

	// Failing, but not for a day: retried, never skipped.
	eventually(t, "retries of the first event", func() bool { return tries(first) >= 5 })
	if tries(second) != 0 || strings.Contains(logs.String(), "giving up") {
		t.Fatalf("event %d given up after %d attempts in no time; log:\n%s", first, tries(first), logs.String())
	}

	// A day later, event 1 (a day old, failing for a day) is given up at
	// its next failure; event 2 is failing, and the endpoint has been for
	// a day, but event 2 is new: it is retried.
	clk.Advance(25 * time.Hour)
	eventually(t, "attempts of the second event", func() bool { return tries(second) >= 5 })
	if tries(third) != 0 {
		t.Fatalf("event %d, failing but new, was given up", second)
	}
	log := logs.String()
	if !strings.Contains(log, "level=ERROR") || !strings.Contains(log, "giving up on an event") ||
		!strings.Contains(log, fmt.Sprintf("event=%d ", first)) || !strings.Contains(log, "bad1@example.org") {
		t.Fatalf("no error logged for the event given up; log:\n%s", log)
	}
	c, err := st.WebhookCursor(ctx, ep.Key())
	if err != nil || c.LastEvent != first || c.Attempts < 6 || !strings.Contains(c.LastError, "HTTP 400") {
		t.Fatalf("cursor while event 2 fails = %+v, %v", c, err)
	}

	// Another day: event 2 is given up too, and event 3 goes through.
	clk.Advance(25 * time.Hour)
	caughtUp(t, st, ep)
	if got := rc.delivered(); !slices.Equal(got, []int64{third}) {
		t.Fatalf("delivered %v, want only %d", got, third)
	}
	if n := strings.Count(logs.String(), "giving up on an event"); n != 2 {
		t.Fatalf("%d give-ups logged, want 2", n)
	}
	if c, err := st.WebhookCursor(ctx, ep.Key()); err != nil || c.Attempts != 0 || c.LastError != "" {
		t.Fatalf("cursor once healthy = %+v, %v", c, err)
	}
}

func TestWebhookNewEndpointStartsAtEnd(t *testing.T) {
	st := openStore(t)
	ctx := context.Background()
	rc := newReceiver(t, nil)
	for range 3 {
		reject(t, st, "shop", "old@example.org")
	}
	ep := Endpoint{URL: rc.srv.URL, Secret: testSecret}
	d, _ := start(t, st, []Endpoint{ep}, Options{})
	c, err := st.WebhookCursor(ctx, ep.Key())
	if err != nil || c.LastEvent != 3 {
		t.Fatalf("new endpoint's cursor = %+v, %v; want after event 3", c, err)
	}
	reject(t, st, "shop", "new@example.org")
	caughtUp(t, st, ep)
	if got := rc.delivered(); !slices.Equal(got, []int64{4}) {
		t.Fatalf("delivered %v, want only the new event 4", got)
	}
	if b, err := d.Backlog(ctx); err != nil || b[ep.Key()] != 0 {
		t.Fatalf("Backlog = %v, %v", b, err)
	}
}

func TestWebhookRedirects(t *testing.T) {
	st := openStore(t)
	other := newReceiver(t, nil)
	rc := newReceiver(t, func(n int, r *http.Request, p Payload) int { return http.StatusOK })
	mux := http.NewServeMux()
	mux.HandleFunc("/same", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/final", http.StatusTemporaryRedirect)
	})
	mux.HandleFunc("/found", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/final", http.StatusFound)
	})
	mux.HandleFunc("/elsewhere", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.srv.URL+"/final", http.StatusPermanentRedirect)
	})
	mux.HandleFunc("/loop", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/loop", http.StatusTemporaryRedirect)
	})
	mux.Handle("/final", rc.srv.Config.Handler)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	eps := []Endpoint{
		{URL: srv.URL + "/same", Secret: testSecret},
		{URL: srv.URL + "/found", Secret: testSecret},
		{URL: srv.URL + "/elsewhere", Secret: testSecret},
		{URL: srv.URL + "/loop", Secret: testSecret},
	}
	start(t, st, eps, Options{BackoffMin: time.Hour})
	reject(t, st, "shop", "a@example.org")
	caughtUp(t, st, eps[0])
	reqs := rc.requests()
	if len(reqs) != 1 || reqs[0].id != 1 {
		t.Fatalf("final endpoint got %+v, want event 1 once (from the 307)", reqs)
	}
	checkSignature(t, reqs[0])
	for i, wantErr := range map[int]string{1: "HTTP 302", 2: "only on the same host", 3: "more than 3 redirects"} {
		eventually(t, eps[i].URL+" to fail", func() bool {
			c, err := st.WebhookCursor(context.Background(), eps[i].Key())
			return err == nil && c.Attempts == 1
		})
		c, _ := st.WebhookCursor(context.Background(), eps[i].Key())
		if c.LastEvent != 0 || !strings.Contains(c.LastError, wantErr) {
			t.Errorf("%s: cursor %+v, want a failure with %q", eps[i].URL, c, wantErr)
		}
	}
	if got := other.requests(); len(got) != 0 {
		t.Errorf("the other host got %d requests", len(got))
	}
}

func TestEndpointKey(t *testing.T) {
	base := Endpoint{URL: "https://hooks.example.com/a", Secret: "s1", Types: []string{"bounce", "send"}, Credential: "shop"}
	same := []Endpoint{
		{URL: base.URL, Secret: "rotated", Types: []string{"send", "bounce"}, Credential: "shop"},
		{URL: base.URL, Secret: "s1", Types: []string{"send", "bounce", "send"}, Credential: "shop"},
	}
	other := []Endpoint{
		{URL: "https://hooks.example.com/b", Types: base.Types, Credential: "shop"},
		{URL: base.URL, Types: []string{"bounce"}, Credential: "shop"},
		{URL: base.URL, Types: base.Types, Credential: "blog"},
		{URL: base.URL, Types: base.Types},
	}
	k := base.Key()
	if len(k) != 16 {
		t.Fatalf("key %q", k)
	}
	for _, e := range same {
		if e.Key() != k {
			t.Errorf("%+v: key %s, want %s", e, e.Key(), k)
		}
	}
	for _, e := range other {
		if e.Key() == k {
			t.Errorf("%+v: same key as %+v", e, base)
		}
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://hooks.example.com/x":                      "https://hooks.example.com/x",
		"https://user:pw@hooks.example.com/x?token=secret": "https://hooks.example.com/x?…",
	} {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestBackoff(t *testing.T) {
	w := &worker{d: NewDispatcher(nil, nil, Options{})}
	for n, want := range map[int]time.Duration{1: 5 * time.Second, 2: 10 * time.Second, 3: 20 * time.Second,
		7: 320 * time.Second, 8: 10 * time.Minute, 1000: 10 * time.Minute} {
		if got := w.backoff(n); got != want {
			t.Errorf("backoff(%d) = %s, want %s", n, got, want)
		}
	}
	// After a restart, n failures are taken to have lasted the waits
	// between them.
	for n, want := range map[int]time.Duration{0: 0, 1: 0, 2: 5 * time.Second, 3: 15 * time.Second,
		9: 635*time.Second + 10*time.Minute, 150: 635*time.Second + 142*10*time.Minute} {
		if got := w.minFailingFor(n); got != want {
			t.Errorf("minFailingFor(%d) = %s, want %s", n, got, want)
		}
	}
}

func TestWebhookResumesFailingEndpoint(t *testing.T) {
	st := openStore(t)
	ctx := context.Background()
	rc := newReceiver(t, nil)
	ep := Endpoint{URL: rc.srv.URL, Secret: testSecret}
	reject(t, st, "shop", "a@example.org")
	// A previous run failed event 1 three times and set the next attempt.
	const wait = 300 * time.Millisecond
	began := time.Now()
	if err := st.SaveWebhookCursor(ctx, store.WebhookCursor{Endpoint: ep.Key(), LastEvent: 0, Attempts: 3,
		NextAttempt: began.Add(wait), LastError: "HTTP 503"}); err != nil {
		t.Fatal(err)
	}
	var logs testkit.Buffer
	start(t, st, []Endpoint{ep}, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	caughtUp(t, st, ep)
	reqs := rc.requests()
	if len(reqs) != 1 || reqs[0].id != 1 {
		t.Fatalf("requests %+v, want event 1", reqs)
	}
	if gap := reqs[0].at.Sub(began); gap < wait {
		t.Errorf("retried %s after the restart, before the next attempt was due (%s)", gap, wait)
	}
	if log := logs.String(); !strings.Contains(log, "resuming its retries") || !strings.Contains(log, "answers again") {
		t.Errorf("log:\n%s", log)
	}
}
