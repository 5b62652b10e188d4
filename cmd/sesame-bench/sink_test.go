package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer the sink's goroutines may log to.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestSendToSink runs the two halves against each other: send's clients
// deliver straight to the sink, which counts them and reads X-Bench-Sent.
func TestSendToSink(t *testing.T) {
	var logs syncBuffer
	s, err := startSink(sinkConfig{Listen: "127.0.0.2:0", SelfSigned: true, Expect: 100,
		Timeout: 30 * time.Second, ReportEvery: 5 * time.Millisecond}, time.Now, &logs)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		rep sinkReport
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := s.run(context.Background())
		done <- result{rep, err}
	}()

	cfg := testSendConfig(s.Addr().String())
	cfg.Auth, cfg.User, cfg.Recipients = "none", "", 2
	sent, err := runSend(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if sent.Accepted != 100 || len(sent.Errors) != 0 {
		t.Fatalf("send: accepted %d, errors %v %v", sent.Accepted, sent.Errors, sent.ErrorSamples)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	want := sinkReport{Received: 100, Recipients: 200, Bytes: 100 * 2048, Connections: 4,
		MsgsPerConn: 25, EndToEndSamples: 100}
	got := r.rep
	got.Seconds, got.MsgsPerSec, got.EndToEndP50ms, got.EndToEndP99ms, got.EndToEndMaxms = 0, 0, 0, 0, 0
	if got != want {
		t.Errorf("sink report = %+v, want %+v", r.rep, want)
	}
	if r.rep.EndToEndP50ms <= 0 || r.rep.EndToEndP50ms > r.rep.EndToEndP99ms {
		t.Errorf("end-to-end percentiles wrong: %+v", r.rep)
	}
	if !strings.Contains(logs.String(), "sink: received=") {
		t.Errorf("no progress line in the log:\n%s", logs.String())
	}
}

// TestSinkToleratesSloppyInput speaks raw SMTP to the sink: bare LF, a
// 5,000-byte line and a message without the bench header must all be
// accepted, and the end-to-end time is read with the sink's clock.
func TestSinkToleratesSloppyInput(t *testing.T) {
	now := time.Unix(1700000000, 0)
	s, err := startSink(sinkConfig{Listen: "127.0.0.2:0", Expect: 2, Timeout: 30 * time.Second},
		func() time.Time { return now }, &syncBuffer{})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c := textproto.NewConn(nc)
	step := func(code int, format string, args ...any) {
		t.Helper()
		if format != "" {
			if err := c.PrintfLine(format, args...); err != nil {
				t.Fatal(err)
			}
		}
		if _, msg, err := c.ReadResponse(code); err != nil {
			t.Fatalf("after %q: %v %s", fmt.Sprintf(format, args...), err, msg)
		}
	}
	step(220, "")
	step(250, "EHLO relay.localhost")
	sent := now.Add(-250 * time.Millisecond).UnixNano()
	messages := []string{
		"Subject: bare\nX-Bench-Sent: " + fmt.Sprint(sent) + "\n\nbody with bare LF\nand a long line " +
			strings.Repeat("z", 5000) + "\n\r\n.\r\n",
		"Subject: no bench header\r\n\r\nbody\r\n.\r\n",
	}
	for _, m := range messages {
		step(250, "MAIL FROM:<bounce@example.com>")
		step(250, "RCPT TO:<rcpt000@example.net>")
		step(354, "DATA")
		if _, err := nc.Write([]byte(m)); err != nil {
			t.Fatal(err)
		}
		step(250, "")
	}

	// The session stays open past the grace period, so it is cut.
	s.grace = 10 * time.Millisecond
	rep, err := s.run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReadLine(); err == nil {
		t.Error("session still open after the sink stopped")
	}
	if rep.Received != 2 || rep.Connections != 1 || rep.EndToEndSamples != 1 || rep.EndToEndP50ms != 250 {
		t.Errorf("report = %+v; want 2 received on 1 connection, one end-to-end sample of 250ms", rep)
	}
}

func TestSinkTimeout(t *testing.T) {
	s, err := startSink(sinkConfig{Listen: "127.0.0.2:0", Expect: 5, Timeout: 20 * time.Millisecond},
		time.Now, &syncBuffer{})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := s.run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "0 of 5") {
		t.Errorf("err = %v, want a timeout with 0 of 5 messages", err)
	}
	if rep.Received != 0 {
		t.Errorf("received = %d", rep.Received)
	}
	// The listener is closed once run returns.
	if c, err := net.Dial("tcp", s.Addr().String()); err == nil {
		c.Close()
		t.Error("sink still accepts connections after run returned")
	}
}

func TestSinkConfigValidate(t *testing.T) {
	tests := []struct {
		cfg   sinkConfig
		wants []string
	}{
		{sinkConfig{Listen: "127.0.0.2:2525"}, nil},
		{sinkConfig{Listen: "0.0.0.0:2525"}, []string{"--listen", "not loopback"}},
		{sinkConfig{Listen: ":2525"}, []string{"--listen", "not loopback"}},
		{sinkConfig{Listen: ":2525", AllowRemote: true}, nil},
		{sinkConfig{Listen: "127.0.0.2:2525", CertFile: "c.pem"}, []string{"go together"}},
		{sinkConfig{Listen: "127.0.0.2:2525", CertFile: "c", KeyFile: "k", SelfSigned: true}, []string{"exclude"}},
		{sinkConfig{Listen: "127.0.0.2:2525", Expect: -1, Timeout: -1, ReportEvery: -1},
			[]string{"--expect", "--timeout", "--report-every"}},
	}
	for _, tt := range tests {
		err := tt.cfg.validate()
		if len(tt.wants) == 0 {
			if err != nil {
				t.Errorf("%+v: unexpected error %v", tt.cfg, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%+v: no error, want %q", tt.cfg, tt.wants)
			continue
		}
		for _, w := range tt.wants {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%+v: error lacks %q: %v", tt.cfg, w, err)
			}
		}
	}
}
