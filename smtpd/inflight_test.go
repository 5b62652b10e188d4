package smtpd

import (
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
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
	if need := int64(msgBufLimit(1000)); b.max != need || b.maxPerNetwork != need {
		t.Fatalf("budget %d, per network %d; want both %d", b.max, b.maxPerNetwork, need)
	}
}

// TestMsgBufPrepend: the fields put above a message go into the room in
// front of it, and the message stays where it was read.
func TestMsgBufPrepend(t *testing.T) {
	budget := newInflight(1<<30, 0)
	buf := newMsgBuf(budget, "192.0.2.1", 0)
	msg := "From: a@example.com\r\n\r\n" + strings.Repeat("body line\r\n", 20000)
	if err := readMessage(strings.NewReader(msg), buf, 2000); err != nil {
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
	if budget.bytes() != int64(cap(buf.b)) {
		t.Fatalf("reserved %d for a buffer of %d", budget.bytes(), cap(buf.b))
	}

	// More than the room in front: one copy, still right, still reserved.
	big := []byte(strings.Repeat("X-Long: y\r\n", headroom/5))
	if err := buf.prepend(big); err != nil {
		t.Fatal(err)
	}
	if string(buf.bytes()) != string(big)+want {
		t.Fatal("prepend past the headroom lost bytes")
	}
	if budget.bytes() != int64(cap(buf.b)) {
		t.Fatalf("reserved %d for a buffer of %d", budget.bytes(), cap(buf.b))
	}
	buf.free()
	if budget.bytes() != 0 {
		t.Fatalf("%d bytes still reserved after free", budget.bytes())
	}
}

// TestMsgBufGrowth: a message grows its buffer within its limit, and a
// budget too small for the next size refuses it with 452 4.3.1.
func TestMsgBufGrowth(t *testing.T) {
	const maxMessage = 1 << 20
	budget := newInflight(1<<30, maxMessage)
	buf := newMsgBuf(budget, "192.0.2.1", maxMessage)
	msg := strings.Repeat("x", maxMessage-2) + "\r\n"
	if err := readMessage(strings.NewReader(msg), buf, 2000); err != nil {
		t.Fatal(err)
	}
	if string(buf.bytes()) != msg || cap(buf.b) > msgBufLimit(maxMessage) {
		t.Fatalf("read %d bytes into a buffer of %d (limit %d)", len(buf.bytes()), cap(buf.b), msgBufLimit(maxMessage))
	}
	buf.free()

	budget = newInflight(8*poolCap, 0)         // 2*poolCap a network
	if !budget.reserve("192.0.2.1", poolCap) { // another message of the same network
		t.Fatal("reserve refused")
	}
	buf = newMsgBuf(budget, "192.0.2.1", 0)
	err := readMessage(strings.NewReader(msg), buf, 2000)
	if err != errInflight {
		t.Fatalf("err = %v, want %v", err, errInflight)
	}
	buf.free()
	if budget.bytes() != poolCap {
		t.Fatalf("%d bytes reserved after a refusal, want the other message's %d", budget.bytes(), poolCap)
	}
}

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

// TestInflightBudget: uploads held open take their share of the budget; a
// message past one network's quarter, or past the total, is refused with
// 452 4.3.1 at the end of its data, the connection goes on, and others are
// not harmed.
func TestInflightBudget(t *testing.T) {
	m := &countingMetrics{refused: map[string]int{}}
	// A message of 90 KiB grows its buffer from poolCap (72 KiB) to
	// 2*poolCap and no further; while it grows it holds both.
	const held = 2 * poolCap
	te := newTestEnvDeps(t, func(c *Config) {
		c.MaxMessageBytes = 128 << 10
		c.MaxInflightBytes = 7*held + poolCap // room for 7 held and the growth of the 7th; 270 KiB a network
	}, func(d *Deps) { d.Metrics = m })
	msg := message("shop@example.com", "a@example.net", "Large", strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\r\n", 90<<10/66))

	first := startData(t, te.dialFrom(t, "127.0.0.1"), msg)
	waitInflight(t, te.srv, held)

	// Another of the same network would need 216 KiB more: past its 270.
	// It is refused at the end of its data, and while that is read the
	// part received holds nothing.
	refused := startData(t, te.dialFrom(t, "127.0.0.1"), msg[:20<<10])
	waitInflight(t, te.srv, held+poolCap)
	if _, err := io.WriteString(refused, msg[20<<10:]); err != nil {
		t.Fatal(err)
	}
	waitInflight(t, te.srv, held)
	_, err := refused.CloseWithResponse()
	wantInflightRefusal(t, err)

	// Six more networks fill the total to 7*held.
	var open []*smtp.DataCommand
	for _, ip := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7"} {
		open = append(open, startData(t, te.dialFrom(t, ip), msg))
	}
	waitInflight(t, te.srv, 7*held)

	// An eighth network's message cannot grow past poolCap now...
	late := te.dialFrom(t, "127.0.0.8")
	_, err = send(late, "shop@example.com", []string{"a@example.net"}, msg)
	wantInflightRefusal(t, err)

	// ...until a message held is queued; on the same connection then.
	if _, err := first.CloseWithResponse(); err != nil {
		t.Fatalf("the first message: %v", err)
	}
	waitInflight(t, te.srv, 6*held)
	if _, err := send(late, "shop@example.com", []string{"a@example.net"}, msg); err != nil {
		t.Fatalf("after room was made: %v", err)
	}
	for _, w := range open {
		if _, err := w.CloseWithResponse(); err != nil {
			t.Fatalf("a message held: %v", err)
		}
	}
	waitInflight(t, te.srv, 0)
	entries, err := te.st.QueueMessages(context.Background())
	if err != nil || len(entries) != 8 {
		t.Fatalf("queued %d messages (%v), want 8", len(entries), err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.refused[reasonInflight] != 2 {
		t.Fatalf("refusals counted %v, want 2 %s", m.refused, reasonInflight)
	}
}

// TestLargeMessageInMemoryOnce: a message is not copied on its way from
// the socket to the store. Completing the header (Date, Message-ID),
// signing and the Received field used to copy the whole message twice
// more after reading it (besides the growth of the buffer it was read
// into), so that a transaction made large allocations of about four times
// the message; now only the buffer's growth, about twice.
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
	if allocated > 3*uint64(len(msg)) {
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
