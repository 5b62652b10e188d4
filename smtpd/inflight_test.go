package smtpd

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/sesame-mail/sesame/store"
)

func TestInflightReserve(t *testing.T) {
	b := newInflight(1000, 0)
	if !b.reserve("a", 250) || b.reserve("a", 1) {
		t.Fatal("a network may take a quarter of the budget and no more")
	}
	for _, n := range []string{"b", "c", "d"} {
		if !b.reserve(n, 250) {
			t.Fatalf("network %s refused with %d of 1000 reserved", n, b.bytes())
		}
	}
	if b.reserve("e", 1) {
		t.Fatal("reserved past the total")
	}
	b.release("a", 250)
	if !b.reserve("e", 100) || b.bytes() != 850 {
		t.Fatalf("after a release: %d reserved, want 850", b.bytes())
	}
	for _, n := range []string{"b", "c", "d"} {
		b.release(n, 250)
	}
	b.release("e", 100)
	if b.bytes() != 0 || len(b.nets) != 0 {
		t.Fatalf("all released: %d reserved, networks %v", b.bytes(), b.nets)
	}

	// A budget too small for the largest message is raised to fit one.
	b = newInflight(100, 1000)
	if b.max != 1000 || b.maxPerNetwork != 1000 {
		t.Fatalf("budget %d, per network %d; want both 1000", b.max, b.maxPerNetwork)
	}
}

// waitAsync runs b.wait on its own goroutine; its result arrives on the
// channel returned.
func waitAsync(ctx context.Context, b *inflight, network string, n int64) chan error {
	c := make(chan error, 1)
	go func() { c <- b.wait(ctx, network, n) }()
	return c
}

// waitQueued waits until n waiters are in b's line.
func waitQueued(t *testing.T, b *inflight, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		b.mu.Lock()
		got := len(b.waiting)
		b.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d waiting, want %d", got, n)
		}
	}
}

