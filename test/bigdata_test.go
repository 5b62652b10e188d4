package test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestLargeUploadsMemory: many clients upload large messages at once, each
// from an address of its own, and serve's peak resident memory (VmHWM)
// stays under the bound docs/operations.md states (memoryBound); every
// upload is answered 250, or 452 4.3.1 if it waited in vain for room in
// the memory budget. Before the budget each upload was held in memory
// whole while it arrived, and copied twice more after its end: 10
// messages of 40 MB took 3 GB, and this test's 30 took 7.2 GB.
//
// The default scale suits CI (30 × 40 MiB, a budget of 256 MiB, about
// 40 s); the figures of docs/operations.md are from
// SESAME_E2E_UPLOADS=100 SESAME_E2E_INFLIGHT_MB=512.
func TestLargeUploadsMemory(t *testing.T) {
	uploads := envInt(t, "SESAME_E2E_UPLOADS", 30)
	sizeMB := envInt(t, "SESAME_E2E_UPLOAD_MB", 40)
	budgetMB := envInt(t, "SESAME_E2E_INFLIGHT_MB", 256)

	inst := newInstance(t)
	inst.unthrottled()
	const workers = 1
	inst.configure(map[string]any{
		"submission.max_inflight_bytes": budgetMB << 20,
		"submission.max_message_bytes":  sizeMB << 20,
		"submission.max_connections":    uploads + 10,
		// All the clients connect at once, before any has logged in: the
		// default share for clients not logged in (a quarter) would shed
		// most of them (TestUnauthenticatedSlots tests that).
		"submission.max_unauthenticated_connections": uploads + 10,
		// Nothing listens there: each message queued is read once by the
		// relay (one worker) and deferred. The relay's own memory grows
		// with its workers (memoryBound); this measures submission.
		"relay.smarthost": freeAddr(t, "127.0.0.1"),
		"relay.workers":   workers,
	})
	user := inst.standard(senderDomain, "bulk")

	body := bigBody(sizeMB<<20 - 4<<10) // with the header, just under max_message_bytes
	start := time.Now()
	type result struct {
		code int
		msg  string
		err  error
	}
	results := make([]result, uploads)
	var wg sync.WaitGroup
	for n := range uploads {
		wg.Go(func() {
			// 127.0.1.x: a network (/32) of its own for each client, so
			// only the total budget limits them.
			from := fmt.Sprintf("127.0.1.%d", n+1)
			header := fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: upload %d\r\nMessage-ID: <%s@%s>\r\n\r\n",
				sender, recipient, n, newToken(), senderDomain)
			code, msg, err := upload(inst.smtpAddr, from, user, []byte(header), body)
			results[n] = result{code, msg, err}
		})
	}
	wg.Wait()
	took := time.Since(start)

	accepted, refused := 0, 0
	for n, r := range results {
		switch {
		case r.err != nil:
			t.Errorf("upload %d: %v", n, r.err)
		case r.code == 250:
			accepted++
		case r.code == 452 && strings.HasPrefix(r.msg, "4.3.1 "):
			refused++
		default:
			t.Errorf("upload %d: %d %s; want 250, or 452 4.3.1", n, r.code, r.msg)
		}
	}
	hwm := vmHWM(t, inst)
	limit := memoryBound(int64(budgetMB)<<20, int64(sizeMB)<<20, workers)
	t.Logf("%d uploads of %d MiB in %s: %d accepted, %d refused with 452 4.3.1; serve's peak RSS (VmHWM) %d MiB, bound %d MiB",
		uploads, sizeMB, took.Round(time.Millisecond), accepted, refused, hwm>>20, limit>>20)
	if accepted == 0 {
		t.Errorf("no upload was accepted")
	}
	if hwm > limit {
		t.Errorf("serve's peak RSS %d MiB is over the bound of %d MiB", hwm>>20, limit>>20)
	}

	// The budget is all given back, and /metrics counts the refusals.
	metrics := scrape(t, inst)
	if !strings.Contains(metrics, "\nsesame_smtp_inflight_bytes 0\n") {
		t.Errorf("/metrics: sesame_smtp_inflight_bytes is not 0 after every upload ended")
	}
	want := fmt.Sprintf("sesame_submissions_total{reason=\"inflight_limit\",result=\"rejected\"} %d\n", refused)
	if refused > 0 && !strings.Contains(metrics, want) {
		t.Errorf("/metrics lacks %q", want)
	}
}

