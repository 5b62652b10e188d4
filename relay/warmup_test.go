package relay

// Warm-up and provider shaping, end to end: a real SQLite queue, a real DNS
// server, real SMTP sinks on 127.0.0.2 (and 127.0.0.3), and outbound mail
// sent from source addresses 127.0.0.4, 127.0.0.5, … which the sinks see as
// the peer of each delivery. A test clock drives the windows: the test
// advances it and wakes the dispatcher, as a real hour boundary would.

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sesame-mail/sesame/store"
	"github.com/sesame-mail/sesame/testkit"
	"github.com/sesame-mail/sesame/warmup"
)

// newTestClock starts at 10:01 on testkit's day: mid-morning, hours from
// either end of the day.
func newTestClock(t *testing.T) *testkit.Clock {
	c := testkit.NewClock(t)
	c.Set(testkit.Day(t).Add(10*time.Hour + time.Minute))
	return c
}

// wakeQueue is a recorder whose Ready the test can fire, so the
// dispatcher looks again after the test clock moved.
type wakeQueue struct {
	*recorder
	ready chan struct{}
}

func newWakeQueue(t *testing.T, q *recorder) *wakeQueue {
	w := &wakeQueue{recorder: q, ready: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-q.SQLite.Ready():
				w.wake()
			}
		}
	}()
	return w
}

func (w *wakeQueue) Ready() <-chan struct{} { return w.ready }

func (w *wakeQueue) wake() {
	select {
	case w.ready <- struct{}{}:
	default:
	}
}

// shapedSetup is one warm-up test's world.
type shapedSetup struct {
	t     *testing.T
	clock *testkit.Clock
	q     *wakeQueue
	sink  *testkit.Sink
	cfg   Config
	lim   *warmup.Limiter
}

// newShaped starts DNS for the given zone records plus dest.test (MX on
// 127.0.0.2), a sink on 127.0.0.2, and returns a relay configuration with
// the limiter cfg describes. wrap, when set, wraps the sink's backend.
func newShaped(t *testing.T, wcfg warmup.Config, wrap func(smtp.Backend) smtp.Backend, zone ...string) *shapedSetup {
	t.Helper()
	port, lns := testkit.ReservePort(t, "127.0.0.2")
	s := sinkOn(t, lns["127.0.0.2"], wrap)
	zone = append(zone, "dest.test. 300 IN MX 10 mx.dest.test.", "mx.dest.test. 300 IN A 127.0.0.2")
	z := testkit.StartZone(t, zone...)
	clock := newTestClock(t)
	cfg := mxConfig(t, z, port)
	cfg.Workers = 1
	cfg.Now = clock.Now
	lim := warmup.NewLimiter(wcfg)
	cfg.Shaper = lim
	return &shapedSetup{t: t, clock: clock, q: newWakeQueue(t, newQueue(t)), sink: s, cfg: cfg, lim: lim}
}

// advance moves the clock and wakes the relay.
func (s *shapedSetup) advance(d time.Duration) {
	s.clock.Advance(d)
	s.q.wake()
}

// enqueueFrom queues one message per recipient for credential, in order,
// and returns the recipients.
func (s *shapedSetup) enqueueFrom(credential string, rcpts ...string) []string {
	s.t.Helper()
	for _, r := range rcpts {
		m := &store.Message{Credential: credential, Sender: mxSender, Recipients: []string{r}, ReceivedAt: s.clock.Now(),
			Data: []byte(mxBody)}
		if err := s.q.Enqueue(context.Background(), m); err != nil {
			s.t.Fatal(err)
		}
	}
	return rcpts
}

func numbered(prefix, domain string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%02d@%s", prefix, i, domain)
	}
	return out
}

// delivery is what the sink saw of one message.
type delivery struct {
	rcpt string
	peer string // source IP
}

