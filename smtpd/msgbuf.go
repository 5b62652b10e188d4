package smtpd

import (
	"context"
	"log/slog"
	"os"
	"sync"

	"github.com/sesame-mail/sesame/store"
)

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

// msgBuf is what one message is received into, and where it is signed and
// queued from. A message that fits a pooled buffer stays in it. A larger
// one is written to a spool file as it arrives (the pooled buffer is then
// the file's write buffer), so that a slow or endless upload holds no
// more memory than a small one; load reads it back, once the memory budget
// has room, into one buffer of its exact size. Either way the bytes that
// are checked, signed and stored are that one buffer, never a copy:
// b[start:] is the message with what was prepended to it, and b[:start]
// free room.
type msgBuf struct {
	b       []byte
	start   int
	pooled  bool  // b is from smallBuffers (and not counted in the budget)
	mapped  bool  // b is from allocLarge, for freeLarge
	held    int64 // bytes of the budget reserved for b
	spool   *os.File
	spooled int64 // bytes of the message in spool, before those in b

	full    error  // a spool write's failure for lack of space, for the Queue (storage.go)
	dir     string // where spool files are made ("": os.TempDir)
	budget  *inflight
	network string
	log     *slog.Logger
}

func newMsgBuf(budget *inflight, network, dir string, log *slog.Logger) *msgBuf {
	return &msgBuf{budget: budget, network: network, dir: dir, log: log}
}

// bytes is the message, with whatever was prepended. Only after load is it
// the whole message.
func (m *msgBuf) bytes() []byte { return m.b[m.start:] }

// spare returns room for more of the message, at most readChunk bytes,
// making it by writing what the buffer holds to the spool file when the
// buffer is full. Bytes written there are kept by wrote.
func (m *msgBuf) spare() ([]byte, error) {
	if m.b == nil {
		m.b = (*smallBuffers.Get().(*[]byte))[:headroom]
		m.start, m.pooled = headroom, true
	}
	if len(m.b) == cap(m.b) {
		if err := m.flush(); err != nil {
			return nil, err
		}
	}
	return m.b[len(m.b):min(cap(m.b), len(m.b)+readChunk)], nil
}

// wrote keeps n bytes written at the start of the last spare.
func (m *msgBuf) wrote(n int) { m.b = m.b[:len(m.b)+n] }

// flush writes the bytes in the buffer to the spool file, making the file
// first. The file is unlinked as soon as it is made: it goes away with
// the message, or with the process if that dies.
func (m *msgBuf) flush() error {
	if m.spool == nil {
		f, err := os.CreateTemp(m.dir, "sesame-upload-*")
		if err != nil {
			return m.spoolFailed("making a spool file", err)
		}
		os.Remove(f.Name())
		m.spool = f
	}
	n, err := m.spool.Write(m.b[m.start:])
	m.spooled += int64(n)
	if err != nil {
		return m.spoolFailed("writing to a spool file", err)
	}
	m.b = m.b[:m.start]
	return nil
}

// spoolFailed logs a failure of the spool file and returns the reply for
// it: 452 4.3.1 for a full disk, as when the queue is full (storage.go).
func (m *msgBuf) spoolFailed(doing string, err error) error {
	if store.IsStorageFull(err) {
		m.log.Error(doing+" failed: the disk is full; free space in the data directory (mail is refused with 452 4.3.1 until then)", "err", err)
		m.full = err
		return errNoStorage
	}
	m.log.Error(doing+" failed", "dir", m.dir, "err", err)
	return errStoreFailed
}

// load makes the buffer hold the whole message: a spooled message is read
// into memory once it has its reservation in the budget. The wait ends
// with errInflight when ctx does.
func (m *msgBuf) load(ctx context.Context) error {
	if m.spool == nil {
		return nil
	}
	if err := m.flush(); err != nil {
		return err
	}
	m.drop() // the write buffer is not held while waiting
	size := int64(headroom) + m.spooled
	if err := m.budget.wait(ctx, m.network, size); err != nil {
		return err
	}
	m.b, m.mapped = allocLarge(int(size))
	m.start, m.held = headroom, size
	if _, err := m.spool.ReadAt(m.b[headroom:], 0); err != nil {
		return m.spoolFailed("reading a spool file", err)
	}
	m.spool.Close()
	m.spool = nil
	return nil
}

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
		if !m.budget.reserve(m.network, int64(size)) {
			return errInflight
		}
		b, mapped := allocLarge(size)
		copy(b[n:], m.b[m.start:])
		m.drop()
		m.b, m.mapped, m.start, m.held = b, mapped, n, int64(size)
	}
	m.start -= n
	at := m.start
	for _, p := range parts {
		at += copy(m.b[at:], p)
	}
	return nil
}

// remove takes the bytes [start, end) of the message out, moving what is
// in front of them (the header above them) forward: cheap for a header
// field, the body is not moved. Fields are removed last first, so the
// offsets of those before stay valid.
func (m *msgBuf) remove(start, end int) {
	n := end - start
	copy(m.b[m.start+n:m.start+end], m.b[m.start:m.start+start])
	m.start += n
}

// drop lets go of the buffer: back to the pool, or its reservation back
// to the budget.
func (m *msgBuf) drop() {
	switch {
	case m.pooled:
		b := m.b[:0]
		smallBuffers.Put(&b)
	case m.mapped:
		freeLarge(m.b)
	}
	m.budget.release(m.network, m.held)
	m.b, m.start, m.pooled, m.mapped, m.held = nil, 0, false, false, 0
}

// free releases everything the message holds. Nothing may use its bytes
// after it: a pooled buffer is soon another message's.
func (m *msgBuf) free() {
	if m.spool != nil {
		m.spool.Close()
		m.spool = nil
	}
	m.drop()
}