// memoryBound is the peak RSS docs/operations.md ("Memory") states for
// serve: the messages being signed and queued (max_inflight_bytes), the
// Go heap under its soft limit (256 MiB and one message per relay
// worker), SQLite's copies of a message it stores (two) or a relay worker
// reads (one each), and 128 MiB for the rest.
func memoryBound(inflight, maxMessage int64, workers int) int64 {
	relay := int64(workers) * maxMessage // less than relay.memory_budget here
	return inflight + 384<<20 + 2*relay + 2*maxMessage
}

// bigBody is a message body of size bytes: lines of text, none starting
// with a dot, so it goes after DATA as it is.
func bigBody(size int) []byte {
	line := []byte("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ+/0123456789\r\n")
	b := bytes.Repeat(line, size/len(line)+1)
	return b[:size/len(line)*len(line)]
}

// upload submits header+body over STARTTLS from the local address from
// and returns the reply to its end. It reports only what the test cannot
// go on from as an error (it runs on its own goroutine: no t.Fatal).
func upload(addr, from string, user creds, header, body []byte) (int, string, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 10 * time.Second}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return 0, "", err
	}
	defer func() { conn.Close() }()
	conn.SetDeadline(time.Now().Add(5 * time.Minute))
	tp := textproto.NewConn(conn)
	step := func(want int, line string) error {
		if line != "" {
			if err := tp.PrintfLine("%s", line); err != nil {
				return err
			}
		}
		code, msg, err := tp.ReadResponse(0)
		if err == nil && code != want {
			err = fmt.Errorf("%q: %d %s", line, code, msg)
		}
		return err
	}
	if err := step(220, ""); err != nil {
		return 0, "", err
	}
	for _, s := range []struct {
		want int
		line string
	}{{250, "EHLO upload.test"}, {220, "STARTTLS"}} {
		if err := step(s.want, s.line); err != nil {
			return 0, "", err
		}
	}
	conn = tls.Client(conn, insecureTLS())
	tp = textproto.NewConn(conn)
	auth := base64.StdEncoding.EncodeToString([]byte("\x00" + user.Username + "\x00" + user.Password))
	for _, s := range []struct {
		want int
		line string
	}{{250, "EHLO upload.test"}, {235, "AUTH PLAIN " + auth}, {250, "MAIL FROM:<" + sender + ">"},
		{250, "RCPT TO:<" + recipient + ">"}, {354, "DATA"}} {
		if err := step(s.want, s.line); err != nil {
			return 0, "", err
		}
	}
	w := bufio.NewWriterSize(conn, 64<<10)
	w.Write(header)
	w.Write(body)
	w.WriteString(".\r\n")
	if err := w.Flush(); err != nil {
		return 0, "", err
	}
	code, msg, err := tp.ReadResponse(0)
	return code, msg, err
}

// vmHWM is serve's peak resident set size so far, in bytes, from
// /proc/PID/status.
func vmHWM(t *testing.T, i *instance) int64 {
	t.Helper()
	i.mu.Lock()
	pid := i.cmd.Process.Pid
	i.mu.Unlock()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("serve's peak RSS: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("/proc/%d/status: %q", pid, line)
			}
			return kb << 10
		}
	}
	t.Fatalf("/proc/%d/status has no VmHWM", pid)
	return 0
}

// envInt is the integer in the environment variable name, or def.
func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: expected a positive integer", name, v)
	}
	return n
}