// receive waits for n messages at the sink, then checks that no more
// arrive for a moment (the relay has had every chance to exceed a cap).
func (s *shapedSetup) receive(n int) []delivery {
	s.t.Helper()
	var out []delivery
	for range n {
		m := s.sink.Next(s.t)
		host, _, _ := net.SplitHostPort(m.Peer)
		for _, r := range m.To {
			out = append(out, delivery{rcpt: r, peer: host})
		}
	}
	if m, ok := s.sink.NextWithin(700 * time.Millisecond); ok {
		s.t.Fatalf("a delivery beyond the cap: to %v from %s (after %d)", m.To, m.Peer, n)
	}
	return out
}

func rcptsOf(ds []delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.rcpt
	}
	return out
}

func byPeer(ds []delivery) map[string]int {
	out := map[string]int{}
	for _, d := range ds {
		out[d.peer]++
	}
	return out
}

// parked waits until n recipients wait in the store for capacity.
func (s *shapedSetup) parked(n int) {
	s.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		counts, err := s.q.ParkedCounts(context.Background())
		if err != nil {
			s.t.Fatal(err)
		}
		total := 0
		for _, c := range counts {
			total += c
		}
		if total == n {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%d recipients parked (%v), want %d", total, counts, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func oneIP(addr string, start time.Time) warmup.IP {
	ip := warmup.IP{Pool: warmup.DefaultPool, Start: start}
	if addr != "" {
		ip.Addr = mustAddr(addr)
	}
	return ip
}

// A day-1 IP sends its hourly cap and no more; the rest waits (deferred,
// reason warm-up) and leaves in the next windows in arrival order, until
// the daily cap; the next day's window takes the remainder.
func TestWarmupCapsAndArrivalOrder(t *testing.T) {
	today := testkit.Day(t)
	s := newShaped(t, warmup.Config{
		IPs:      []warmup.IP{oneIP("127.0.0.4", today)},
		Schedule: warmup.Schedule{Daily: []int{10, 100}, SpreadHours: 2}, // day 1: 5 an hour, 10 a day
	}, nil)
	all := s.enqueueFrom("test", numbered("r", "dest.test", 14)...)
	start(t, s.cfg, s.q)

	first := s.receive(5)
	s.parked(9)
	for _, r := range recipients(t, s.q.recorder) {
		if r.State != store.StateDeferred && !strings.Contains(r.LastReply, "warm-up") {
			t.Errorf("%s: %s %q, want deferred waiting for warm-up capacity", r.Address, r.State, r.LastReply)
		}
		if r.Attempts != 0 {
			t.Errorf("%s: %d attempts counted while waiting for capacity", r.Address, r.Attempts)
		}
	}
	s.advance(time.Hour)
	second := s.receive(5)
	s.advance(time.Hour)
	s.receive(0) // the day's 10 are used up
	s.advance(24 * time.Hour)
	third := s.receive(4) // day 2: 100 a day, 50 an hour

	got := rcptsOf(append(append(first, second...), third...))
	if strings.Join(got, " ") != strings.Join(all, " ") {
		t.Errorf("delivered in the order\n%v\nwant arrival order\n%v", got, all)
	}
	for _, d := range append(append(first, second...), third...) {
		if d.peer != "127.0.0.4" {
			t.Errorf("%s left from %s, want 127.0.0.4", d.rcpt, d.peer)
		}
	}
	wantQueueEmpty(t, s.q.recorder)
}

// Two IPs share the load by head-room: the one with more room left goes
// first, then they alternate; neither exceeds its cap.
func TestWarmupHeadroomSharing(t *testing.T) {
	today := testkit.Day(t)
	s := newShaped(t, warmup.Config{
		IPs: []warmup.IP{oneIP("127.0.0.4", today), oneIP("127.0.0.5", today.Add(-48*time.Hour))},
		// day 1: 4 an hour; day 3: 10 an hour
		Schedule: warmup.Schedule{Daily: []int{4, 8, 10, 1000}, SpreadHours: 1},
	}, nil)
	s.enqueueFrom("test", numbered("h", "dest.test", 16)...)
	start(t, s.cfg, s.q)
	got := byPeer(s.receive(14))
	if got["127.0.0.4"] != 4 || got["127.0.0.5"] != 10 {
		t.Errorf("deliveries by source %v, want 4 from 127.0.0.4 (day 1) and 10 from 127.0.0.5 (day 3)", got)
	}
	s.parked(2)
}

// Equal IPs alternate.
func TestWarmupEqualIPsAlternate(t *testing.T) {
	s := newShaped(t, warmup.Config{
		IPs:      []warmup.IP{oneIP("127.0.0.4", time.Time{}), oneIP("127.0.0.5", time.Time{})},
		Schedule: warmup.Schedule{Daily: warmup.DefaultDaily, SpreadHours: 12},
	}, nil)
	s.enqueueFrom("test", numbered("e", "dest.test", 8)...)
	start(t, s.cfg, s.q)
	got := byPeer(s.receive(8))
	if got["127.0.0.4"] != 4 || got["127.0.0.5"] != 4 {
		t.Errorf("deliveries by source %v, want 4 from each", got)
	}
}

// A credential's pool restricts its mail to the pool's IPs; credentials
// without a pool (and Sesame's own notices) use the default pool.
func TestWarmupPools(t *testing.T) {
	s := newShaped(t, warmup.Config{
		IPs: []warmup.IP{oneIP("127.0.0.4", time.Time{}),
			{Addr: mustAddr("127.0.0.5"), Pool: "bulk"}, {Addr: mustAddr("127.0.0.6"), Pool: "bulk"}},
		Schedule: warmup.Schedule{Daily: warmup.DefaultDaily, SpreadHours: 12},
	}, nil)
	ctx := context.Background()
	for _, name := range []string{"shop", "news"} {
		if err := s.q.CreateCredential(ctx, store.Credential{Name: name, Username: "U" + name, PasswordHash: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.q.SetPool(ctx, "news", "bulk"); err != nil {
		t.Fatal(err)
	}
	s.enqueueFrom("shop", numbered("shop", "dest.test", 4)...)
	s.enqueueFrom("news", numbered("news", "dest.test", 6)...)
	start(t, s.cfg, s.q)
	for _, d := range s.receive(10) {
		bulk := strings.HasPrefix(d.rcpt, "news")
		if bulk && d.peer == "127.0.0.4" || !bulk && d.peer != "127.0.0.4" {
			t.Errorf("%s left from %s: pool default is 127.0.0.4, pool bulk 127.0.0.5 and .6", d.rcpt, d.peer)
		}
	}
}

// An IP on day 1 and one on day 30 of the default schedule: the first
// sends 5 an hour (50 a day over 12 hours), the second is not held back by
// 10 messages.
func TestWarmupDay1AndDay30(t *testing.T) {
	today := testkit.Day(t)
	s := newShaped(t, warmup.Config{
		IPs: []warmup.IP{oneIP("127.0.0.4", today),
			{Addr: mustAddr("127.0.0.5"), Pool: "old", Start: today.Add(-29 * 24 * time.Hour)}},
		Schedule: warmup.Schedule{Daily: warmup.DefaultDaily, SpreadHours: warmup.DefaultSpreadHours},
	}, nil)
	ctx := context.Background()
	if err := s.q.CreateCredential(ctx, store.Credential{Name: "old", Username: "Uold", PasswordHash: "x"}); err != nil {
		t.Fatal(err)
	}
	if err := s.q.SetPool(ctx, "old", "old"); err != nil {
		t.Fatal(err)
	}
	s.enqueueFrom("test", numbered("new", "dest.test", 10)...)
	s.enqueueFrom("old", numbered("old", "dest.test", 10)...)
	start(t, s.cfg, s.q)
	got := byPeer(s.receive(15))
	if got["127.0.0.4"] != 5 || got["127.0.0.5"] != 10 {
		t.Errorf("deliveries by source %v, want 5 from the day-1 IP and all 10 from the day-30 IP", got)
	}
	st := s.lim.Status(s.clock.Now())
	if st[0].Day != 1 || st[0].DailyCap != 50 || st[0].HourlyCap != 5 {
		t.Errorf("day-1 IP status %+v, want day 1, 50 a day, 5 an hour", st[0])
	}
	if st[1].Day != 30 || st[1].DailyCap < 1_000_000 {
		t.Errorf("day-30 IP status %+v, want day 30 with a daily cap in the millions", st[1])
	}
	s.parked(5)
}

// A domain whose MX is under a provider group's host names counts against
// the group: the group's hourly cap holds for it while other domains go on.
func TestWarmupProviderGroupByMX(t *testing.T) {
	s := newShaped(t, warmup.Config{
		IPs:       []warmup.IP{oneIP("127.0.0.4", time.Time{})},
		Schedule:  warmup.Schedule{Daily: warmup.DefaultDaily, SpreadHours: 12},
		Providers: []warmup.Provider{{Name: "google", MX: []string{"google.com"}, Hourly: 3}},
	}, nil, "corp.test. 300 IN MX 10 aspmx.l.google.com.", "aspmx.l.google.com. 300 IN A 127.0.0.2")
	s.enqueueFrom("test", numbered("g", "corp.test", 5)...)
	s.enqueueFrom("test", numbered("o", "dest.test", 5)...)
	start(t, s.cfg, s.q)
	ds := s.receive(8)
	google := 0
	for _, d := range ds {
		if strings.HasSuffix(d.rcpt, "@corp.test") {
			google++
		}
	}
	if google != 3 {
		t.Errorf("%d messages to corp.test (MX at google.com) in the hour, want the google cap of 3", google)
	}
	s.parked(2)
	counts, _ := s.q.ParkedCounts(context.Background())
	if counts["default/google"] != 2 {
		t.Errorf("waiting lines %v, want 2 in default/google", counts)
	}
	s.advance(time.Hour)
	s.receive(2)
}

// throttleBackend answers RCPT with a provider's rate-limit reply for
// connections from one source address.
type throttleBackend struct {
	s      smtp.Backend
	from   string // source IP to throttle
	domain string // recipients to throttle: "@corp.test"

	mu        sync.Mutex
	throttled int
}

func (b *throttleBackend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	sess, _ := b.s.NewSession(c)
	host, _, _ := net.SplitHostPort(c.Conn().RemoteAddr().String())
	if host != b.from {
		return sess, nil
	}
	return &throttledSession{Session: sess, b: b}, nil
}

type throttledSession struct {
	smtp.Session
	b *throttleBackend
}

func (s *throttledSession) Rcpt(to string, opts *smtp.RcptOptions) error {
	if !strings.HasSuffix(to, s.b.domain) {
		return s.Session.Rcpt(to, opts)
	}
	s.b.mu.Lock()
	s.b.throttled++
	s.b.mu.Unlock()
	return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 28},
		Message: "Our system has detected an unusual rate of unsolicited mail originating from your IP address"}
}

// A throttling reply suspends only that IP × provider: the IP goes on
// sending to other destinations, the provider gets its mail from the other
// IP, and the throttled recipient is delivered from there.
func TestWarmupThrottleSuspendsIPProvider(t *testing.T) {
	var tb *throttleBackend
	s := newShaped(t, warmup.Config{
		IPs:       []warmup.IP{oneIP("127.0.0.4", time.Time{}), oneIP("127.0.0.5", time.Time{})},
		Schedule:  warmup.Schedule{Daily: warmup.DefaultDaily, SpreadHours: 12},
		Providers: []warmup.Provider{{Name: "google", MX: []string{"google.com"}}},
		Backoff:   time.Hour, BackoffMax: 4 * time.Hour,
	}, func(s smtp.Backend) smtp.Backend {
		tb = &throttleBackend{s: s, from: "127.0.0.4", domain: "@corp.test"}
		return tb
	}, "corp.test. 300 IN MX 10 aspmx.l.google.com.", "aspmx.l.google.com. 300 IN A 127.0.0.2")
	// The first grant goes to the first IP, 127.0.0.4, which google throttles.
	s.enqueueFrom("test", "g00@corp.test")
	s.enqueueFrom("test", numbered("o", "dest.test", 4)...)
	s.enqueueFrom("test", numbered("g", "corp.test", 4)[1:]...)
	start(t, s.cfg, s.q)
	ds := s.receive(8)
	fromA := 0
	for _, d := range ds {
		switch {
		case strings.HasSuffix(d.rcpt, "@corp.test") && d.peer != "127.0.0.5":
			t.Errorf("%s left from %s while 127.0.0.4 was suspended for google", d.rcpt, d.peer)
		case strings.HasSuffix(d.rcpt, "@dest.test") && d.peer == "127.0.0.4":
			fromA++
		}
	}
	if fromA == 0 {
		t.Errorf("127.0.0.4 sent nothing to dest.test (%v): the suspension must cover google only", ds)
	}
	tb.mu.Lock()
	if tb.throttled != 1 {
		t.Errorf("google was asked %d times from the throttled IP, want once", tb.throttled)
	}
	tb.mu.Unlock()
	for _, st := range s.lim.Status(s.clock.Now()) {
		for _, p := range st.Providers {
			suspended := p.SuspendedUntil != nil
			if want := st.IP == "127.0.0.4" && p.Provider == "google"; suspended != want {
				t.Errorf("%s × %s suspended: %v, want %v", st.IP, p.Provider, suspended, want)
			}
		}
	}
	susp, err := s.q.IPSuspensions(context.Background())
	if err != nil || len(susp) != 1 || susp[0].IP != "127.0.0.4" || susp[0].Provider != "google" ||
		!strings.Contains(susp[0].Reply, "4.7.28") {
		t.Errorf("stored suspensions %+v (%v), want 127.0.0.4 × google after the 4.7.28 reply", susp, err)
	}
	wantQueueEmpty(t, s.q.recorder)
}

// The counters are in the store: a relay restarted in the middle of an
// hour goes on from what was sent, neither from zero nor counting twice.
func TestWarmupCountersSurviveRestart(t *testing.T) {
	today := testkit.Day(t)
	wcfg := warmup.Config{
		IPs:      []warmup.IP{oneIP("127.0.0.4", today)},
		Schedule: warmup.Schedule{Daily: []int{10}, SpreadHours: 2}, // 5 an hour
	}
	s := newShaped(t, wcfg, nil)
	s.enqueueFrom("test", numbered("a", "dest.test", 3)...)
	stop := start(t, s.cfg, s.q)
	s.receive(3)
	stop()

	s.cfg.Shaper = warmup.NewLimiter(wcfg)
	s.enqueueFrom("test", numbered("b", "dest.test", 5)...)
	start(t, s.cfg, s.q)
	s.receive(2)
	s.parked(3)
	st := s.cfg.Shaper.Status(s.clock.Now())[0]
	if st.SentHour != 5 || st.SentToday != 5 {
		t.Errorf("after the restart: %d this hour, %d today; want 5 and 5", st.SentHour, st.SentToday)
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// A provider's per-connection cap closes the connection after that many
// messages; the next ones go over a new one.
func TestWarmupPerConnectionCap(t *testing.T) {
	s := newShaped(t, warmup.Config{
		IPs:       []warmup.IP{oneIP("127.0.0.4", time.Time{})},
		Schedule:  warmup.Schedule{Daily: warmup.DefaultDaily, SpreadHours: 12},
		Providers: []warmup.Provider{{Name: "microsoft", MX: []string{"outlook.com"}, PerConnection: 2}},
	}, nil, "corp.test. 300 IN MX 10 corp-test.mail.protection.outlook.com.",
		"corp-test.mail.protection.outlook.com. 300 IN A 127.0.0.2")
	s.enqueueFrom("test", numbered("m", "corp.test", 5)...)
	s.enqueueFrom("test", numbered("o", "dest.test", 4)...)
	start(t, s.cfg, s.q)
	s.receive(9)
	// corp.test: 2 + 2 + 1 over three connections; dest.test (other, no
	// cap) over one, reused.
	if n := s.sink.Accepted(); n != 4 {
		t.Errorf("the sink accepted %d connections, want 4: three for 5 messages at 2 a connection, one for the rest", n)
	}
}
