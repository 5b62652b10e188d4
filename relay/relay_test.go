package relay

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sesame-mail/sesame/store"
	"github.com/sesame-mail/sesame/testkit"
)

// recorder is the real store with the outcomes the relay completes copied
// to a channel, so tests wait for events instead of sleeping.
type recorder struct {
	*store.SQLite
	outcomes chan store.Outcome
	notices  chan *store.Message
}

func (q *recorder) Complete(ctx context.Context, r store.Report) error {
	err := q.SQLite.Complete(ctx, r)
	for _, o := range r.Outcomes {
		q.outcomes <- o
	}
	if r.Notice != nil {
		q.notices <- r.Notice
	}
	return err
}

// next waits for the next recorded outcome.
func (q *recorder) next(t *testing.T) store.Outcome {
	t.Helper()
	select {
	case o := <-q.outcomes:
		return o
	case <-time.After(10 * time.Second):
		t.Fatal("no outcome within 10s")
		return store.Outcome{}
	}
}

// nextFor waits for the outcomes of n recipients, by address.
func (q *recorder) nextFor(t *testing.T, n int) map[string]store.Outcome {
	t.Helper()
	got := map[string]store.Outcome{}
	for range n {
		o := q.next(t)
		got[o.Recipient] = o
	}
	return got
}

func newQueue(t *testing.T) *recorder {
	t.Helper()
	st, err := store.OpenSQLite(filepath.Join(t.TempDir(), "sesame.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &recorder{SQLite: st, outcomes: make(chan store.Outcome, 1000), notices: make(chan *store.Message, 100)}
}

func enqueue(t *testing.T, q *recorder, sender string, data string, rcpts ...string) string {
	t.Helper()
	m := &store.Message{Credential: "test", Sender: sender, Recipients: rcpts, ReceivedAt: time.Now(), Data: []byte(data)}
	if err := q.Enqueue(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	return m.ID
}

// testConfig is a configuration for a relay to smarthost with short
// timers. Its log goes to the test output and to logs, when not nil.
func testConfig(t *testing.T, smarthost string, logs io.Writer) Config {
	var w io.Writer = t.Output()
	if logs != nil {
		w = io.MultiWriter(w, logs)
	}
	return Config{
		Hostname:       "relay.test",
		Smarthost:      smarthost,
		Workers:        2,
		RetryFirst:     50 * time.Millisecond,
		RetryMax:       200 * time.Millisecond,
		ConnectTimeout: 2 * time.Second,
		CommandTimeout: 5 * time.Second,
		Logger:         slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

// start runs a relay until the returned stop is called or the test ends;
// stop fails the test if Run does not return promptly.
func start(t *testing.T, cfg Config, q Queue) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- New(cfg, q).Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return within 10s of cancel")
		}
	}
	t.Cleanup(stop)
	return stop
}

func wantOutcome(t *testing.T, o store.Outcome, state, replyPrefix string) {
	t.Helper()
	if o.State != state || !strings.HasPrefix(o.Reply, replyPrefix) {
		t.Errorf("outcome for %s: %s %q, want %s %q...", o.Recipient, o.State, o.Reply, state, replyPrefix)
	}
}

// recipients returns the queue's recipients by address.
func recipients(t *testing.T, q *recorder) map[string]store.RecipientEntry {
	t.Helper()
	entries, err := q.QueueMessages(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]store.RecipientEntry{}
	for _, e := range entries {
		for _, r := range e.Recipients {
			out[r.Address] = r
		}
	}
	return out
}

func TestDeliversBytesUnchanged(t *testing.T) {
	q := newQueue(t)
	s := newSink(t, "127.0.0.2:0", nil)
	// Dots that need stuffing, a lone dot line, 8-bit text and a long line.
	data := "DKIM-Signature: v=1; a=rsa-sha256; d=example.test; s=s1; b=abc\r\n" +
		"From: <app@example.test>\r\nTo: <rcpt@example.test>\r\nSubject: =?utf-8?q?gr=C3=BC=C3=9Fe?=\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" +
		".leading dot\r\n..two dots\r\n.\r\nGrüße aus Köln\r\n" + strings.Repeat("x", 900) + "\r\n\r\n"
	id := enqueue(t, q, "", data, "jörg@example.test", "rcpt@example.test")
	start(t, testConfig(t, s.Addr, nil), q)

	m := s.Next(t)
	if !bytes.Equal(m.Data, []byte(data)) {
		t.Errorf("sink got\n%q\nwant\n%q", m.Data, data)
	}
	if m.From != "" {
		t.Errorf("MAIL FROM %q, want the null sender", m.From)
	}
	if !m.Opts.UTF8 || m.Opts.Body != smtp.Body8BitMIME {
		t.Errorf("MAIL options UTF8=%v BODY=%q, want SMTPUTF8 and 8BITMIME", m.Opts.UTF8, m.Opts.Body)
	}
	if strings.Join(m.To, ",") != "jörg@example.test,rcpt@example.test" {
		t.Errorf("recipients %q", m.To)
	}
	for _, o := range q.nextFor(t, 2) {
		wantOutcome(t, o, store.StateDelivered, "250 2.0.0 ")
	}
	if _, err := q.QueueMessage(context.Background(), id); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("delivered message %s still queued: %v", id, err)
	}
	if strings.Contains(s.Trace(), "EHLO localhost") || !strings.Contains(s.Trace(), "EHLO relay.test") {
		t.Error("relay did not introduce itself as relay.test")
	}
}

func TestTemporaryFailureRetried(t *testing.T) {
	q := newQueue(t)
	s := newSink(t, "127.0.0.2:0", nil)
	s.ReplyTo("a@example.test", &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}, nil)
	enqueue(t, q, "app@example.test", "Subject: retry\r\n\r\nbody\r\n", "a@example.test")
	started := time.Now()
	start(t, testConfig(t, s.Addr, nil), q)

	first := q.next(t)
	wantOutcome(t, first, store.StateDeferred, "451 4.3.0 try later")
	// The retry is due at most RetryFirst (50ms) after the attempt ended,
	// which lies between the start and the outcome's arrival here (a loaded
	// machine may deliver the outcome after the retry is already due).
	if latest := time.Now().Add(50 * time.Millisecond); first.NextAttempt.Before(started) || first.NextAttempt.After(latest) {
		t.Errorf("next attempt at %v, want between the start %v and RetryFirst (50ms) after the outcome, %v",
			first.NextAttempt, started, latest)
	}
	second := q.next(t)
	wantOutcome(t, second, store.StateDelivered, "250 ")
	if time.Now().Before(first.NextAttempt) {
		t.Error("retried before its next attempt time")
	}
	if m := s.Next(t); strings.Join(m.To, ",") != "a@example.test" {
		t.Errorf("recipients %q", m.To)
	}
	if _, ok, err := q.NextDue(context.Background()); err != nil || ok {
		t.Errorf("NextDue: ok=%v err=%v, want nothing waiting", ok, err)
	}
}

