// Package delayline imitates the latency of a network link on a local
// connection: what one side writes reaches the other a fixed time later.
//
// A Conn queues each write with the time it is due and returns at once; one
// goroutine per connection hands the bytes to the real connection when they
// are due, in order. Writes made close together therefore arrive close
// together, a latency later: the replies to a pipelined group of SMTP
// commands overlap in flight as on a real link, where a sleep before each
// write would serialize them and charge a round trip per reply. Reads are
// not delayed, so wrapping the server's side of a connection makes every
// exchange cost one round trip of the given latency.
//
// It is for benchmarks and tests on loopback; nothing in the mail path uses
// it.
package delayline

import (
	"errors"
	"net"
	"sync"
	"time"
)

// maxQueued bounds the writes in flight on one connection: a writer that
// gets that far ahead of the link waits, as on a full socket buffer.
const maxQueued = 256

// chunk is one write on its way.
type chunk struct {
	data []byte
	due  time.Time
}

// Conn is a net.Conn whose writes arrive Latency after they are made.
type Conn struct {
	net.Conn
	latency time.Duration

	queue chan chunk
	// drained is closed when the sender has written or dropped everything
	// queued and closed the connection.
	drained chan struct{}

	mu     sync.Mutex
	closed bool
	err    error // the first error of a delayed write, returned by later writes
}

// Wrap returns c with its writes delayed by latency. A latency of zero or
// less returns c itself.
func Wrap(c net.Conn, latency time.Duration) net.Conn {
	if latency <= 0 {
		return c
	}
	d := &Conn{Conn: c, latency: latency, queue: make(chan chunk, maxQueued), drained: make(chan struct{})}
	go d.send()
	return d
}

// errClosed is returned by a write after Close.
var errClosed = errors.New("delayline: write on a closed connection")

// Write queues a copy of p to be written when the latency has passed, and
// returns at once unless maxQueued writes are already on their way. An error
// of an earlier delayed write is returned here.
func (d *Conn) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return 0, errClosed
	}
	if d.err != nil {
		return 0, d.err
	}
	d.queue <- chunk{data: append([]byte(nil), p...), due: time.Now().Add(d.latency)}
	return len(p), nil
}

// send writes each chunk when it is due, then closes the connection once
// Close has been called and everything before it was sent.
func (d *Conn) send() {
	defer close(d.drained)
	defer d.Conn.Close()
	t := time.NewTimer(0)
	defer t.Stop()
	for c := range d.queue {
		if wait := time.Until(c.due); wait > 0 {
			t.Reset(wait)
			<-t.C
		}
		if _, err := d.Conn.Write(c.data); err != nil {
			d.mu.Lock()
			if d.err == nil {
				d.err = err
			}
			d.mu.Unlock()
			// Drop the rest: the peer is gone.
			for range d.queue {
			}
			return
		}
	}
}

// Close lets the bytes already written arrive, as a closed socket still
// delivers what it sent, then closes the connection. It returns at once.
func (d *Conn) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	close(d.queue)
	// A peer that stopped reading must not keep the sender, and so the
	// connection, forever.
	d.Conn.SetWriteDeadline(time.Now().Add(d.latency + closeGrace))
	return nil
}

// closeGrace is how long after its latency a closed connection's last
// bytes may take to be written.
const closeGrace = 10 * time.Second

// Unwrap returns the underlying connection.
func (d *Conn) Unwrap() net.Conn { return d.Conn }

// Listener wraps every connection it accepts with Wrap.
type Listener struct {
	net.Listener
	Latency time.Duration
}

// Accept waits for the next connection and returns it delayed.
func (l Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return Wrap(c, l.Latency), nil
}
