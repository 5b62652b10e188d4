package relay

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/sesame-mail/sesame/store"
)

// mxZone gives every domain D for which ipOf answers an address the mail
// exchanger mx.D at that address; other names do not exist.
func mxZone(ipOf func(domain string) string) zoneFunc {
	return func(name string, qtype uint16) ([]string, bool) {
		switch {
		case qtype == dns.TypeMX && ipOf(name) != "":
			return []string{name + " 300 IN MX 10 mx." + name}, false
		case qtype == dns.TypeA && strings.HasPrefix(name, "mx.") && ipOf(strings.TrimPrefix(name, "mx.")) != "":
			return []string{name + " 300 IN A " + ipOf(strings.TrimPrefix(name, "mx."))}, false
		}
		return nil, false
	}
}

// domainNumber is N of "dN.suffix.", or -1.
func domainNumber(name, suffix string) int {
	label, ok := strings.CutSuffix(name, "."+suffix+".")
	if !ok || !strings.HasPrefix(label, "d") {
		return -1
	}
	n, err := strconv.Atoi(label[1:])
	if err != nil {
		return -1
	}
	return n
}

// startRelay is start (relay_test.go), returning the relay for the test to
// look inside.
func startRelay(t *testing.T, cfg Config, q Queue) *Relay {
	t.Helper()
	r := New(cfg, q)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Run did not return within 30s of cancel")
		}
	})
	return r
}

// outcomes waits for the outcomes of n recipients, by address.
func outcomes(t *testing.T, q *recorder, n int, within time.Duration) map[string]store.Outcome {
	t.Helper()
	got := map[string]store.Outcome{}
	deadline := time.After(within)
	for len(got) < n {
		select {
		case o := <-q.outcomes:
			got[o.Recipient] = o
		case <-deadline:
			t.Fatalf("%d of %d outcomes within %s", len(got), n, within)
		}
	}
	return got
}

// Under a 100 ms round trip to 200 domains on 20 servers, the deliveries in
// flight are not held to a fixed count (the old 32 workers): the servers'
// windows grow while deliveries go well, and no server ever sees more
// sessions at once than the per-destination cap, as counted by the servers
// themselves.
func TestLatencyConcurrencyFollowsTheWork(t *testing.T) {
	const servers, domains, perDomain, limit = 20, 200, 2, 8
	ips := loopbackIPs(1, servers)
	f := startFarm(t, ips, 100*time.Millisecond)
	zone, _ := startZoneFunc(t, mxZone(func(name string) string {
		if n := domainNumber(name, "lat.test"); n >= 0 && n < domains {
			return ips[n%servers]
		}
		return ""
	}))
	q := newQueue(t)
	cfg := testConfig(t, "", nil)
	cfg.Workers = 0 // no cap but the memory budget
	cfg.MXPort = f.port
	cfg.DNSServers = []string{zone}
	cfg.AllowPrivateDestinations = true
	cfg.DestinationConcurrency = limit
	cfg.InitialDestinationConcurrency = 2
	r := startRelay(t, cfg, q)
	began := time.Now()
	var wg sync.WaitGroup
	for i := range perDomain {
		for d := range domains {
			wg.Go(func() { enqueue(t, q, mxSender, mxBody, fmt.Sprintf("r%d@d%d.lat.test", i, d)) })
		}
	}
	wg.Wait()

	got := outcomes(t, q, domains*perDomain, time.Minute)
	t.Logf("%d messages delivered in %s", len(got), time.Since(began).Round(time.Millisecond))
	for addr, o := range got {
		if o.State != store.StateDelivered {
			t.Errorf("%s: %s %q, want delivered", addr, o.State, o.Reply)
		}
	}
	_, peak := f.sessions()
	t.Logf("at most %d sessions open at once at the %d servers (the old fixed workers: 32); at one server %v", peak, servers, f.peaks())
	if peak <= 32 {
		t.Errorf("at most %d sessions open at once: concurrency did not grow past the old 32 workers", peak)
	}
	grown := 0
	for ip, n := range f.peaks() {
		if n > limit {
			t.Errorf("server %s saw %d sessions at once, over the per-destination cap of %d", ip, n, limit)
		}
		if r.windows.size(netip.MustParseAddr(ip)) > cfg.InitialDestinationConcurrency {
			grown++
		}
	}
	if grown == 0 {
		t.Error("no server's window grew past its initial size while every delivery succeeded")
	}
}

