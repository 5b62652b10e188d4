package test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// TestDiskFull puts the data directory on a 12 MiB tmpfs and fills it. While
// it is full, submissions must get a temporary refusal (452 4.3.1 or 451
// 4.3.0: the client keeps the message and retries), never a 250 that could
// not be kept and never a 5xx that would make the client drop it; /readyz
// must say why the node is not ready, while /healthz stays 200 (a restart
// frees no space). Mail accepted before the disk filled sits in the relay,
// held at the smarthost, and is delivered while the disk is full, so its
// outcome cannot be recorded. Once space is freed the server must take mail
// again without a restart, and every message it acknowledged, before or
// during the episode, must reach the smarthost.
func TestDiskFull(t *testing.T) {
	inst := newInstance(t)
	held := holdSmarthost(t, inst.sink.Addr)
	inst.configure(map[string]any{"relay.smarthost": held.addr})
	mountTmpfs(t, inst, "12m")
	inst.unthrottled()
	user := inst.standard(senderDomain, "diskfull")

	var acked []string // tokens that got a 250
	send := func(c *smtp.Client, size int) error {
		tok := newToken()
		err := sendOne(c, paddedMessage(tok, size))
		if err == nil {
			acked = append(acked, tok)
		}
		return err
	}
	c := dialAuthed(t, inst.smtpAddr, user)
	defer func() { c.Close() }()

	// Healthy: mail is accepted, and the relay takes it to the smarthost,
	// which holds it there.
	for range 3 {
		if err := send(c, 4<<10); err != nil {
			t.Fatalf("submission before the disk filled: %v", err)
		}
	}
	before := append([]string(nil), acked...)
	held.waitConnected(t)
	if code, body := readyz(t, inst); code != http.StatusOK {
		t.Fatalf("/readyz before the disk filled: %d %q, want 200", code, body)
	}

	filler := filepath.Join(inst.dataDir, "filler")
	fillDisk(t, filler)
	t.Logf("filled %s: %s", inst.dataDir, dfLine(inst.dataDir))

	// SQLite may still have room inside its own files (free pages, the
	// WAL's reusable frames), so the first submissions can rightly succeed
	// (they are stored): send until one is refused, then a few more, which
	// must all be refused too.
	var (
		refusals     []*smtp.SMTPError
		firstRefusal time.Time
	)
	for n := 0; len(refusals) < 4; n++ {
		if n == 400 {
			t.Fatalf("400 submissions of 128 KiB after the disk filled, %d acknowledged, none refused; df: %s",
				len(acked), dfLine(inst.dataDir))
		}
		err := send(c, 128<<10)
		if err == nil {
			if len(refusals) > 0 {
				t.Errorf("a submission got 250 on the full disk after %d refusal(s): once full, the disk stays full until space is freed", len(refusals))
			}
			continue
		}
		var se *smtp.SMTPError
		if !errors.As(err, &se) {
			// A client would retry, but a broken connection is not the
			// reply a full disk deserves.
			t.Errorf("submission on a full disk: the connection failed (%v), want a 4xx reply", err)
			c.Close()
			c = dialAuthed(t, inst.smtpAddr, user)
			continue
		}
		if len(refusals) == 0 {
			firstRefusal = time.Now()
		}
		refusals = append(refusals, se)
	}
	for _, se := range refusals {
		if code := replyCode(se); code != "452 4.3.1" && code != "451 4.3.0" {
			t.Errorf("submission on a full disk: got %s %s, want 452 4.3.1 (insufficient system storage) or 451 4.3.0", code, se.Message)
		}
	}
	t.Logf("full disk: %d messages acknowledged in all (%d after filling), then refused with %s %q",
		len(acked), len(acked)-len(before), replyCode(refusals[0]), refusals[0].Message)

	code, body := readyz(t, inst)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "disk full") {
		t.Errorf("/readyz on a full disk: %d %q, want 503 with a reason that says the disk is full", code, body)
	} else {
		t.Logf("/readyz on a full disk: %d %q", code, strings.TrimSpace(body))
	}
	if code, body := get(t, inst, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz on a full disk: %d %q, want 200 (a restart would not free space)", code, body)
	}
	// Reads still work: the operator can see the queue.
	if n := len(queueList(t, inst)); n < len(before) {
		t.Errorf("sesame queue list on a full disk shows %d messages; the %d held at the smarthost must be there", n, len(before))
	}

	// The relay finishes the deliveries it holds, on the full disk: the mail
	// arrives, but its outcome cannot be recorded.
	held.release()
	waitArrived(t, inst.sink, before, 30*time.Second)
	time.Sleep(500 * time.Millisecond) // let the relay try to record the outcomes
	t.Logf("full disk: the %d held messages reached the smarthost; the relay logged %d outcome(s) it could not record",
		len(before), strings.Count(inst.serveLg.String(), "relay: recording outcomes failed"))
	// Still full, whatever the relay did meanwhile (its claims commit
	// even on a full disk when they have nothing to write).
	if code, body := readyz(t, inst); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz on a full disk, %s after the first refusal: %d %q, want 503", time.Since(firstRefusal).Round(time.Millisecond), code, body)
	}
	var se *smtp.SMTPError
	if err := send(c, 4<<10); !errors.As(err, &se) || se.Code/100 != 4 {
		t.Errorf("a submission on the full disk %s after the first refusal got %v, want a 4xx reply",
			time.Since(firstRefusal).Round(time.Millisecond), err)
	}

	// Free the space: the server must take mail again by itself.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	t.Logf("freed %s: %s", inst.dataDir, dfLine(inst.dataDir))
	freed := time.Now()
	deadline := freed.Add(15 * time.Second)
	for {
		err := send(c, 4<<10)
		if err == nil {
			break
		}
		var se *smtp.SMTPError
		if errors.As(err, &se) && se.Code >= 500 {
			t.Fatalf("submission after the space was freed: %v, want 250", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("submissions still refused 15s after the space was freed: %v", err)
		}
		if se == nil {
			c.Close()
			c = dialAuthed(t, inst.smtpAddr, user)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for {
		code, body := readyz(t, inst)
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz still %d %q 15s after the space was freed", code, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("recovered %s after the space was freed: 250 and /readyz 200", time.Since(freed).Round(time.Millisecond))

	waitArrived(t, inst.sink, acked, 30*time.Second)
	// Messages whose delivery could not be recorded stay leased; the relay
	// delivers them again when the lease runs out (duplicates, not losses).
	t.Logf("all %d acknowledged messages reached the smarthost; %d message(s) still in the queue, to be delivered again when their lease runs out",
		len(acked), len(queueList(t, inst)))

	// A restart releases those leases at once, and shows the database came
	// through the episode intact: the queue drains.
	inst.stop()
	inst.start()
	waitQueueEmpty(t, inst, 30*time.Second)
	dups := 0
	for _, tok := range acked {
		if len(inst.sink.Keyed(tok)) > 1 {
			dups++
		}
	}
	t.Logf("after a restart the queue drained; %d message(s) were delivered twice", dups)
}

// waitQueueEmpty polls `sesame queue list --json` until the queue is empty.
func waitQueueEmpty(t *testing.T, inst *instance, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		list := queueList(t, inst)
		if len(list) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the queue still holds %d messages %s after the last restart; queue list --json:\n%s",
				len(list), timeout, inst.mustAdmin(t, "queue", "list", "--json"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func replyCode(se *smtp.SMTPError) string {
	return fmt.Sprintf("%d %d.%d.%d", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
}

// queueList is `sesame queue list --json`.
func queueList(t *testing.T, inst *instance) []mxQueueEntry {
	t.Helper()
	out := inst.mustAdmin(t, "queue", "list", "--json")
	var list []mxQueueEntry
	if err := json.Unmarshal(out, &list); err != nil {
		t.Fatalf("sesame queue list --json printed %q: %v", out, err)
	}
	return list
}

// heldSmarthost stands between the relay and the sink: it accepts
// connections but passes no byte either way until release, so the mail the
// relay is delivering stays claimed, in flight, for as long as a test needs.
type heldSmarthost struct {
	addr      string
	connected chan struct{} // closed at the first connection
	open      chan struct{} // closed by release
	once      sync.Once
}

func holdSmarthost(t *testing.T, target string) *heldSmarthost {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatalf("held smarthost: %v", err)
	}
	h := &heldSmarthost{addr: ln.Addr().String(), connected: make(chan struct{}), open: make(chan struct{})}
	var (
		mu    sync.Mutex
		conns []net.Conn
		done  = make(chan struct{})
	)
	track := func(c net.Conn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}
	var first sync.Once
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			track(c)
			first.Do(func() { close(h.connected) })
			go func() {
				defer c.Close()
				select {
				case <-h.open:
				case <-done:
					return
				}
				up, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				track(up)
				defer up.Close()
				go func() {
					io.Copy(up, c)
					up.Close()
				}()
				io.Copy(c, up)
			}()
		}
	}()
	t.Cleanup(func() {
		close(done)
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return h
}

// waitConnected waits until the relay has connected: it has claimed mail.
func (h *heldSmarthost) waitConnected(t *testing.T) {
	t.Helper()
	select {
	case <-h.connected:
	case <-time.After(30 * time.Second):
		t.Fatal("the relay did not connect to the smarthost within 30s of the first submission")
	}
}

func (h *heldSmarthost) release() { h.once.Do(func() { close(h.open) }) }

// mountTmpfs mounts a tmpfs of the given size on the instance's data
// directory, unmounted when the test ends (after serve has stopped). It
// skips the test only where mounting is impossible: not root, or no
// CAP_SYS_ADMIN (an unprivileged container).
func mountTmpfs(t *testing.T, inst *instance, size string) {
	t.Helper()
	if err := os.MkdirAll(inst.dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", inst.dataDir, "tmpfs", 0, "size="+size+",mode=0700"); err != nil {
		if errors.Is(err, syscall.EPERM) || os.Geteuid() != 0 {
			t.Skipf("cannot mount a tmpfs on %s (%v): this test needs root with CAP_SYS_ADMIN, as in CI", inst.dataDir, err)
		}
		t.Fatalf("mount -t tmpfs -o size=%s tmpfs %s: %v", size, inst.dataDir, err)
	}
	t.Cleanup(func() {
		inst.stop() // serve holds the database open: stop it first
		if err := syscall.Unmount(inst.dataDir, 0); err != nil {
			t.Errorf("umount %s: %v; detaching it", inst.dataDir, err)
			syscall.Unmount(inst.dataDir, syscall.MNT_DETACH)
		}
	})
}

// fillDisk writes path until the file system has no byte left.
func fillDisk(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for chunk := len(buf); chunk >= 512; {
		if _, err := f.Write(buf[:chunk]); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the disk: %v", err)
			}
			chunk /= 2
		}
	}
}

// dfLine is the file system's size and free space, for the log.
func dfLine(path string) string {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%d KiB of %d KiB free", st.Bavail*uint64(st.Bsize)>>10, st.Blocks*uint64(st.Bsize)>>10)
}

// paddedMessage is a message carrying token, grown to about size bytes.
func paddedMessage(token string, size int) []byte {
	s := &submission{from: sender, to: recipient, token: token}
	msg := s.message("the disk-full test")
	line := strings.Repeat("0123456789abcdef", 4) + "\r\n"
	var b strings.Builder
	b.Write(msg)
	for b.Len() < size {
		b.WriteString(line)
	}
	return []byte(b.String())
}

// dialAuthed opens a go-smtp client with STARTTLS and AUTH PLAIN.
func dialAuthed(t *testing.T, addr string, user creds) *smtp.Client {
	t.Helper()
	c, err := smtp.DialStartTLS(addr, insecureTLS())
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	c.CommandTimeout = 30 * time.Second
	c.SubmissionTimeout = 30 * time.Second
	if err := c.Auth(sasl.NewPlainClient("", user.Username, user.Password)); err != nil {
		c.Close()
		t.Fatalf("AUTH: %v", err)
	}
	return c
}

func get(t *testing.T, inst *instance, path string) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + inst.httpAddr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func readyz(t *testing.T, inst *instance) (int, string) {
	t.Helper()
	return get(t, inst, "/readyz")
}
