package inbound

// What the listener keeps, and when it refuses. Anyone may send to port 25,
// and every message accepted is stored, so what is stored is bounded
// whatever a stranger sends, the way a Postfix operator bounds a queue:
//
//   - the message size (Config.MaxMessageBytes, go-smtp answers 552 5.3.4
//     past it: the same message will not fit later either);
//   - the bytes kept of each message (Config.KeepRawBytes): the start, where
//     the headers and the report parts are; the rest is dropped;
//   - per client address (an IPv4 address, an IPv6 /64), the messages and
//     bytes kept per hour: 450 4.7.1 at MAIL FROM, as Postfix answers a
//     client over its message rate, before the client sends a body (and at
//     the end of DATA if what is kept of the message does not fit after
//     all);
//   - in total, the messages and bytes kept (store.InboundLimit, checked in
//     the transaction that stores, so concurrent sessions cannot pass it
//     together), and a reserve of free disk space the queue keeps for
//     itself: 452 4.3.1 (insufficient system storage).
//
// Every refusal is temporary except the size's. A provider's MTA keeps a
// refused report and tries again for days, so a flood that fills the caps
// delays real reports but loses none, while the operator frees room (sesame
// inbound purge) or retention does; a permanent refusal would make it drop
// them. The stranger's retries are refused at MAIL FROM, before any body.
// The submission listeners share none of these caps.

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-smtp"

	"github.com/sesame-mail/sesame/store"
)

// Limits bound what the listener keeps. Zero values take the defaults
// noted.
type Limits struct {
	KeepRawBytes          int64  // bytes kept of each message; default DefaultKeepRawBytes
	MaxStoredMessages     int    // in all; default DefaultMaxStoredMessages
	MaxStoredBytes        int64  // in all, as store.InboundMessage.StoredBytes counts; default DefaultMaxStoredBytes
	ClientMessagesPerHour int    // per client; 0: not capped
	ClientBytesPerHour    int64  // per client; 0: not capped
	MinFreeBytes          int64  // free space DataDir's file system keeps; 0: no reserve
	DataDir               string // where the store is
}

// Defaults of Config.MaxMessageBytes and of the Limits.
const (
	DefaultMaxMessageBytes   = 1 << 20
	DefaultKeepRawBytes      = 64 << 10
	DefaultMaxStoredMessages = 10000
	DefaultMaxStoredBytes    = 64 << 20
)

func (l *Limits) defaults() {
	if l.KeepRawBytes <= 0 {
		l.KeepRawBytes = DefaultKeepRawBytes
	}
	if l.MaxStoredMessages <= 0 {
		l.MaxStoredMessages = DefaultMaxStoredMessages
	}
	if l.MaxStoredBytes <= 0 {
		l.MaxStoredBytes = DefaultMaxStoredBytes
	}
}

// maxDetailBytes bounds the text kept of what was made of a message: one
// note per recipient of a DSN would otherwise grow with the message.
const maxDetailBytes = 4 << 10

// Reasons for a refusal, as metrics label them.
const (
	refusedTooLarge    = "too_large"    // over MaxMessageBytes: 552 5.3.4
	refusedClientRate  = "client_rate"  // the client's hourly share used: 450 4.7.1
	refusedStorageCap  = "storage_cap"  // MaxStoredMessages or MaxStoredBytes reached: 452 4.3.1
	refusedDiskReserve = "disk_reserve" // less than MinFreeBytes free: 452 4.3.1
	refusedDiskFull    = "disk_full"    // the store found no room: 452 4.3.1
	refusedStoreFailed = "store_failed" // any other store failure: 451 4.3.0
)

var (
	errClientRate = &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 7, 1},
		Message: "Too much mail from your address in the last hour; try again later"}
	errStorageFull = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1},
		Message: "Insufficient system storage for reports; try again later"}
	errStoreFailed = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0},
		Message: "Temporary failure storing the report; try again later"}
)