// A server that answers 421 to every new connection: its window shrinks,
// so it is asked far fewer times than there are messages for it, and the
// mail for the other server goes on meanwhile.
func TestLatencyRefusingServerShrinks(t *testing.T) {
	const messages = 20
	ips := loopbackIPs(3, 2)
	bad, good := ips[0], ips[1]
	f := startFarm(t, ips, 0)
	f.mu.Lock()
	f.refuse[bad] = "421 4.7.0 Too many connections from your IP, try again later"
	f.mu.Unlock()
	zone, _ := startZoneFunc(t, mxZone(func(name string) string {
		switch {
		case domainNumber(name, "bad.test") >= 0:
			return bad
		case domainNumber(name, "good.test") >= 0:
			return good
		}
		return ""
	}))
	q := newQueue(t)
	cfg := testConfig(t, "", nil)
	cfg.Workers = 0
	cfg.MXPort = f.port
	cfg.DNSServers = []string{zone}
	cfg.AllowPrivateDestinations = true
	cfg.RetryFirst, cfg.RetryMax = time.Hour, time.Hour // the deferred mail stays away
	for i := range messages {
		enqueue(t, q, mxSender, mxBody, fmt.Sprintf("r@d%d.bad.test", i))
		enqueue(t, q, mxSender, mxBody, fmt.Sprintf("r@d%d.good.test", i))
	}
	r := startRelay(t, cfg, q)

	got := outcomes(t, q, 2*messages, time.Minute)
	for addr, o := range got {
		switch {
		case strings.HasSuffix(addr, ".good.test") && o.State != store.StateDelivered:
			t.Errorf("%s: %s %q, want delivered while the other server refuses", addr, o.State, o.Reply)
		case strings.HasSuffix(addr, ".bad.test") && o.State != store.StateDeferred:
			t.Errorf("%s: %s %q, want deferred", addr, o.State, o.Reply)
		}
	}
	refused := f.refused.Load()
	t.Logf("the refusing server was connected to %d times for %d messages; its window is %d, the other's %d",
		refused, messages, r.windows.size(netip.MustParseAddr(bad)), r.windows.size(netip.MustParseAddr(good)))
	if refused >= messages/2 {
		t.Errorf("the refusing server was connected to %d times for %d messages: its window did not shrink", refused, messages)
	}
	if n := r.windows.size(netip.MustParseAddr(bad)); n != 1 {
		t.Errorf("the refusing server's window is %d, want 1", n)
	}
	if n := r.windows.size(netip.MustParseAddr(good)); n < cfg.InitialDestinationConcurrency {
		t.Errorf("the good server's window is %d, below its start of %d", n, cfg.InitialDestinationConcurrency)
	}
}

// A new connection to a server name seen before resumes its TLS session:
// no certificate to send and check (and with TLS 1.2 a round trip less).
func TestLatencyTLSSessionResumed(t *testing.T) {
	f := startFarmTLS(t, loopbackIPs(5, 1), 0, farmTLS(t))
	cfg := testConfig(t, "", nil)
	cfg.MXPort = f.port
	cfg.AllowPrivateDestinations = true
	cfg.DNSServers = []string{"127.0.0.1:53"} // never asked: the test dials an address
	r := New(cfg, newQueue(t))
	if err := r.prepare(); err != nil {
		t.Fatal(err)
	}
	addr := netip.AddrPortFrom(netip.MustParseAddr(loopbackIPs(5, 1)[0]), uint16(f.port))
	var resumed []bool
	for range 2 {
		if _, err := r.windows.acquire(context.Background(), addr, ""); err != nil {
			t.Fatal(err)
		}
		s, err := r.dialAddr(context.Background(), netip.Addr{}, "mx.resume.test", addr)
		if err != nil {
			t.Fatal(err)
		}
		if s.tls == "" {
			t.Fatal("the connection is not encrypted")
		}
		resumed = append(resumed, s.resumed)
		s.release = func() { r.windows.release(addr.Addr()) }
		s.quit()
	}
	if resumed[0] || !resumed[1] {
		t.Errorf("TLS sessions resumed: %v, want the second connection's only", resumed)
	}
}

// readCounter is the real queue, counting the message reads: one per
// delivery started.
type readCounter struct {
	*recorder
	reads atomic.Int64
}

func (q *readCounter) MessageData(ctx context.Context, id string) ([]byte, error) {
	q.reads.Add(1)
	return q.recorder.MessageData(ctx, id)
}

// The domains whose mail exchanger is one server share what that server
// may hold up: once the relay knows where their mail goes, the deliveries
// in flight for a server that answers slowly stay within twice its window,
// however many domains are behind it, instead of filling the memory budget
// with deliveries waiting for it.
func TestLatencyDomainsOfOneServerShareIt(t *testing.T) {
	const domains, perDomain, limit = 50, 4, 2
	ip := loopbackIPs(6, 1)[0]
	f := startFarm(t, []string{ip}, 0)
	zone, _ := startZoneFunc(t, mxZone(func(name string) string {
		if n := domainNumber(name, "shared.test"); n >= 0 && n < domains {
			return ip
		}
		return ""
	}))
	q := &readCounter{recorder: newQueue(t)}
	cfg := testConfig(t, "", nil)
	cfg.Workers = 0
	cfg.MXPort = f.port
	cfg.DNSServers = []string{zone}
	cfg.AllowPrivateDestinations = true
	cfg.DestinationConcurrency, cfg.InitialDestinationConcurrency = limit, limit
	startRelay(t, cfg, q)

	// One message per domain first: the relay learns where they go.
	for d := range domains {
		enqueue(t, q.recorder, mxSender, mxBody, fmt.Sprintf("first@d%d.shared.test", d))
	}
	outcomes(t, q.recorder, domains, time.Minute)

	hold := make(chan struct{})
	f.mu.Lock()
	f.hold = hold
	f.mu.Unlock()
	released := false
	defer func() {
		if !released {
			close(hold)
		}
	}()
	q.reads.Store(0)
	for i := range perDomain {
		for d := range domains {
			enqueue(t, q.recorder, mxSender, mxBody, fmt.Sprintf("r%d@d%d.shared.test", i, d))
		}
	}
	for deadline := time.Now().Add(30 * time.Second); f.holding.Load() < limit; {
		if time.Now().After(deadline) {
			t.Fatalf("%d messages held at the server within 30s, want %d", f.holding.Load(), limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // room for more deliveries to start, if they would
	if n := q.reads.Load(); n > 2*limit {
		t.Errorf("%d deliveries started for %d domains behind one server whose window is %d; want at most %d",
			n, domains, limit, 2*limit)
	}
	close(hold)
	released = true
	got := outcomes(t, q.recorder, domains*perDomain, time.Minute)
	for addr, o := range got {
		if o.State != store.StateDelivered {
			t.Errorf("%s: %s %q, want delivered", addr, o.State, o.Reply)
		}
	}
}
