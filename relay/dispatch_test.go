package relay

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sesame-mail/sesame/store"
)

// claimCounter is the real queue, counting the dispatcher's claims.
type claimCounter struct {
	*recorder
	claims atomic.Int64
}

func (q *claimCounter) Claim(ctx context.Context, now time.Time, max int, lease time.Duration) ([]store.Delivery, error) {
	q.claims.Add(1)
	return q.recorder.Claim(ctx, now, max, lease)
}

// Under a stream of arrivals the dispatcher claims at most once per
// claimSpacing (plus the claims that come back full), not once per message
// and per finished delivery: each claim is a store transaction in the
// committer that submissions wait on. A quiet queue's first arrival is still
// claimed at once.
func TestClaimsGatherArrivals(t *testing.T) {
	q := &claimCounter{recorder: newQueue(t)}
	s := newSink(t, "127.0.0.2:0", nil)
	cfg := testConfig(t, s.Addr, nil)
	cfg.Workers = 4
	start(t, cfg, q)

	// A quiet queue: the first message goes at once.
	began := time.Now()
	enqueue(t, q.recorder, "app@example.test", "Subject: x\r\n\r\nbody\r\n", "a@example.test")
	wantOutcome(t, q.next(t), store.StateDelivered, "250 ")
	if d := time.Since(began); d > 2*time.Second {
		t.Errorf("a lone message took %s to be delivered", d)
	}

	// A stream: one message a millisecond for 300 ms.
	const n = 300
	q.claims.Store(0)
	began = time.Now()
	for range n {
		enqueue(t, q.recorder, "app@example.test", "Subject: x\r\n\r\nbody\r\n", "a@example.test")
		time.Sleep(time.Millisecond)
	}
	for range n {
		wantOutcome(t, q.next(t), store.StateDelivered, "250 ")
	}
	elapsed := time.Since(began)
	claims := q.claims.Load()
	// No claim was full (claimBatch is far above n), so they are spaced.
	if limit := int64(elapsed/claimSpacing) + 2; claims > limit {
		t.Errorf("%d claims for %d messages over %s; want at most %d (one per %s)", claims, n, elapsed.Round(time.Millisecond), limit, claimSpacing)
	}
	t.Logf("%d claims for %d messages over %s", claims, n, elapsed.Round(time.Millisecond))
}
