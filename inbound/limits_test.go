package inbound

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sesame-mail/sesame/store"
	"github.com/sesame-mail/sesame/verp"
)

// testClock is a clock the test moves; it never reads the wall clock.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// counts records what the listener counts.
type counts struct {
	mu        sync.Mutex
	kept      map[string]int
	truncated int
	refused   map[string]int
}

func (c *counts) InboundKept(status string, truncated bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.kept[status]++
	if truncated {
		c.truncated++
	}
}

func (c *counts) InboundRefused(reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.refused[reason]++
}

// InboundReport and the connection counts are not counted here: these
// tests are about what is kept.
func (c *counts) InboundReport(string, string, int, time.Duration) {}
func (c *counts) ConnRefused(string, string)                       {}
func (c *counts) ConnShed(string)                                  {}
func (c *counts) AcceptError(string)                               {}

func (c *counts) refusedFor(reason string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.refused[reason]
}

type testListener struct {
	addr    string
	st      *store.SQLite
	clock   *testClock
	metrics *counts
}

// startListener runs an inbound listener on 127.0.0.1 with a real store.
func startListener(t *testing.T, cfg Config) *testListener {
	t.Helper()
	dir := t.TempDir()
	st, err := store.OpenSQLite(filepath.Join(dir, "sesame.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	key, err := verp.LoadKey(filepath.Join(dir, "verp.key"))
	if err != nil {
		t.Fatal(err)
	}
	l := &testListener{st: st, clock: &testClock{now: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)},
		metrics: &counts{kept: map[string]int{}, refused: map[string]int{}}}
	cfg.Listen = []string{"127.0.0.1:0"}
	cfg.Hostname = "inbound.test"
	cfg.FeedbackAddresses = []string{"fbl@example.com"}
	cfg.Now = l.clock.Now
	cfg.Metrics = l.metrics
	cfg.Logger = slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if cfg.Limits.DataDir == "" {
		cfg.Limits.DataDir = dir
	}
	srv := New(cfg, st, verp.New(key, "bounce"))
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	l.addr = srv.lns[0].Addr().String()
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	})
	return l
}

// testLog writes the listener's log to the test's.
type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// junk is an unparseable message of about size bytes.
func junk(size int) []byte {
	var b bytes.Buffer
	b.WriteString("From: stranger@example.org\r\nSubject: not a report\r\n\r\n")
	for b.Len() < size {
		b.WriteString(strings.Repeat("junk ", 15) + "\r\n")
	}
	return b.Bytes()
}

// send delivers msg to the feedback address from the local address ip,
// declaring its size as MTAs do (SIZE=, RFC 1870), and returns the error of
// the first command refused (nil when accepted).
func (l *testListener) send(t *testing.T, ip string, msg []byte) error {
	t.Helper()
	return l.sendDeclaring(t, ip, msg, int64(len(msg)))
}