// admit decides at MAIL FROM whether a transaction from client may start:
// the checks that need no body, so a refused client sends none. size is
// the message size the client declared (SIZE=, RFC 1870), 0 if none: the
// client's allowance and the total must have room for what would be kept
// of such a message, or of the largest when none is declared. (The store
// makes the exact check when the message is stored.)
func (s *Server) admit(ctx context.Context, client netip.Prefix, size int64) error {
	need := s.cfg.Limits.KeepRawBytes
	if size > 0 {
		need = min(size, need)
	}
	if !s.clients.allow(client, need) {
		return s.refuse(refusedClientRate, errClientRate, "client", client)
	}
	if err := s.checkReserve(); err != nil {
		return err
	}
	t, err := s.st.InboundTotals(ctx)
	if err != nil {
		s.log.Error("inbound: reading what is kept failed", "err", err)
		return s.refuse(refusedStoreFailed, errStoreFailed)
	}
	if t.Messages >= s.cfg.Limits.MaxStoredMessages || t.Bytes+need > s.cfg.Limits.MaxStoredBytes {
		return s.refuse(refusedStorageCap, errStorageFull, "messages", t.Messages, "bytes", t.Bytes)
	}
	return nil
}

// checkReserve refuses while the data directory's file system has less
// than MinFreeBytes free.
func (s *Server) checkReserve() error {
	if s.cfg.Limits.MinFreeBytes <= 0 || s.cfg.Limits.DataDir == "" {
		return nil
	}
	free, err := freeBytes(s.cfg.Limits.DataDir)
	if err != nil {
		// The store's own full-disk errors still refuse; an unreadable
		// file system is no reason to refuse reports.
		s.warn("statfs", "inbound: reading the free space failed; taking reports without the reserve", "dir", s.cfg.Limits.DataDir, "err", err)
		return nil
	}
	if free < uint64(s.cfg.Limits.MinFreeBytes) {
		return s.refuse(refusedDiskReserve, errStorageFull, "free_bytes", free, "min_free_bytes", s.cfg.Limits.MinFreeBytes)
	}
	return nil
}

func freeBytes(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return uint64(st.Bavail) * uint64(st.Bsize), nil
}

// refuse counts a refusal and logs it (at most once a minute per reason at
// Warn: a flood would otherwise flood the log too).
func (s *Server) refuse(reason string, reply *smtp.SMTPError, args ...any) error {
	s.metrics.InboundRefused(reason)
	s.warn(reason, "inbound: refused ("+reason+")", append(args, "reply", fmt.Sprintf("%d %d.%d.%d", reply.Code,
		reply.EnhancedCode[0], reply.EnhancedCode[1], reply.EnhancedCode[2]))...)
	return reply
}

// warn logs at Warn the first time in a minute for key, else at Debug.
func (s *Server) warn(key, msg string, args ...any) {
	now := s.cfg.Now()
	s.warnMu.Lock()
	last, seen := s.warned[key]
	loud := !seen || now.Sub(last) >= time.Minute
	if loud {
		s.warned[key] = now
	}
	s.warnMu.Unlock()
	if loud {
		s.log.Warn(msg, args...)
	} else {
		s.log.Debug(msg, args...)
	}
}

// keep cuts m down to what is stored: the first KeepRawBytes of the
// message, and at most maxDetailBytes of its detail.
func (s *Server) keep(m *store.InboundMessage) {
	m.Size = int64(len(m.Raw))
	if int64(len(m.Raw)) > s.cfg.Limits.KeepRawBytes {
		m.Raw = m.Raw[:s.cfg.Limits.KeepRawBytes]
	}
	if len(m.Detail) > maxDetailBytes {
		cut := maxDetailBytes
		for cut > 0 && !utf8.RuneStart(m.Detail[cut]) {
			cut--
		}
		m.Detail = m.Detail[:cut] + " [...]"
	}
}

// store records m (cut down by keep) with its events within the caps, and
// says how the transaction ends.
func (ss *session) store(ctx context.Context, m store.InboundMessage, events []store.Event, sups []store.Suppression) (int64, error) {
	s := ss.s
	kept := m.StoredBytes()
	if !s.clients.take(ss.key, kept) {
		return 0, s.refuse(refusedClientRate, errClientRate, "client", ss.key)
	}
	if err := s.checkReserve(); err != nil {
		s.clients.refund(ss.key, kept)
		return 0, err
	}
	id, err := s.st.RecordInbound(ctx, m, events, sups, store.InboundLimit{Messages: s.cfg.Limits.MaxStoredMessages, Bytes: s.cfg.Limits.MaxStoredBytes})
	if err != nil {
		s.clients.refund(ss.key, kept)
		switch {
		case errors.Is(err, store.ErrInboundFull):
			return 0, s.refuse(refusedStorageCap, errStorageFull, "err", err)
		case store.IsStorageFull(err):
			return 0, s.refuse(refusedDiskFull, errStorageFull, "err", err)
		}
		s.log.Error("inbound: storing a report failed", "err", err)
		s.metrics.InboundRefused(refusedStoreFailed)
		return 0, errStoreFailed
	}
	s.metrics.InboundKept(m.Status, int64(len(m.Raw)) < m.Size)
	return id, nil
}