func TestPermanentFailureOfOneRecipient(t *testing.T) {
	q := newQueue(t)
	s := newSink(t, "127.0.0.2:0", nil)
	s.ReplyTo("b@example.test", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"})
	enqueue(t, q, "app@example.test", "Subject: three\r\n\r\nbody\r\n", "a@example.test", "b@example.test", "c@example.test")
	start(t, testConfig(t, s.Addr, nil), q)

	got := q.nextFor(t, 3)
	wantOutcome(t, got["a@example.test"], store.StateDelivered, "250 ")
	wantOutcome(t, got["b@example.test"], store.StateBounced, "550 5.1.1 no such user")
	wantOutcome(t, got["c@example.test"], store.StateDelivered, "250 ")
	if m := s.Next(t); strings.Join(m.To, ",") != "a@example.test,c@example.test" {
		t.Errorf("sink recipients %q, want a and c", m.To)
	}
	// One bounce for the sender, naming b only, sent from the null sender.
	select {
	case n := <-q.notices:
		if n.Sender != "" || strings.Join(n.Recipients, ",") != "app@example.test" ||
			!strings.Contains(string(n.Data), "Final-Recipient: rfc822; b@example.test") ||
			strings.Contains(string(n.Data), "Final-Recipient: rfc822; a@example.test") {
			t.Errorf("notice from %q to %v:\n%s", n.Sender, n.Recipients, n.Data)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no DSN")
	}
	dsn := s.Next(t)
	if dsn.From != "" || !strings.Contains(string(dsn.Data), "550 5.1.1 no such user") {
		t.Errorf("DSN at the sink from %q:\n%s", dsn.From, dsn.Data)
	}
}

func TestDataRejectionFailsEveryRecipient(t *testing.T) {
	q := newQueue(t)
	s := newSink(t, "127.0.0.2:0", nil)
	s.SetDataReply(&smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "content rejected"})
	enqueue(t, q, "app@example.test", "Subject: x\r\n\r\nbody\r\n", "a@example.test", "b@example.test")
	start(t, testConfig(t, s.Addr, nil), q)

	for _, o := range q.nextFor(t, 2) {
		wantOutcome(t, o, store.StateBounced, "554 5.6.0 content rejected")
	}
}

func TestConnectionRefusedThenDelivered(t *testing.T) {
	q := newQueue(t)
	// Take a free port, then leave it closed until the first attempt failed.
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	enqueue(t, q, "app@example.test", "Subject: x\r\n\r\nbody\r\n", "a@example.test")
	start(t, testConfig(t, addr, nil), q)

	wantOutcome(t, q.next(t), store.StateDeferred, "connect to 127.0.0.2[127.0.0.2:")
	s := newSink(t, addr, nil)
	// Attempts keep failing until the sink listens; the first success ends them.
	for {
		o := q.next(t)
		if o.State == store.StateDelivered {
			break
		}
		wantOutcome(t, o, store.StateDeferred, "connect to 127.0.0.2[127.0.0.2:")
	}
	s.Next(t)
}

func TestConnectionReused(t *testing.T) {
	q := newQueue(t)
	s := newSink(t, "127.0.0.2:0", nil)
	cfg := testConfig(t, s.Addr, nil)
	cfg.Workers = 1
	start(t, cfg, q)

	// The second message arrives while the relay sleeps: Ready must wake it
	// well before the 30 s poll.
	for i := range 2 {
		enqueue(t, q, "app@example.test", "Subject: x\r\n\r\nbody\r\n", "a@example.test")
		wantOutcome(t, q.next(t), store.StateDelivered, "250 ")
		s.Next(t)
		if i == 0 && strings.Contains(s.Trace(), "RSET") {
			t.Error("RSET before the first message")
		}
	}
	if n := s.Accepted(); n != 1 {
		t.Errorf("sink accepted %d connections, want 1", n)
	}
	if n := s.TraceCount("RSET"); n != 1 {
		t.Errorf("%d RSET commands, want 1 between the messages", n)
	}
}

// With more workers than a domain's concurrency (the smarthost is bounded
// by workers alone), every connection is kept for reuse: none is closed for
// want of room in the pool and opened again.
func TestConnectionsNotChurned(t *testing.T) {
	q := newQueue(t)
	s := newSink(t, "127.0.0.2:0", nil)
	cfg := testConfig(t, s.Addr, nil)
	cfg.Workers, cfg.DomainConcurrency = 4, 1
	const n = 60
	for range n {
		enqueue(t, q, "app@example.test", "Subject: x\r\n\r\nbody\r\n", "a@example.test")
	}
	// Hold the first replies until every worker the credential may use has a
	// connection in use, then let them all finish together.
	hold := s.HoldData()
	start(t, cfg, q)
	for range credentialShare(cfg.Workers) {
		<-s.InData()
	}
	close(hold)
	for range n {
		wantOutcome(t, q.next(t), store.StateDelivered, "250 ")
	}
	if c := s.Accepted(); int(c) > cfg.Workers {
		t.Errorf("sink accepted %d connections for %d messages, want at most %d (one per worker)", c, n, cfg.Workers)
	}
}

func TestStartTLS(t *testing.T) {
	q := newQueue(t)
	s := newSink(t, "127.0.0.2:0", testkit.SelfSigned(t, "sink.test", "127.0.0.2"))
	var logs testkit.Buffer
	enqueue(t, q, "app@example.test", "Subject: x\r\n\r\nbody\r\n", "a@example.test")
	start(t, testConfig(t, s.Addr, &logs), q)

	if m := s.Next(t); !m.TLS {
		t.Error("message did not travel over TLS")
	}
	wantOutcome(t, q.next(t), store.StateDelivered, "250 ")
	// The certificate is self-signed: used, and logged as unverified.
	for _, want := range []string{"cert_verified=false", `tls="TLS 1.3"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %s", want)
		}
	}
	if n := s.TraceCount("EHLO relay.test"); n != 2 {
		t.Errorf("%d EHLO relay.test, want 2 (before and after STARTTLS)", n)
	}
}

func TestSourceIP(t *testing.T) {
	q := newQueue(t)
	s := newSink(t, "127.0.0.2:0", nil)
	cfg := testConfig(t, s.Addr, nil)
	cfg.SourceIPs = []string{"127.0.0.3"}
	enqueue(t, q, "app@example.test", "Subject: x\r\n\r\nbody\r\n", "a@example.test")
	start(t, cfg, q)

	m := s.Next(t)
	if host, _, _ := net.SplitHostPort(m.Peer); host != "127.0.0.3" {
		t.Errorf("sink saw peer %s, want 127.0.0.3", m.Peer)
	}
}

func TestSmarthostResolvedWithDNSServers(t *testing.T) {
	q := newQueue(t)
	s := newSink(t, "127.0.0.2:0", nil)
	_, port, _ := net.SplitHostPort(s.Addr)
	dnsAddr := testkit.StartZone(t, "smarthost.test. 60 IN A 127.0.0.2").Addr
	cfg := testConfig(t, net.JoinHostPort("smarthost.test", port), nil)
	cfg.DNSServers = []string{dnsAddr}
	enqueue(t, q, "app@example.test", "Subject: x\r\n\r\nbody\r\n", "a@example.test")
	start(t, cfg, q)

	wantOutcome(t, q.next(t), store.StateDelivered, "250 ")
	s.Next(t)
}

func TestShutdownClosesEverything(t *testing.T) {
	q := newQueue(t)
	s := newSink(t, "127.0.0.2:0", nil)
	enqueue(t, q, "app@example.test", "Subject: x\r\n\r\nbody\r\n", "a@example.test")
	stop := start(t, testConfig(t, s.Addr, nil), q)
	wantOutcome(t, q.next(t), store.StateDelivered, "250 ")
	if n := s.Open(); n != 1 {
		t.Fatalf("%d open connections after delivery, want the 1 kept for reuse", n)
	}

	stop()
	if !strings.Contains(s.Trace(), "QUIT") {
		t.Error("no QUIT on shutdown")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		leaked := relayGoroutines()
		if leaked == "" && s.Open() == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after Run returned: %d sink connections open; relay goroutines:\n%s", s.Open(), leaked)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// relayGoroutines returns the stacks of goroutines running relay code that
// the tests (their sink, say) did not start.
func relayGoroutines() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var leaked []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		// The store's own goroutines belong to the store, which outlives Run.
		if strings.Contains(g, "sesame/relay.") && !strings.Contains(g, "_test.go") && !strings.Contains(g, "sesame/store.") {
			leaked = append(leaked, g)
		}
	}
	return strings.Join(leaked, "\n\n")
}

func TestShutdownFinishesDeliveryInFlight(t *testing.T) {
	q := newQueue(t)
	s := newSink(t, "127.0.0.2:0", nil)
	hold := s.HoldData()
	enqueue(t, q, "app@example.test", "Subject: x\r\n\r\nbody\r\n", "a@example.test")
	stop := start(t, testConfig(t, s.Addr, nil), q)

	<-s.InData() // the message is on the wire, its reply held back
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	select {
	case <-stopped:
		t.Fatal("Run returned with a delivery in flight")
	case <-time.After(100 * time.Millisecond):
	}
	close(hold)
	wantOutcome(t, q.next(t), store.StateDelivered, "250 ")
	<-stopped
	if _, ok, _ := q.NextDue(context.Background()); ok {
		t.Error("the delivered recipient is still waiting in the queue")
	}
}

func TestPanicDefersAndRelayGoesOn(t *testing.T) {
	q := newQueue(t)
	s := newSink(t, "127.0.0.2:0", nil)
	cfg := testConfig(t, s.Addr, nil)
	// A logger that panics once inside the delivery, when it logs the new
	// connection.
	cfg.Logger = slog.New(&panicOnce{Handler: cfg.Logger.Handler(), msg: "relay: connected"})
	enqueue(t, q, "app@example.test", "Subject: x\r\n\r\nbody\r\n", "a@example.test")
	start(t, cfg, q)

	wantOutcome(t, q.next(t), store.StateDeferred, replyInternal)
	wantOutcome(t, q.next(t), store.StateDelivered, "250 ")
}

type panicOnce struct {
	slog.Handler
	msg      string
	panicked bool // only touched by the one worker that delivers
}

func (h *panicOnce) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == h.msg && !h.panicked {
		h.panicked = true
		panic("test panic")
	}
	return h.Handler.Handle(ctx, r)
}

func TestInvalidConfig(t *testing.T) {
	for _, cfg := range []Config{
		{Smarthost: "no-port"},
		{Smarthost: "127.0.0.2:25", SourceIPs: []string{"not-an-ip"}},
		{Smarthost: "127.0.0.2:25", DNSServers: []string{"127.0.0.1"}},
	} {
		if err := New(cfg, newQueue(t)).Run(context.Background()); err == nil {
			t.Errorf("Run with %+v: no error", cfg)
		}
	}
}

func TestBackoff(t *testing.T) {
	for _, c := range []struct {
		attempts     int
		first, limit time.Duration
		want         time.Duration
	}{
		{0, time.Minute, time.Hour, time.Minute},
		{1, time.Minute, time.Hour, 2 * time.Minute},
		{5, time.Minute, time.Hour, 32 * time.Minute},
		{6, time.Minute, time.Hour, time.Hour},
		{1000, time.Minute, time.Hour, time.Hour},
		{70, time.Minute, 1 << 62, 1 << 62},
		{0, 2 * time.Hour, time.Hour, time.Hour},
	} {
		if got := backoff(c.attempts, c.first, c.limit); got != c.want {
			t.Errorf("backoff(%d, %v, %v) = %v, want %v", c.attempts, c.first, c.limit, got, c.want)
		}
	}
}

func TestReplies(t *testing.T) {
	for _, c := range []struct {
		code int
		text string
		want string
	}{
		{451, "4.3.0 try later", "451 4.3.0 try later"},
		{250, "2.0.0 Ok: queued as X", "250 2.0.0 Ok: queued as X"},
		{550, "5.7.1 first\n5.7.1 second", "550 5.7.1 first second"},
		{554, "no service", "554 no service"},
		{421, "", "421"},
	} {
		if got := formatReply(replyError(c.code, c.text)); got != c.want {
			t.Errorf("%d %q: %q, want %q", c.code, c.text, got, c.want)
		}
	}
	if got := describe(errors.Join(errors.New("x"), &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "full"})); got != "452 4.2.2 full" {
		t.Errorf("describe: %q", got)
	}
	if verdict(&smtp.SMTPError{Code: 552}) != store.StateBounced || verdict(&smtp.SMTPError{Code: 452}) != store.StateDeferred ||
		verdict(errors.New("timeout")) != store.StateDeferred {
		t.Error("verdict: 5xx must fail, everything else defer")
	}
}

// A hard bounce puts the address on the suppression list; mail to a
// suppressed address is accepted but never attempted, with no DSN; a soft
// bounce (mailbox full) does not suppress.
func TestSuppression(t *testing.T) {
	q := newQueue(t)
	s := newSink(t, "127.0.0.2:0", nil)
	s.ReplyTo("gone@example.test", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"})
	s.ReplyTo("full@example.test", &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 2, 2}, Message: "mailbox full"})
	s.ReplyTo("words@example.test", &smtp.SMTPError{Code: 550, Message: "Recipient address rejected: User unknown"})
	ctx := context.Background()
	if err := q.Suppress(ctx, store.Suppression{Address: "Listed@example.test", Reason: store.SuppressManual, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	start(t, testConfig(t, s.Addr, nil), q)

	enqueue(t, q, "", "Subject: x\r\n\r\nbody\r\n", "gone@example.test", "full@example.test", "words@example.test", "listed@example.test", "ok@example.test")
	got := q.nextFor(t, 5)
	wantOutcome(t, got["gone@example.test"], store.StateBounced, "550 5.1.1")
	wantOutcome(t, got["full@example.test"], store.StateBounced, "552 5.2.2")
	wantOutcome(t, got["words@example.test"], store.StateBounced, "550 5.0.0 Recipient address rejected")
	wantOutcome(t, got["listed@example.test"], store.StateSuppressed, "not attempted: the address is on the suppression list")
	wantOutcome(t, got["ok@example.test"], store.StateDelivered, "250 ")
	if m := s.Next(t); strings.Contains(strings.Join(m.To, ","), "listed") {
		t.Errorf("suppressed recipient attempted: %v", m.To)
	}
	on, err := q.Suppressed(ctx, "test", []string{"gone@example.test", "full@example.test", "words@example.test", "listed@example.test"})
	if err != nil || !on["gone@example.test"] || on["full@example.test"] || !on["words@example.test"] || !on["listed@example.test"] {
		t.Fatalf("suppressed = %v, %v", on, err)
	}
	// The next message to the hard-bounced address is not attempted.
	enqueue(t, q, "", "Subject: y\r\n\r\nbody\r\n", "gone@example.test")
	wantOutcome(t, q.next(t), store.StateSuppressed, "not attempted")
	evs, _ := q.QueryEvents(ctx, store.EventQuery{Type: store.EventSuppressed})
	if len(evs) != 2 {
		t.Fatalf("%d suppressed events, want 2", len(evs))
	}
}
