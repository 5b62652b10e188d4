package relay

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// Concurrency per receiving server: a window of connections open at once to
// one IP address (busy, or idle in the pool), shared by every domain whose
// mail exchanger is there, so the 500 domains behind one provider's MX are
// one destination, not 500. Like Postfix's destination concurrency feedback
// and KumoMTA's traffic shaping, a window starts small
// (InitialDestinationConcurrency) and grows while deliveries go well, up to
// DestinationConcurrency, and halves at a connection failure, a timeout or
// a temporary refusal (421, or 4xx to the whole transaction). It grows as
// TCP's congestion window does: by one for each delivery that goes well
// (doubling each round) until its first failure, then by one for each
// window's worth, below the half it fell from. A server that receives
// thirty messages in a run reaches a useful window within it; one that has
// shown its limit is approached slowly. A server that keeps failing at a window of one is left
// alone for a while: its mail is deferred at once rather than queued behind
// connection timeouts. The smarthost's window is fixed
// (SmarthostConcurrency): it is the operator's own server.
//
// Warm-up and provider limits (shaping.go) are applied before a window is
// asked: they decide what may be sent at all, a window only how much at
// once.

const (
	defaultInitialDestinationConcurrency = 5
	defaultDestinationConcurrency        = 20
	defaultSmarthostConcurrency          = 32

	// downAfter failures in a row at a window of one mark a server down.
	downAfter = 3
	// windowForget is how long an unused window is kept: a server seen
	// again within it starts where it left off.
	windowForget = time.Hour
)

// windows holds the window of every server. It is safe for concurrent use.
type windows struct {
	initial, limit float64
	fixed          bool          // no feedback (the smarthost)
	downFor        time.Duration // how long a server that keeps failing is left alone
	idle           *pool         // idle connections, closed to make room for another name
	now            func() time.Time

	mu     sync.Mutex
	byAddr map[netip.Addr]*window
}

// window is one server's state.
type window struct {
	limit     float64 // connections allowed at once; the integer part counts
	threshold float64 // above it the window grows slowly (TCP's ssthresh)
	open      int     // connections open, busy or idle
	wake      chan struct{}
	failures  int // in a row
	downUntil time.Time
	used      time.Time
}

func newWindows(initial, limit int, fixed bool, downFor time.Duration, idle *pool, now func() time.Time) *windows {
	if fixed {
		initial = limit
	}
	return &windows{initial: float64(min(initial, limit)), limit: float64(limit), fixed: fixed, downFor: downFor,
		idle: idle, now: now, byAddr: map[netip.Addr]*window{}}
}

// get returns ip's window, making it; the caller holds mu.
func (ws *windows) get(ip netip.Addr) *window {
	w := ws.byAddr[ip]
	if w == nil {
		w = &window{limit: ws.initial, threshold: ws.limit, wake: make(chan struct{})}
		ws.byAddr[ip] = w
	}
	w.used = ws.now()
	return w
}

// serverDown is acquire's error for a server left alone after failures.
type serverDown struct {
	ip    netip.Addr
	until time.Time
}

func (e *serverDown) Error() string {
	return fmt.Sprintf("%s failed %d times in a row; not tried again before %s", e.ip, downAfter, e.until.UTC().Format(time.TimeOnly))
}

// acquire waits until a connection to addr under key may be used: it
// returns an idle one from the pool (it already counts in the window), or
// nil once there is room for a new one, which now counts; the caller then
// connects, and the session's release (or release, if connecting fails)
// gives the room back. While the window is full, an idle connection to the
// same server under another name (another domain's MX host name) is
// closed to make room. The error is ctx's, or *serverDown.
func (ws *windows) acquire(ctx context.Context, addr netip.AddrPort, key string) (*session, error) {
	ip := addr.Addr()
	for {
		if s := ws.idle.get(ip, key, ws.now()); s != nil {
			return s, nil
		}
		ws.mu.Lock()
		w := ws.get(ip)
		if now := ws.now(); now.Before(w.downUntil) {
			ws.mu.Unlock()
			return nil, &serverDown{ip: ip, until: w.downUntil}
		}
		if w.open < max(int(w.limit), 1) {
			w.open++
			ws.mu.Unlock()
			return nil, nil
		}
		wake := w.wake
		ws.mu.Unlock()
		if s := ws.idle.takeOldest(ip); s != nil {
			if s.key == key {
				return s, nil // pooled since we looked: just what we want
			}
			s.quit() // its release makes the room; another may take it first
			continue
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// release gives back the room of a connection to ip that was closed, or
// never opened.
func (ws *windows) release(ip netip.Addr) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w := ws.get(ip)
	w.open--
	ws.signal(w)
}

// pooled tells the deliveries waiting for ip that an idle connection is
// there, to reuse or close.
func (ws *windows) pooled(ip netip.Addr) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	ws.signal(ws.get(ip))
}

// signal wakes everyone waiting on w; the caller holds mu.
func (ws *windows) signal(w *window) {
	close(w.wake)
	w.wake = make(chan struct{})
}

// over reports whether ip has more connections open than its window now
// allows: one that is done should be closed, not kept.
func (ws *windows) over(ip netip.Addr) bool {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w := ws.get(ip)
	return w.open > max(int(w.limit), 1)
}

// succeeded grows ip's window after a transaction that went well: by one
// below its threshold, by one for every window's worth above it.
func (ws *windows) succeeded(ip netip.Addr) {
	if ws.fixed {
		return
	}
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w := ws.get(ip)
	w.failures = 0
	before := int(w.limit)
	if w.limit < w.threshold {
		w.limit = min(w.limit+1, ws.limit)
	} else {
		w.limit = min(w.limit+1/w.limit, ws.limit)
	}
	if int(w.limit) > before {
		ws.signal(w)
	}
}

// failed halves ip's window; after downAfter failures in a row at a window
// of one, the server is left alone for downFor.
func (ws *windows) failed(ip netip.Addr) {
	if ws.fixed {
		return
	}
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w := ws.get(ip)
	if w.limit <= 1 {
		w.failures++
	}
	w.limit = max(w.limit/2, 1)
	w.threshold = w.limit
	if w.failures >= downAfter && ws.downFor > 0 {
		w.downUntil = ws.now().Add(ws.downFor)
		w.failures = 0
	}
	ws.signal(w) // whoever waits must see the news
}

// size is ip's window now (for tests and logs).
func (ws *windows) size(ip netip.Addr) int {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return max(int(ws.get(ip).limit), 1)
}

// forget drops the windows unused since windowForget.
func (ws *windows) forget(now time.Time) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for ip, w := range ws.byAddr {
		if w.open == 0 && now.Sub(w.used) > windowForget && !now.Before(w.downUntil) {
			delete(ws.byAddr, ip)
		}
	}
}

// servers remembers the server each domain's mail last went to, for the
// dispatcher (serversOf). It is safe for concurrent use.
type servers struct {
	mu       sync.Mutex
	byDomain map[string]string
}

// maxServersKept bounds the domains remembered; past it the memory starts
// over, at the cost of counting some domains against no server for a while.
const maxServersKept = 100000

func newServers() *servers { return &servers{byDomain: map[string]string{}} }

func (s *servers) learn(domain string, ip netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.byDomain[domain]; !ok && len(s.byDomain) >= maxServersKept {
		clear(s.byDomain)
	}
	s.byDomain[domain] = ip.String()
}

func (s *servers) of(domain string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ip, ok := s.byDomain[domain]
	return ip, ok
}
