package api

import (
	"context"
	"sync"
	"time"
)

// A SendEmail request is in memory several times over before the
// submission path takes it (whose own budget, smtpd's max_inflight_bytes,
// then bounds its copy): the body, the decoded message or attachments,
// the message built from them. budget bounds what large requests hold
// together, so that many clients posting large messages at once wait for
// their turn instead of exhausting memory. Requests up to smallBody are
// not counted: they are the common case, and small.
type budget struct {
	mu    sync.Mutex
	free  chan struct{} // closed and replaced whenever room is given back
	used  int64
	limit int64
}

const (
	smallBody = 64 << 10
	// bodyCopies is how many times a request's size is reserved.
	bodyCopies = 3
	// budgetWait is how long a request waits for room before it is
	// answered 503 (the SDKs retry it).
	budgetWait = 30 * time.Second
)

func newBudget(limit int64) *budget { return &budget{limit: limit, free: make(chan struct{})} }

// take reserves n bytes, waiting for room until ctx ends; it returns
// false then. A request larger than the whole budget waits until it is
// alone.
func (b *budget) take(ctx context.Context, n int64) bool {
	for {
		b.mu.Lock()
		if b.used == 0 || b.used+n <= b.limit {
			b.used += n
			b.mu.Unlock()
			return true
		}
		free := b.free
		b.mu.Unlock()
		select {
		case <-free:
		case <-ctx.Done():
			return false
		}
	}
}

// give returns n bytes.
func (b *budget) give(n int64) {
	b.mu.Lock()
	b.used -= n
	close(b.free)
	b.free = make(chan struct{})
	b.mu.Unlock()
}
