package relay

import (
	"context"
	"sync"
	"time"
)

const (
	// idleTimeout is how long an open connection waits for the next message.
	idleTimeout = 30 * time.Second
	// maxConnectionAge bounds how long one connection is reused, so a
	// server's changed DNS or configuration is picked up.
	maxConnectionAge = 5 * time.Minute
)

// pool keeps open connections between messages, shared by all workers:
// the next message to the same server goes over one that is already greeted
// and encrypted.
type pool struct {
	maxIdle int // per server

	mu   sync.Mutex
	idle map[string][]*session // by session.key, most recently used last
}

func newPool(maxIdle int) *pool {
	return &pool{maxIdle: maxIdle, idle: map[string][]*session{}}
}

// get returns an idle connection to key, or nil. Connections found too old
// on the way are closed.
func (p *pool) get(key string, now time.Time) *session {
	var found *session
	var stale []*session
	p.mu.Lock()
	list := p.idle[key]
	for len(list) > 0 && found == nil {
		s := list[len(list)-1]
		list = list[:len(list)-1]
		if now.Sub(s.idleSince) < idleTimeout && now.Sub(s.opened) < maxConnectionAge {
			found = s
		} else {
			stale = append(stale, s)
		}
	}
	if len(list) == 0 {
		delete(p.idle, key)
	} else {
		p.idle[key] = list
	}
	p.mu.Unlock()
	for _, s := range stale {
		s.quit()
	}
	return found
}

// put keeps s for the next message, or closes it when the pool is full or
// s is too old.
func (p *pool) put(s *session, now time.Time) {
	if now.Sub(s.opened) >= maxConnectionAge {
		s.quit()
		return
	}
	s.idleSince = now
	var evicted *session
	p.mu.Lock()
	list := append(p.idle[s.key], s)
	if len(list) > p.maxIdle {
		evicted, list = list[0], list[1:]
	}
	p.idle[s.key] = list
	p.mu.Unlock()
	if evicted != nil {
		evicted.quit()
	}
}

// closeIdleEvery closes connections idle past idleTimeout, every interval,
// until ctx ends.
func (p *pool) closeIdleEvery(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			p.mu.Lock()
			var stale []*session
			for key, list := range p.idle {
				kept := list[:0]
				for _, s := range list {
					if now.Sub(s.idleSince) >= idleTimeout {
						stale = append(stale, s)
					} else {
						kept = append(kept, s)
					}
				}
				if len(kept) == 0 {
					delete(p.idle, key)
				} else {
					p.idle[key] = kept
				}
			}
			p.mu.Unlock()
			for _, s := range stale {
				s.quit()
			}
		}
	}
}

// closeAll says QUIT on every idle connection.
func (p *pool) closeAll() {
	p.mu.Lock()
	idle := p.idle
	p.idle = map[string][]*session{}
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, list := range idle {
		for _, s := range list {
			wg.Go(s.quit)
		}
	}
	wg.Wait()
}