// sendDeclaring is send with the size declared at MAIL FROM (0: none).
func (l *testListener) sendDeclaring(t *testing.T, ip string, msg []byte, size int64) error {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
	conn, err := d.Dial("tcp", l.addr)
	if err != nil {
		t.Fatal(err)
	}
	c := smtp.NewClient(conn)
	c.CommandTimeout, c.SubmissionTimeout = 30*time.Second, 30*time.Second
	defer c.Close()
	if err := c.Hello("mx.provider.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("", &smtp.MailOptions{Size: size}); err != nil {
		return err
	}
	if err := c.Rcpt("fbl@example.com", nil); err != nil {
		t.Fatalf("RCPT: %v", err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write(msg)
	return w.Close()
}

func wantReply(t *testing.T, what string, err error, code int, enh smtp.EnhancedCode) {
	t.Helper()
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != code || se.EnhancedCode != enh {
		t.Fatalf("%s: %v, want %d %d.%d.%d", what, err, code, enh[0], enh[1], enh[2])
	}
}

func (l *testListener) totals(t *testing.T) store.InboundTotals {
	t.Helper()
	got, err := l.st.InboundTotals(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// A client past its hourly message count is refused at MAIL FROM with a
// temporary reply; other clients are not, and the allowance comes back
// over the hour.
func TestClientMessageCap(t *testing.T) {
	l := startListener(t, Config{Limits: Limits{ClientMessagesPerHour: 3}})
	for n := range 3 {
		if err := l.send(t, "127.0.0.1", junk(500)); err != nil {
			t.Fatalf("message %d of 3: %v", n+1, err)
		}
	}
	wantReply(t, "a 4th message within the hour", l.send(t, "127.0.0.1", junk(500)), 450, smtp.EnhancedCode{4, 7, 1})
	if err := l.send(t, "127.0.0.2", junk(500)); err != nil {
		t.Fatalf("another client: %v", err)
	}
	l.clock.advance(20 * time.Minute) // a third of the hour: one message
	if err := l.send(t, "127.0.0.1", junk(500)); err != nil {
		t.Fatalf("20 minutes later: %v", err)
	}
	wantReply(t, "a second message 20 minutes later", l.send(t, "127.0.0.1", junk(500)), 450, smtp.EnhancedCode{4, 7, 1})
	if got := l.totals(t); got.Messages != 5 {
		t.Errorf("%d messages kept, want 5", got.Messages)
	}
	if n := l.metrics.refusedFor(refusedClientRate); n != 2 {
		t.Errorf("%d client_rate refusals counted, want 2", n)
	}
	if n := l.metrics.kept[store.InboundUnparsed]; n != 5 {
		t.Errorf("%d unparsed messages counted, want 5", n)
	}
}

// The bytes a client may have kept per hour are counted after the cut:
// large messages use the allowance by what is kept of them.
func TestClientBytesCap(t *testing.T) {
	l := startListener(t, Config{Limits: Limits{KeepRawBytes: 4096, ClientBytesPerHour: 10000}})
	for n := range 2 {
		if err := l.send(t, "127.0.0.1", junk(200<<10)); err != nil {
			t.Fatalf("message %d: %v", n+1, err)
		}
	}
	// About 1.7 KiB of the 10,000 bytes are left: a large message no
	// longer fits (refused at MAIL FROM, by its declared SIZE), a small
	// one does.
	wantReply(t, "a third 4 KiB cut", l.send(t, "127.0.0.1", junk(200<<10)), 450, smtp.EnhancedCode{4, 7, 1})
	if err := l.send(t, "127.0.0.1", junk(1000)); err != nil {
		t.Fatalf("a small message within what is left: %v", err)
	}
	wantReply(t, "once the bytes are used", l.send(t, "127.0.0.1", junk(1000)), 450, smtp.EnhancedCode{4, 7, 1})
	if n := l.metrics.refusedFor(refusedClientRate); n != 2 {
		t.Errorf("%d client_rate refusals counted, want 2", n)
	}
	if got := l.totals(t); got.Messages != 3 || got.Bytes > 10000 {
		t.Errorf("kept %+v, want 3 messages within 10000 bytes", got)
	}
}

// What is kept in all stays within its caps whoever sends it: past them,
// 452 4.3.1 at MAIL FROM, and mail is taken again once room is made.
func TestTotalCaps(t *testing.T) {
	l := startListener(t, Config{Limits: Limits{KeepRawBytes: 4096, MaxStoredMessages: 100, MaxStoredBytes: 20000}})
	kept := 0
	for n := range 10 {
		err := l.send(t, fmt.Sprintf("127.0.0.%d", n+1), junk(50<<10))
		if err == nil {
			kept++
			continue
		}
		wantReply(t, fmt.Sprintf("message %d", n+1), err, 452, smtp.EnhancedCode{4, 3, 1})
	}
	got := l.totals(t)
	if kept != 4 || got.Messages != 4 || got.Bytes > 20000 {
		t.Fatalf("%d accepted, %+v kept; want 4 messages within 20000 bytes", kept, got)
	}
	if l.metrics.refusedFor(refusedStorageCap) != 6 {
		t.Errorf("%d storage_cap refusals counted, want 6", l.metrics.refusedFor(refusedStorageCap))
	}
	if _, err := l.st.PurgeInbound(context.Background(), store.InboundFilter{Status: store.InboundUnparsed}); err != nil {
		t.Fatal(err)
	}
	if err := l.send(t, "127.0.0.1", junk(50<<10)); err != nil {
		t.Fatalf("after a purge: %v", err)
	}

	// The message count, with concurrent senders.
	l = startListener(t, Config{Limits: Limits{MaxStoredMessages: 7}})
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted := 0
	for n := range 20 {
		wg.Go(func() {
			err := l.send(t, fmt.Sprintf("127.0.0.%d", n+1), junk(300))
			mu.Lock()
			defer mu.Unlock()
			var se *smtp.SMTPError
			switch {
			case err == nil:
				accepted++
			case !errors.As(err, &se) || se.Code != 452:
				t.Errorf("sender %d: %v, want 250 or 452", n, err)
			}
		})
	}
	wg.Wait()
	if got := l.totals(t); accepted != 7 || got.Messages != 7 {
		t.Errorf("%d accepted and %d kept of 20 concurrent senders, want 7 and 7", accepted, got.Messages)
	}
}

// Only the start of a message is kept, and one over the size limit is
// refused for good.
func TestKeepAndSizeLimit(t *testing.T) {
	l := startListener(t, Config{MaxMessageBytes: 100 << 10, Limits: Limits{KeepRawBytes: 4096}})
	msg := junk(90 << 10)
	if err := l.send(t, "127.0.0.1", msg); err != nil {
		t.Fatal(err)
	}
	list, err := l.st.InboundMessages(context.Background(), "", 10)
	if err != nil || len(list) != 1 {
		t.Fatalf("list %+v %v", list, err)
	}
	m, err := l.st.InboundMessage(context.Background(), list[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Truncated || m.Size != int64(len(msg)) || !bytes.Equal(m.Raw, msg[:4096]) || m.Client != "127.0.0.1" ||
		m.Status != store.InboundUnparsed {
		t.Errorf("kept %d of %d bytes (truncated %v) from %q, status %s; want the first 4096 of %d from 127.0.0.1",
			len(m.Raw), m.Size, m.Truncated, m.Client, m.Status, len(msg))
	}
	if l.metrics.truncated != 1 {
		t.Errorf("%d truncations counted, want 1", l.metrics.truncated)
	}

	// go-smtp refuses a declared size over the limit at MAIL FROM itself;
	// an undeclared one at the end of DATA.
	wantReply(t, "a message declared over max_message_bytes", l.send(t, "127.0.0.1", junk(150<<10)), 552, smtp.EnhancedCode{5, 3, 4})
	wantReply(t, "a message over max_message_bytes", l.sendDeclaring(t, "127.0.0.1", junk(150<<10), 0), 552, smtp.EnhancedCode{5, 3, 4})
	if got := l.totals(t); got.Messages != 1 {
		t.Errorf("%d messages kept, want 1", got.Messages)
	}
	if l.metrics.refusedFor(refusedTooLarge) != 1 {
		t.Errorf("too_large not counted")
	}
}

// Below the free-space reserve nothing is taken.
func TestDiskReserve(t *testing.T) {
	l := startListener(t, Config{Limits: Limits{MinFreeBytes: 1 << 62}})
	wantReply(t, "with less free space than the reserve", l.send(t, "127.0.0.1", junk(500)), 452, smtp.EnhancedCode{4, 3, 1})
	if l.metrics.refusedFor(refusedDiskReserve) != 1 || l.totals(t).Messages != 0 {
		t.Errorf("refusals %v, kept %+v", l.metrics.refused, l.totals(t))
	}
}

func TestClientKey(t *testing.T) {
	for addr, want := range map[string]string{
		"192.0.2.7:25":                "192.0.2.7/32",
		"[::ffff:192.0.2.7]:25":       "192.0.2.7/32",
		"[2001:db8:1:2:3:4:5:6]:2525": "2001:db8:1:2::/64",
	} {
		a, _ := net.ResolveTCPAddr("tcp", addr)
		if got := clientKey(a.AddrPort().Addr()); got != netip.MustParsePrefix(want) {
			t.Errorf("clientKey(%s) = %s, want %s", addr, got, want)
		}
	}
}

// The per-client buckets forget clients whose allowance is whole again.
func TestClientLimiterForgets(t *testing.T) {
	c := &testClock{now: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)}
	l := newClientLimiter(10, 0, c.Now)
	for n := range sweepAt {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)}), 32)
		if !l.take(p, 100) {
			t.Fatal("a first message refused")
		}
	}
	c.advance(time.Hour)
	l.take(netip.MustParsePrefix("192.0.2.1/32"), 100)
	if len(l.buckets) != 1 {
		t.Errorf("%d buckets kept, want 1", len(l.buckets))
	}
}

// keep cuts the message to KeepRawBytes and the detail to maxDetailBytes,
// on a character boundary.
func TestKeepCuts(t *testing.T) {
	s := New(Config{Limits: Limits{KeepRawBytes: 1024}}, nil, nil)
	m := store.InboundMessage{Raw: junk(5000), Detail: strings.Repeat("é", maxDetailBytes)}
	s.keep(&m)
	if len(m.Raw) != 1024 || m.Size < 5000 {
		t.Errorf("kept %d of %d bytes, want 1024 of at least 5000", len(m.Raw), m.Size)
	}
	if len(m.Detail) > maxDetailBytes+len(" [...]") || !strings.HasSuffix(m.Detail, "é [...]") {
		t.Errorf("detail cut to %d bytes, ending %q", len(m.Detail), m.Detail[len(m.Detail)-10:])
	}
	short := store.InboundMessage{Raw: []byte("small"), Detail: "fine"}
	s.keep(&short)
	if string(short.Raw) != "small" || short.Size != 5 || short.Detail != "fine" {
		t.Errorf("a small message changed: %+v", short)
	}
}
