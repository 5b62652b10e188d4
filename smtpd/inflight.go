package smtpd

import (
	"sync"

	"github.com/emersion/go-smtp"
)

// DefaultMaxInflightBytes is the memory budget for messages in flight when
// Config.MaxInflightBytes is 0: a dozen messages of SES's maximum size.
const DefaultMaxInflightBytes = 512 << 20

// errInflight refuses a message that would take the server past its memory
// budget for messages in flight. 452 is RFC 5321's "insufficient system
// storage" and 4.3.1 RFC 3463's "mail system full": temporary, so the
// client keeps the message and tries again, when others have been queued.
var errInflight = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1},
	Message: "Insufficient system resources: too much mail is being received at once; try again later"}

// inflight is the submission service's memory budget for messages: every
// message buffer, from the first byte of DATA (or BDAT) until the message
// is queued or refused, holds a reservation of its capacity, taken as the
// buffer grows. A message that would take the total past max, or its
// client's network (/32, /64, as for failed logins) past a quarter of max,
// is refused with errInflight once its data has been read, and nothing
// else is harmed: without this, a few dozen large uploads (or uploads that
// never end) took gigabytes. Safe for concurrent use.
type inflight struct {
	max, maxPerNetwork int64

	mu    sync.Mutex
	total int64
	nets  map[string]int64
}

// newInflight returns a budget of total bytes, a quarter of it for each
// network; both are raised to the buffer the largest message needs
// (msgBufLimit), so that such a message can always be received alone.
func newInflight(total, maxMessage int64) *inflight {
	need := int64(msgBufLimit(maxMessage))
	return &inflight{max: max(total, need), maxPerNetwork: max(total/4, need), nets: map[string]int64{}}
}

// reserve takes n bytes for network, or reports false when the total or
// the network's share would pass its bound.
func (b *inflight) reserve(network string, n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.total+n > b.max || b.nets[network]+n > b.maxPerNetwork {
		return false
	}
	b.total += n
	b.nets[network] += n
	return true
}

// release gives back n bytes reserved for network.
func (b *inflight) release(network string, n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.total -= n
	if b.nets[network] -= n; b.nets[network] <= 0 {
		delete(b.nets, network)
	}
}

// bytes is the total reserved now.
func (b *inflight) bytes() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.total
}

// InflightBytes is the memory held now by messages being received, signed
// and queued (the in-flight budget's reserved bytes).
func (s *Server) InflightBytes() int64 { return s.inflight.bytes() }

// headroom is the room a message buffer keeps in front of the message for
// the fields Sesame puts above it: Message-ID and Date when missing, the
// DKIM-Signature fields and Received. Written there, they and the message
// are one slice for the signer and the store without copying the message.
// It fits four signatures with the longest h= list (maxHeaderList in
// package dkim); more than that and the message is copied once.
const headroom = 8 << 10

// poolCap is the capacity of a pooled message buffer: the headroom and
// 64 KiB of message, which most mail fits.
const poolCap = headroom + 64<<10

// smallBuffers holds message buffers of poolCap between transactions, so
// that a busy server does not allocate and zero one for every message.
var smallBuffers = sync.Pool{New: func() any { b := make([]byte, 0, poolCap); return &b }}

// msgBuf is the buffer one message is received into and leaves from: the
// same bytes are read into it, checked, signed and handed to the store.
// b[start:] is the message with what has been prepended to it, and
// b[:start] is free room. Its capacity is reserved from the budget as it
// grows and released by free.
type msgBuf struct {
	b       []byte
	start   int
	limit   int // the capacity the largest allowed message needs; 0: none
	budget  *inflight
	network string
	held    int64 // bytes reserved: cap(b)
}

// newMsgBuf returns an empty buffer for a message of at most maxMessage
// bytes (0: no limit) from network, reserving from budget.
func newMsgBuf(budget *inflight, network string, maxMessage int64) *msgBuf {
	return &msgBuf{budget: budget, network: network, limit: msgBufLimit(maxMessage)}
}

// msgBufLimit is the capacity a buffer needs for a message of maxMessage
// bytes (0: no limit, and 0 is returned): the room in front, the message,
// and the room readMessage asks for before the read that finds its end.
func msgBufLimit(maxMessage int64) int {
	if maxMessage <= 0 {
		return 0
	}
	return headroom + int(maxMessage) + readChunk
}

// bytes is the message, with whatever was prepended.
func (m *msgBuf) bytes() []byte { return m.b[m.start:] }

// spare returns room for at least n more bytes of message after the end,
// growing the buffer (doubling, up to what the largest allowed message
// needs) when there is not; errInflight when the budget has no room for
// the larger buffer. Bytes written there are kept by wrote.
func (m *msgBuf) spare(n int) ([]byte, error) {
	if m.b == nil {
		if !m.take(poolCap) {
			return nil, errInflight
		}
		m.b = (*smallBuffers.Get().(*[]byte))[:headroom]
		m.start = headroom
	}
	if cap(m.b)-len(m.b) < n {
		want := len(m.b) + n
		c := max(2*cap(m.b), want)
		if m.limit > 0 {
			c = max(min(c, m.limit), want)
		}
		if !m.take(c) {
			return nil, errInflight
		}
		b := make([]byte, len(m.b), c)
		copy(b[m.start:], m.b[m.start:])
		m.drop(m.b)
		m.b = b
	}
	return m.b[len(m.b) : len(m.b)+n], nil
}

// wrote keeps n bytes written at the start of the last spare.
func (m *msgBuf) wrote(n int) { m.b = m.b[:len(m.b)+n] }

// prepend puts parts in front of the message, in order. They go into the
// room kept in front; only when that is too small is the message copied,
// into a buffer with room enough (errInflight if the budget has none).
func (m *msgBuf) prepend(parts ...[]byte) error {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	if n > m.start {
		size := n + len(m.b) - m.start
		if !m.take(size) {
			return errInflight
		}
		b := make([]byte, size)
		copy(b[n:], m.b[m.start:])
		m.drop(m.b)
		m.b, m.start = b, n
	}
	m.start -= n
	at := m.start
	for _, p := range parts {
		at += copy(m.b[at:], p)
	}
	return nil
}

// take reserves a buffer of capacity c in place of the current one: the
// current one stays reserved until dropped, since both are in memory
// while the message is copied from one to the other.
func (m *msgBuf) take(c int) bool {
	if !m.budget.reserve(m.network, int64(c)) {
		return false
	}
	m.held += int64(c)
	return true
}

// drop releases b, a buffer of m no longer used, and gives it back to the
// pool if it came from there.
func (m *msgBuf) drop(b []byte) {
	c := cap(b)
	m.budget.release(m.network, int64(c))
	m.held -= int64(c)
	if c == poolCap {
		b = b[:0]
		smallBuffers.Put(&b)
	}
}

// free releases the buffer. Nothing may use the message's bytes after it:
// a pooled buffer is soon another message's.
func (m *msgBuf) free() {
	if m.b != nil {
		m.drop(m.b)
		m.b, m.start = nil, 0
	}
}
