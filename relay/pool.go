package relay

import (
	"context"
	"net/netip"
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

// pool keeps open connections between messages, shared by all deliveries:
// the next message to the same server, under the same name and from the
// same source address (session.key), goes over one that is already
// greeted and encrypted, whichever domain it is for. Idle connections count
// in their server's window (window.go), which closes the oldest of them
// when it needs the room for another name.
type pool struct {
	maxIdle int // per key

	mu   sync.Mutex
	idle map[netip.Addr]map[string][]*session // by server IP, then session.key; most recently used last
}

func newPool(maxIdle int) *pool {
	return &pool{maxIdle: maxIdle, idle: map[netip.Addr]map[string][]*session{}}
}

// get returns an idle connection to ip under key, or nil. Connections found
// too old on the way are closed.
func (p *pool) get(ip netip.Addr, key string, now time.Time) *session {
	var found *session
	var stale []*session
	p.mu.Lock()
	list := p.idle[ip][key]
	for len(list) > 0 && found == nil {
		s := list[len(list)-1]
		list = list[:len(list)-1]
		if now.Sub(s.idleSince) < idleTimeout && now.Sub(s.opened) < maxConnectionAge {
			found = s
		} else {
			stale = append(stale, s)
		}
	}
	p.set(ip, key, list)
	p.mu.Unlock()
	for _, s := range stale {
		s.quit()
	}
	return found
}

// set stores the idle list of ip and key; the caller holds mu.
func (p *pool) set(ip netip.Addr, key string, list []*session) {
	byKey := p.idle[ip]
	if len(list) > 0 {
		if byKey == nil {
			byKey = map[string][]*session{}
			p.idle[ip] = byKey
		}
		byKey[key] = list
		return
	}
	delete(byKey, key)
	if len(byKey) == 0 {
		delete(p.idle, ip)
	}
}

// takeOldest removes and returns the connection to ip that has been idle
// longest, under any key, or nil.
func (p *pool) takeOldest(ip netip.Addr) *session {
	p.mu.Lock()
	defer p.mu.Unlock()
	var oldest *session
	for _, list := range p.idle[ip] {
		if s := list[0]; oldest == nil || s.idleSince.Before(oldest.idleSince) {
			oldest = s
		}
	}
	if oldest != nil {
		p.set(ip, oldest.key, p.idle[ip][oldest.key][1:])
	}
	return oldest
}

// put keeps s for the next message, or closes it when the pool is full or
// s is too old.
func (p *pool) put(s *session, now time.Time) {
	if now.Sub(s.opened) >= maxConnectionAge {
		s.quit()
		return
	}
	s.idleSince = now
	ip := s.addr.Addr()
	var evicted *session
	p.mu.Lock()
	list := append(p.idle[ip][s.key], s)
	if len(list) > p.maxIdle {
		evicted, list = list[0], list[1:]
	}
	p.set(ip, s.key, list)
	p.mu.Unlock()
	if evicted != nil {
		evicted.quit()
	}
}

// closeIdleEvery closes connections idle past idleTimeout, every interval,
// and runs each of tick, until ctx ends.
func (p *pool) closeIdleEvery(ctx context.Context, interval time.Duration, tick ...func(time.Time)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			p.mu.Lock()
			var stale []*session
			for ip, byKey := range p.idle {
				for key, list := range byKey {
					kept := list[:0:0]
					for _, s := range list {
						if now.Sub(s.idleSince) >= idleTimeout {
							stale = append(stale, s)
						} else {
							kept = append(kept, s)
						}
					}
					p.set(ip, key, kept)
				}
			}
			p.mu.Unlock()
			for _, s := range stale {
				s.quit()
			}
			for _, f := range tick {
				f(now)
			}
		}
	}
}

// closeAll says QUIT on every idle connection.
func (p *pool) closeAll() {
	p.mu.Lock()
	idle := p.idle
	p.idle = map[netip.Addr]map[string][]*session{}
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, byKey := range idle {
		for _, list := range byKey {
			for _, s := range list {
				wg.Go(s.quit)
			}
		}
	}
	wg.Wait()
}
