package relay

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/sesame-mail/sesame/store"
	"github.com/sesame-mail/sesame/testkit"
)

// One credential's mail to domains whose DNS never answers must not delay
// another credential's mail: the case of 32 messages to 50 such
// domains each (1,600 recipients), which held every delivery slot for
// minutes, while another sender's message to a healthy domain waited.
func TestFairnessBlackHoleDNS(t *testing.T) {
	f := startFarm(t, []string{"127.0.1.1"}, 0)
	zone, dropped := startZoneFunc(t, func(name string, qtype uint16) ([]string, bool) {
		switch {
		case strings.HasSuffix(name, ".blackhole.test."):
			return nil, true
		case name == "healthy.test." && qtype == dns.TypeMX:
			return []string{"healthy.test. 300 IN MX 10 mx.healthy.test."}, false
		case name == "mx.healthy.test." && qtype == dns.TypeA:
			return []string{"mx.healthy.test. 300 IN A 127.0.1.1"}, false
		}
		return nil, false
	})
	q := newQueue(t)
	cfg := testConfig(t, "", nil)
	cfg.Workers = 32 // the old default, all a stuck credential could hold
	cfg.MXPort = f.port
	cfg.DNSServers = []string{zone}
	cfg.AllowPrivateDestinations = true
	cfg.ConnectTimeout = time.Second // one DNS query's timeout; it was paid per domain in a row
	cfg.RetryFirst = time.Hour       // the deferred mail stays away
	cfg.RetryMax = time.Hour
	// The recorder's outcomes are read until the relay has stopped, so that
	// the black-hole mail's outcomes never block it.
	healthy := make(chan store.Outcome, 1)
	drained := make(chan struct{})
	t.Cleanup(func() { close(drained) })
	go func() {
		for {
			select {
			case o := <-q.outcomes:
				if o.Recipient == "rcpt@healthy.test" {
					healthy <- o
				}
			case <-drained:
				return
			}
		}
	}()
	start(t, cfg, q)

	const messages, domains = 32, 50
	ctx := context.Background()
	for m := range messages {
		rcpts := make([]string, domains)
		for i := range rcpts {
			rcpts[i] = fmt.Sprintf("u@d%d-%d.blackhole.test", m, i)
		}
		msg := &store.Message{Credential: "stuck", Sender: mxSender, Recipients: rcpts, ReceivedAt: time.Now(), Data: []byte(mxBody)}
		if err := q.Enqueue(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	// Wait until the stuck credential's deliveries are waiting on DNS.
	for deadline := time.Now().Add(10 * time.Second); dropped.Load() < messages; {
		if time.Now().After(deadline) {
			t.Fatalf("only %d questions for the black-hole domains within 10s", dropped.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}

	began := time.Now()
	other := &store.Message{Credential: "other", Sender: mxSender, Recipients: []string{"rcpt@healthy.test"},
		ReceivedAt: time.Now(), Data: []byte(mxBody)}
	if err := q.Enqueue(ctx, other); err != nil {
		t.Fatal(err)
	}
	var took time.Duration
	select {
	case o := <-healthy:
		took = time.Since(began)
		wantOutcome(t, o, store.StateDelivered, "250 ")
	case <-time.After(20 * time.Second):
		t.Fatalf("the other credential's message was not delivered within 20s (%d black-hole questions so far)", dropped.Load())
	}
	t.Logf("the other credential's message took %s; %d black-hole questions", took.Round(time.Millisecond), dropped.Load())
	if took > time.Second {
		t.Errorf("the other credential's message took %s behind the black-hole mail, want at most 1s", took.Round(time.Millisecond))
	}
}

// Lookups of one question at the same time share one query, and a
// timeout is remembered: the next question is answered at once, without
// asking the dead server again, until failFor has passed.
func TestLookupsCoalescedAndTimeoutsRemembered(t *testing.T) {
	var mu sync.Mutex
	asked := map[string]int{}
	release := make(chan struct{})
	zone, _ := startZoneFunc(t, func(name string, qtype uint16) ([]string, bool) {
		mu.Lock()
		asked[name]++
		mu.Unlock()
		if strings.HasSuffix(name, ".dead.test.") {
			return nil, true
		}
		<-release // the questions of the burst all arrive while the first waits
		if qtype == dns.TypeMX {
			return []string{name + " 300 IN MX 10 mx." + name}, false
		}
		if qtype == dns.TypeA {
			return []string{name + " 300 IN A 192.0.2.1"}, false
		}
		return nil, false
	})
	clock := testkit.NewClock(t)
	r, err := newResolver([]string{zone}, 10*time.Second, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, err := r.exchangers(ctx, "burst.test"); err != nil {
				t.Errorf("exchangers: %v", err)
			}
		})
	}
	time.Sleep(100 * time.Millisecond) // let the burst gather behind the first question
	close(release)
	wg.Wait()
	mu.Lock()
	if n := asked["burst.test."]; n != 1 {
		t.Errorf("%d MX queries for a burst of 20 lookups of one domain, want 1", n)
	}
	mu.Unlock()

	r, err = newResolver([]string{zone}, 200*time.Millisecond, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	r.failFor = time.Minute
	if _, err := r.exchangers(ctx, "gone.dead.test"); err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Fatalf("lookup at a dead server: %v, want a timeout", err)
	}
	began := time.Now()
	_, err = r.exchangers(ctx, "gone.dead.test")
	if err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Fatalf("second lookup: %v, want the remembered timeout", err)
	}
	if took := time.Since(began); took > 100*time.Millisecond {
		t.Errorf("the remembered timeout took %s, want it at once", took)
	}
	mu.Lock()
	if n := asked["gone.dead.test."]; n != 1 {
		t.Errorf("%d MX queries for a domain whose DNS timed out, want 1 while remembered", n)
	}
	mu.Unlock()
	if verdict(err) != store.StateDeferred {
		t.Errorf("a remembered timeout gives %s, want deferred", verdict(err))
	}

	clock.Advance(time.Minute)
	if _, err := r.exchangers(ctx, "gone.dead.test"); err == nil {
		t.Fatal("lookup after failFor: no error")
	}
	mu.Lock()
	if n := asked["gone.dead.test."]; n != 2 {
		t.Errorf("%d MX queries after failFor passed, want 2: the server is asked again", n)
	}
	mu.Unlock()
}