// clientKey is what the per-client caps count by: the address of an IPv4
// client, the /64 of an IPv6 one (one host's usual share).
func clientKey(ip netip.Addr) netip.Prefix {
	if !ip.IsValid() {
		return netip.Prefix{}
	}
	ip = ip.Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}

// clientLimiter keeps each client's hourly allowance of kept messages and
// bytes as two token buckets, full at the hourly cap and refilled over the
// hour. A client with no bucket has a full one; a bucket that has refilled
// is dropped when the map grows, so the map holds only the clients with
// mail kept within the last hour. A restart forgets the buckets: the total
// caps still hold. Safe for concurrent use.
type clientLimiter struct {
	msgs, bytes float64 // per hour; 0: that dimension is not capped
	now         func() time.Time

	mu      sync.Mutex
	buckets map[netip.Prefix]*allowance
}

// allowance is one client's bucket.
type allowance struct {
	msgs, bytes float64
	at          time.Time
}

// sweepAt is the size at which the map drops the refilled buckets.
const sweepAt = 10000

func newClientLimiter(msgsPerHour int, bytesPerHour int64, now func() time.Time) *clientLimiter {
	return &clientLimiter{msgs: float64(msgsPerHour), bytes: float64(bytesPerHour), now: now, buckets: map[netip.Prefix]*allowance{}}
}

func (l *clientLimiter) off() bool { return l.msgs <= 0 && l.bytes <= 0 }

// refill brings b up to now; it reports whether b is full.
func (l *clientLimiter) refill(b *allowance, now time.Time) bool {
	if h := now.Sub(b.at).Hours(); h > 0 {
		b.msgs = min(l.msgs, b.msgs+h*l.msgs)
		b.bytes = min(l.bytes, b.bytes+h*l.bytes)
		b.at = now
	}
	return b.msgs >= l.msgs && b.bytes >= l.bytes
}

// allow reports whether client has room for a message of n bytes.
func (l *clientLimiter) allow(client netip.Prefix, n int64) bool {
	if l.off() {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[client]
	if b == nil {
		return true
	}
	l.refill(b, l.now())
	return (l.msgs <= 0 || b.msgs >= 1) && (l.bytes <= 0 || b.bytes >= min(float64(n), l.bytes))
}

// take counts a message of n bytes kept from client, if its allowance has
// room for it; a message larger than the hourly bytes needs a full bucket.
func (l *clientLimiter) take(client netip.Prefix, n int64) bool {
	if l.off() {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b := l.buckets[client]
	if b == nil {
		if len(l.buckets) >= sweepAt {
			for k, old := range l.buckets {
				if l.refill(old, now) {
					delete(l.buckets, k)
				}
			}
		}
		b = &allowance{msgs: l.msgs, bytes: l.bytes, at: now}
		l.buckets[client] = b
	}
	l.refill(b, now)
	if (l.msgs > 0 && b.msgs < 1) || (l.bytes > 0 && b.bytes < min(float64(n), l.bytes)) {
		return false
	}
	if l.msgs > 0 {
		b.msgs--
	}
	if l.bytes > 0 {
		b.bytes -= float64(n)
	}
	return true
}

// refund gives back what take counted, for a message not kept after all.
func (l *clientLimiter) refund(client netip.Prefix, n int64) {
	if l.off() {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if b := l.buckets[client]; b != nil {
		if l.msgs > 0 {
			b.msgs = min(l.msgs, b.msgs+1)
		}
		if l.bytes > 0 {
			b.bytes = min(l.bytes, b.bytes+float64(n))
		}
	}
}
