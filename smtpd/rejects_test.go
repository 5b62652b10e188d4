package smtpd

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sesame-mail/sesame/account"
	"github.com/sesame-mail/sesame/store"
)

// stepClock is a clock that moves only when told: the server's (event
// times, reject caps), not the store's or the quotas'.
type stepClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *stepClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// suppressMetrics counts what RejectMetrics reports.
type suppressMetrics struct {
	noMetrics
	suppressed atomic.Int64
}

func (m *suppressMetrics) RejectEventsSuppressed(n int) { m.suppressed.Add(int64(n)) }

// newRejectEnv is a test server that records reject events in its store,
// on clock, counting suppressed ones in m.
func newRejectEnv(t *testing.T, clock *stepClock, m *suppressMetrics) *testEnv {
	te := newTestEnvDeps(t, func(c *Config) { c.Now = clock.Now }, func(d *Deps) {
		d.Events = d.Queue.(*store.SQLite)
		d.Metrics = m
	})
	return te
}

// rejects returns the reject events of cred.
func rejects(t *testing.T, te *testEnv, cred string) []store.Event {
	t.Helper()
	evs, err := te.st.QueryEvents(context.Background(), store.EventQuery{Credential: cred, Type: store.EventReject})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// waitRejects waits until cred's reject events stand for want refusals in
// all (written when a connection ends, after the client saw it end), and
// returns them.
func waitRejects(t *testing.T, te *testEnv, cred string, want int) []store.Event {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		evs := rejects(t, te, cred)
		sum := 0
		for _, e := range evs {
			sum += e.Count
		}
		if sum == want {
			return evs
		}
		if sum > want || time.Now().After(deadline) {
			t.Fatalf("reject events of %s stand for %d refusals, want %d: %+v", cred, sum, want, evs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

const unverifiedReply = "554 5.7.1 Message rejected: Email address is not verified. The following identities failed the check: x@unverified.example"

// One connection refused 500 times the same way writes a bounded number of
// reject events whose counts add up to 500: the first at once, the repeats
// summed when the connection ends, or once the sum is a minute old. Another
// kind of refusal is recorded at once meanwhile.
func TestRejectEventsSummedPerConnection(t *testing.T) {
	clock := &stepClock{t: time.Now()}
	te := newRejectEnv(t, clock, &suppressMetrics{})
	s := dialRaw(t, te.starttls)
	s.starttls()
	s.cmd("EHLO client.test", "250")
	s.cmd("AUTH PLAIN "+plainIR(te.username, te.password), "235")
	for range 500 {
		s.cmd("MAIL FROM:<x@unverified.example>", unverifiedReply)
	}
	if evs := rejects(t, te, "app"); len(evs) != 1 || evs[0].Count != 1 || evs[0].Reply != unverifiedReply {
		t.Fatalf("after 500 refusals on a connection: %+v; want the first one only, at once", evs)
	}
	s.cmd("MAIL FROM:<>", "553 5.1.7")
	if evs := rejects(t, te, "app"); len(evs) != 2 || !strings.HasPrefix(evs[1].Reply, "553 5.1.7") {
		t.Fatalf("another kind of refusal is not recorded at once: %+v", evs)
	}
	// A sum a minute old is written at the next repeat, counting it.
	clock.Add(rejectSummaryEvery)
	s.cmd("MAIL FROM:<x@unverified.example>", unverifiedReply)
	evs := rejects(t, te, "app")
	if len(evs) != 3 || evs[2].Count != 500 || evs[2].Reply != unverifiedReply || !evs[2].At.Equal(clock.Now()) {
		t.Fatalf("a minute on: %+v; want a third event counting 499 repeats and this one", evs)
	}
	for range 10 {
		s.cmd("MAIL FROM:<x@unverified.example>", unverifiedReply)
	}
	s.cmd("QUIT", "221")
	evs = waitRejects(t, te, "app", 1+1+500+10)
	if len(evs) != 4 || evs[3].Count != 10 {
		t.Fatalf("after QUIT: %+v; want a fourth event counting the last 10", evs)
	}
	counts, err := te.st.CountEvents(context.Background(), store.EventQuery{Credential: "app"})
	if err != nil || counts[store.EventReject] != 512 {
		t.Errorf("CountEvents = %v, %v; want 512 rejects (what the events stand for)", counts, err)
	}
}

// Over its cap, a credential's reject events are not written but counted
// (metric), and summed into one event once it has room again (or at
// FlushRejectEvents); another credential has a cap of its own.
func TestRejectEventsCappedPerCredential(t *testing.T) {
	clock := &stepClock{t: time.Now()}
	m := &suppressMetrics{}
	te := newRejectEnv(t, clock, m)
	te.srv.rejects.setPerMinute(5)
	ctx := context.Background()
	pass := account.NewPassword()
	hash, _ := account.HashPassword(pass)
	other := store.Credential{Name: "other", Username: account.NewUsername(), PasswordHash: hash, CreatedAt: time.Now(), UpdatedAt: time.Now()}
	if err := te.st.CreateCredential(ctx, other); err != nil {
		t.Fatal(err)
	}
	refuseOnce := func(ir string) {
		s := dialRaw(t, te.starttls)
		s.starttls()
		s.cmd("EHLO client.test", "250")
		s.cmd("AUTH PLAIN "+ir, "235")
		s.cmd("MAIL FROM:<x@unverified.example>", unverifiedReply)
		s.cmd("QUIT", "221")
	}
	app := plainIR(te.username, te.password)

	// Twelve connections, one refusal each: five events, seven suppressed.
	for range 12 {
		refuseOnce(app)
	}
	if evs := rejects(t, te, "app"); len(evs) != 5 || m.suppressed.Load() != 7 {
		t.Fatalf("12 refusals with a cap of 5: %d events, %d suppressed; want 5 and 7", len(evs), m.suppressed.Load())
	}
	refuseOnce(plainIR(other.Username, pass))
	if evs := rejects(t, te, "other"); len(evs) != 1 {
		t.Fatalf("another credential's refusal: %d events, want 1 at once", len(evs))
	}

	// A minute on: the seven are summed into one event before the next.
	clock.Add(time.Minute)
	refuseOnce(app)
	evs := rejects(t, te, "app")
	if len(evs) != 7 || evs[5].Count != 7 || evs[5].Reply != unverifiedReply || evs[5].Recipient != "" || evs[6].Count != 1 {
		t.Fatalf("a minute on: %+v; want the sum of the seven, then the new one", evs)
	}
	// Three tokens are left: three events, two suppressed, summed at
	// FlushRejectEvents.
	for range 5 {
		refuseOnce(app)
	}
	if evs := rejects(t, te, "app"); len(evs) != 10 || m.suppressed.Load() != 9 {
		t.Fatalf("%d events, %d suppressed; want 10 and 9", len(evs), m.suppressed.Load())
	}
	te.srv.FlushRejectEvents()
	evs = waitRejects(t, te, "app", 18)
	if len(evs) != 11 || evs[10].Count != 2 {
		t.Errorf("after FlushRejectEvents: %+v; want an 11th event counting the last two", evs)
	}
}

// The sum of refusals names a recipient only when they all were for it.
func TestRejectSumRecipient(t *testing.T) {
	now := time.Now()
	for _, tt := range []struct {
		name  string
		rcpts [][]string
		want  string
		count int
	}{
		{"one recipient", [][]string{{"a@x.example"}, {"a@x.example"}}, "a@x.example", 2},
		{"several at once", [][]string{{"a@x.example", "b@x.example"}}, "", 2},
		{"one after another", [][]string{{"a@x.example"}, {"b@x.example"}}, "", 2},
		{"before any recipient", [][]string{nil, nil}, "", 2},
		{"before and with one", [][]string{nil, {"a@x.example"}}, "", 2},
		{"with one and before", [][]string{{"a@x.example"}, nil}, "", 2},
	} {
		var s rejectSum
		for _, r := range tt.rcpts {
			s.add(max(1, len(r)), r, "554 no", now)
		}
		if e := s.event("app"); e.Recipient != tt.want || e.Count != tt.count || e.Type != store.EventReject {
			t.Errorf("%s: %+v; want recipient %q, count %d", tt.name, e, tt.want, tt.count)
		}
	}
}
