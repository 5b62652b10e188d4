package test

import (
	"math/rand/v2"
	"sort"
	"testing"
	"time"
)

// TestKillLoop is TestDurabilityAcrossKill twenty times in a row: eight
// clients submit as fast as they can while serve is SIGKILLed at a random
// moment 100–700 ms after each run's first 250, then restarted on the same
// data directory. At the end the load stops, the queue drains, and every
// message that got a 250 must have reached the smarthost at least once. A
// message may arrive twice only if a kill fell between the two copies: the
// relay had delivered it but not yet recorded it, and the next run delivered
// it again (the one duplicate "durable before 250" allows).
func TestKillLoop(t *testing.T) {
	const (
		cycles   = 20
		workers  = 8
		minDelay = 100 * time.Millisecond
		maxDelay = 700 * time.Millisecond
		// A message the dying process finished sending can be read by the
		// sink a little after the SIGKILL was sent.
		sinkLag = 250 * time.Millisecond
	)
	inst := newInstance(t)
	inst.unthrottled()
	user := inst.standard(senderDomain, "killloop")

	began := time.Now()
	l := startLoad(user, workers, inst.smtpAddr)
	var (
		kills  []time.Time
		perRun []int // messages acknowledged by each run, to show each kill came under load
		before int
	)
	for run := range cycles {
		// Under load: from the run's first 250 on.
		if !l.waitAcked(before, 15*time.Second) {
			_, _, firstErr := l.results()
			t.Fatalf("run %d of serve acknowledged nothing within 15s; first client error: %v", run+1, firstErr)
		}
		time.Sleep(minDelay + rand.N(maxDelay-minDelay))
		// No new connections while serve is down (see load); those open
		// are cut by the kill, mid-transaction or not.
		l.pause()
		kills = append(kills, time.Now())
		inst.kill()
		n := l.ackedCount()
		perRun, before = append(perRun, n-before), n
		inst.start()
		l.resume(inst.smtpAddr)
	}
	// The last run takes load for a moment too, then the load stops and
	// the queue drains.
	time.Sleep(minDelay)
	l.stop()
	acked, inflight, firstErr := l.results()
	loadTime := time.Since(began)
	if len(acked) == 0 {
		t.Fatalf("no message was acknowledged in %d runs; first error: %v", cycles, firstErr)
	}
	waitArrived(t, inst.sink, acked, 30*time.Second)
	waitQueueEmpty(t, inst, 30*time.Second)

	var dups, badDups int
	for _, tok := range acked {
		copies := inst.sink.Keyed(tok)
		if len(copies) < 2 {
			continue
		}
		dups++
		sort.Slice(copies, func(i, j int) bool { return copies[i].At.Before(copies[j].At) })
		for i := 1; i < len(copies); i++ {
			if !killBetween(kills, copies[i-1].At.Add(-sinkLag), copies[i].At) {
				badDups++
				t.Errorf("%s arrived at %s and again at %s with no kill in between: a duplicate within one run",
					tok, copies[i-1].At.Format("15:04:05.000"), copies[i].At.Format("15:04:05.000"))
			}
		}
	}
	var inflightArrived int
	for _, tok := range inflight {
		if len(inst.sink.Keyed(tok)) > 0 {
			inflightArrived++
		}
	}
	t.Logf("%d kills in %s; %d messages acknowledged (per run: %v), lost 0, duplicated %d (%d without a kill between the copies); "+
		"%d sent without a 250, of which %d arrived anyway (committed just before a kill)",
		cycles, loadTime.Round(time.Millisecond), len(acked), perRun, dups, badDups, len(inflight), inflightArrived)

	// One sample through the independent verifier: the signature survived
	// twenty crashes.
	inst.expectDelivered(t, acked[len(acked)/2], senderDomain)
}

// killBetween reports whether a kill was sent after from and before to.
func killBetween(kills []time.Time, from, to time.Time) bool {
	for _, k := range kills {
		if k.After(from) && k.Before(to) {
			return true
		}
	}
	return false
}