func granted(t *testing.T, c chan error) {
	t.Helper()
	select {
	case err := <-c:
		if err != nil {
			t.Fatalf("wait: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("not granted within 10s")
	}
}

func notYet(t *testing.T, c chan error) {
	t.Helper()
	select {
	case err := <-c:
		t.Fatalf("wait returned %v; want it to wait still", err)
	default:
	}
}

// TestInflightWait: reservations are granted in order of arrival; a large
// one is not passed over by smaller ones; a network at its share lets the
// others go ahead; a wait ends with errInflight when its context does.
func TestInflightWait(t *testing.T) {
	ctx := context.Background()
	b := newInflight(1000, 0)
	for _, n := range []string{"a", "b", "c"} {
		if err := b.wait(ctx, n, 250); err != nil {
			t.Fatal(err)
		}
	}
	granted(t, waitAsync(ctx, b, "d", 200)) // 950 of 1000 taken
	larger := waitAsync(ctx, b, "e", 100)   // 1050: waits
	waitQueued(t, b, 1)
	small := waitAsync(ctx, b, "f", 10) // would fit, but comes after
	waitQueued(t, b, 2)
	if b.reserve("g", 1) {
		t.Fatal("reserve went ahead of those waiting")
	}
	notYet(t, larger)
	notYet(t, small)
	b.release("a", 250)
	granted(t, larger)
	granted(t, small)

	// Network d is at its share (200 of 250): its next waits, and does
	// not hold back network h behind it.
	b.release("b", 250)
	sameNetwork := waitAsync(ctx, b, "d", 100)
	waitQueued(t, b, 1)
	other := waitAsync(ctx, b, "h", 100)
	granted(t, other)
	notYet(t, sameNetwork)
	b.release("d", 200)
	granted(t, sameNetwork)

	// Too long a wait.
	if !b.reserve("k", 250) { // 810 of 1000
		t.Fatal("reserve refused")
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := b.wait(short, "i", 250); err != errInflight {
		t.Fatalf("wait past its context: %v, want %v", err, errInflight)
	}
	if err := b.wait(ctx, "j", 251); err != errInflight {
		t.Fatalf("wait for more than a network's share: %v, want %v", err, errInflight)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.waiting) != 0 {
		t.Fatalf("%d left waiting", len(b.waiting))
	}
}

// TestMsgBufPrepend: the fields put above a message go into the room in
// front of it, and the message stays where it was read.
func TestMsgBufPrepend(t *testing.T) {
	budget := newInflight(1<<30, 0)
	buf := newMsgBuf(budget, "192.0.2.1", t.TempDir(), discardLog)
	msg := "From: a@example.com\r\n\r\n" + strings.Repeat("body line\r\n", 2000)
	if err := readMessage(strings.NewReader(msg), buf, 2000); err != nil {
		t.Fatal(err)
	}
	if err := buf.load(context.Background()); err != nil {
		t.Fatal(err)
	}
	first := &buf.bytes()[0]
	if err := buf.prepend([]byte("Date: now\r\n")); err != nil {
		t.Fatal(err)
	}
	if err := buf.prepend([]byte("Received: x\r\n"), []byte("DKIM-Signature: y\r\n")); err != nil {
		t.Fatal(err)
	}
	want := "Received: x\r\nDKIM-Signature: y\r\nDate: now\r\n" + msg
	got := buf.bytes()
	if string(got) != want {
		t.Fatalf("prepended: %.80q...", got)
	}
	if &got[len(want)-len(msg)] != first {
		t.Fatal("the message was copied to prepend a few fields")
	}

	// More than the room in front: one copy, still right, and reserved.
	big := []byte(strings.Repeat("X-Long: y\r\n", headroom/5))
	if err := buf.prepend(big); err != nil {
		t.Fatal(err)
	}
	if string(buf.bytes()) != string(big)+want {
		t.Fatal("prepend past the headroom lost bytes")
	}
	if budget.bytes() != int64(len(buf.b)) {
		t.Fatalf("reserved %d for a buffer of %d", budget.bytes(), len(buf.b))
	}
	buf.free()
	if budget.bytes() != 0 {
		t.Fatalf("%d bytes still reserved after free", budget.bytes())
	}
}

// TestMsgBufSpool: a message larger than a pooled buffer is written to a
// spool file as it arrives, holding nothing of the budget, and load reads
// it into one buffer of its size, with the room in front, reserved.
func TestMsgBufSpool(t *testing.T) {
	budget := newInflight(64<<20, 0)
	dir := t.TempDir()

	// Up to 64 KiB stays in the pooled buffer.
	buf := newMsgBuf(budget, "192.0.2.1", dir, discardLog)
	fits := "From: a@example.com\r\n\r\n" + strings.Repeat("x", poolCap-headroom-27) + "\r\n"
	if err := readMessage(iotest.HalfReader(strings.NewReader(fits)), buf, 1<<20); err != nil {
		t.Fatal(err)
	}
	if buf.spool != nil || string(buf.bytes()) != fits {
		t.Fatalf("a message of %d bytes was spooled (%v) or changed", len(fits), buf.spool)
	}
	buf.free()

	buf = newMsgBuf(budget, "192.0.2.1", dir, discardLog)
	defer buf.free()
	msg := "From: a@example.com\r\n\r\n" + strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n", 16<<10)
	if err := readMessage(strings.NewReader(msg), buf, 2000); err != nil {
		t.Fatal(err)
	}
	if buf.spool == nil || cap(buf.b) != poolCap || budget.bytes() != 0 {
		t.Fatalf("a %d-byte message: spool %v, buffer of %d, %d bytes of the budget; want a spool file, the pooled buffer and none",
			len(msg), buf.spool, cap(buf.b), budget.bytes())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("the spool file is left in %s: %v", dir, entries)
	}
	if err := buf.load(context.Background()); err != nil {
		t.Fatal(err)
	}
	if string(buf.bytes()) != msg || buf.start != headroom || len(buf.b) != headroom+len(msg) {
		t.Fatalf("loaded %d bytes at %d of %d; want the %d of the message at %d", len(buf.bytes()), buf.start, len(buf.b), len(msg), headroom)
	}
	if budget.bytes() != int64(headroom+len(msg)) {
		t.Fatalf("%d bytes reserved for a loaded message of %d", budget.bytes(), len(msg))
	}
	buf.free()
	if budget.bytes() != 0 {
		t.Fatalf("%d bytes still reserved after free", budget.bytes())
	}
}

var discardLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// countingMetrics counts refusals by reason.
type countingMetrics struct {
	noMetrics
	mu      sync.Mutex
	refused map[string]int
}

func (m *countingMetrics) Submission(accepted bool, reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !accepted {
		m.refused[reason]++
	}
}

// dialFrom connects from the loopback address ip, with STARTTLS, and logs
// in.
func (te *testEnv) dialFrom(t *testing.T, ip string) *smtp.Client {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
	conn, err := d.Dial("tcp", te.starttls)
	if err != nil {
		t.Fatal(err)
	}
	c, err := smtp.NewClientStartTLS(conn, clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Auth(sasl.NewPlainClient("", te.username, te.password)); err != nil {
		t.Fatalf("auth: %v", err)
	}
	return c
}

// startData sends msg's bytes after DATA and leaves the data open: the
// server holds the message in memory until it is finished.
func startData(t *testing.T, c *smtp.Client, msg string) *smtp.DataCommand {
	t.Helper()
	if err := c.Mail("shop@example.com", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("a@example.net", nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(w, msg); err != nil {
		t.Fatal(err)
	}
	return w
}

// waitInflight waits until the server holds want bytes for messages.
func waitInflight(t *testing.T, srv *Server, want int64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for srv.InflightBytes() != want {
		if time.Now().After(deadline) {
			t.Fatalf("in-flight bytes %d, want %d", srv.InflightBytes(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func wantInflightRefusal(t *testing.T, err error) {
	t.Helper()
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 452 || se.EnhancedCode != (smtp.EnhancedCode{4, 3, 1}) {
		t.Fatalf("reply %v, want 452 4.3.1", err)
	}
}

// gatedQueue holds every Enqueue until open is closed: the messages being
// queued keep their memory meanwhile.
type gatedQueue struct {
	*store.SQLite
	open chan struct{}
}

func (q *gatedQueue) Enqueue(ctx context.Context, m *store.Message) error {
	<-q.open
	return q.SQLite.Enqueue(ctx, m)
}

// TestInflightBudget: large messages take their memory only from the end
// of their data until they are queued, within the budget and a network's
// share of it; those that find no room wait for it, in turn, and all are
// queued.
func TestInflightBudget(t *testing.T) {
	m := &countingMetrics{refused: map[string]int{}}
	gate := make(chan struct{})
	te := newTestEnvDeps(t, func(c *Config) {
		c.MaxMessageBytes = 256 << 10
		c.MaxInflightBytes = 1 << 20 // 256 KiB a network
	}, func(d *Deps) {
		d.Metrics = m
		d.Queue = &gatedQueue{SQLite: d.Queue.(*store.SQLite), open: gate}
	})
	msg := message("shop@example.com", "a@example.net", "Large", strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\r\n", 200<<10/66))
	// What a message holds from the end of its data until it is queued:
	// itself, the room in front, and the Message-ID and Date added.
	var each int64

	// Finishes msg from ip on a connection of its own; the reply arrives
	// on the channel returned.
	finish := func(ip string) chan error {
		w := startData(t, te.dialFrom(t, ip), msg)
		c := make(chan error, 1)
		go func() {
			_, err := w.CloseWithResponse()
			c <- err
		}()
		return c
	}
	var replies []chan error
	replies = append(replies, finish("127.0.0.1"))
	for deadline := time.Now().Add(20 * time.Second); te.srv.InflightBytes() == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first message took no memory")
		}
	}
	each = te.srv.InflightBytes()
	if each < int64(len(msg)+headroom) || each > int64(len(msg)+headroom+200) {
		t.Fatalf("a message of %d bytes holds %d", len(msg), each)
	}
	// The same network's next waits for its share; the next three
	// networks' go ahead, up to the total; a fifth network's waits.
	replies = append(replies, finish("127.0.0.1"))
	for _, ip := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
		replies = append(replies, finish(ip))
	}
	waitInflight(t, te.srv, 4*each)
	replies = append(replies, finish("127.0.0.5"))
	waitQueued(t, te.srv.inflight, 2)
	if got := te.srv.InflightBytes(); got != 4*each {
		t.Fatalf("%d bytes taken with 2 waiting; want 4 messages' %d", got, 4*each)
	}

	close(gate)
	for i, c := range replies {
		select {
		case err := <-c:
			if err != nil {
				t.Errorf("message %d: %v", i, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("message %d: no reply within 30s", i)
		}
	}
	waitInflight(t, te.srv, 0)
	entries, err := te.st.QueueMessages(context.Background())
	if err != nil || len(entries) != len(replies) {
		t.Fatalf("queued %d messages (%v), want %d", len(entries), err, len(replies))
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.refused) != 0 {
		t.Fatalf("refusals: %v", m.refused)
	}
}

// TestInflightNeverFits: a message that could never fit in a network's
// share of the budget is refused with 452 4.3.1 at the end of its data,
// and the connection goes on.
func TestInflightNeverFits(t *testing.T) {
	m := &countingMetrics{refused: map[string]int{}}
	te := newTestEnvDeps(t, func(c *Config) {
		c.MaxMessageBytes = 0 // no limit: only the budget stops it
		c.MaxInflightBytes = 512 << 10
	}, func(d *Deps) { d.Metrics = m })
	c := te.dial(t, te.username, te.password)
	large := message("shop@example.com", "a@example.net", "Large", strings.Repeat("0123456789abcdef\r\n", 200<<10/18))
	_, err := send(c, "shop@example.com", []string{"a@example.net"}, large)
	wantInflightRefusal(t, err)
	small := message("shop@example.com", "a@example.net", "Small", "Hello\r\n")
	if _, err := send(c, "shop@example.com", []string{"a@example.net"}, small); err != nil {
		t.Fatalf("the next message on the connection: %v", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.refused[reasonInflight] != 1 {
		t.Fatalf("refusals counted %v, want 1 %s", m.refused, reasonInflight)
	}
}

// TestLargeMessageInMemoryOnce: a message is in memory once on its way
// from the socket to the store. It used to be read into a buffer grown by
// doubling and then copied twice more (to complete its header, and to put
// the signature and Received field on top): large allocations of six
// times the message per transaction. Now it is one buffer of its size,
// mapped outside the Go heap where the system allows (bigbuf_unix.go).
func TestLargeMessageInMemoryOnce(t *testing.T) {
	const size = 4 << 20
	te := newTestEnv(t, func(c *Config) { c.MaxMessageBytes = 8 << 20 })
	c := te.dial(t, te.username, te.password)
	line := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\r\n"
	msg := []byte("From: shop@example.com\r\nTo: a@example.net\r\nSubject: large\r\n\r\n" + strings.Repeat(line, size/len(line)))
	sendBytes := func() {
		t.Helper()
		w := startData(t, c, "")
		if _, err := w.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := w.CloseWithResponse(); err != nil {
			t.Fatal(err)
		}
	}
	sendBytes() // the first one fills the caches
	before := largeAllocated()
	sendBytes()
	allocated := largeAllocated() - before
	t.Logf("one transaction of a %d-byte message: %d bytes in large allocations (%.2f times the message)",
		len(msg), allocated, float64(allocated)/float64(len(msg)))
	allowed := uint64(len(msg)) / 2 // any copy of the message is more
	if b, mapped := allocLarge(4096); !mapped {
		allowed += uint64(len(msg)) // the buffer is on the heap here
	} else {
		freeLarge(b)
	}
	if allocated > allowed {
		t.Fatalf("one transaction of a %d-byte message made %d bytes of large allocations: the message is copied", len(msg), allocated)
	}
}

// largeAllocated is how many bytes the process has allocated in objects
// larger than the largest size class (32 KiB) so far: copies of a message,
// not the small buffers of streaming code (go-msgauth's canonicalizer
// allocates as much as the message in 4 KiB pieces while hashing it).
func largeAllocated() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	small := uint64(0)
	for _, c := range m.BySize {
		small += c.Mallocs * uint64(c.Size)
	}
	return m.TotalAlloc - small
}
