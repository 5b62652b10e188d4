package test

// A flooder floods the inbound listener (port 25 in production, open to
// anyone) with large messages that are no reports, to a feedback address:
// every one used to be kept whole for the event retention, so a small data
// volume filled in seconds and submission answered 452 4.3.1. Now what is
// kept is bounded per message, per client and in total, and a free-space
// reserve stays with the queue.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

const (
	// floodCap is inbound.max_stored_bytes in the flood test.
	floodCap = 8 << 20
	// floodReserve is its inbound.min_free_bytes.
	floodReserve = 16 << 20
)

// floodMessage is an unparseable message of size bytes.
func floodMessage(size int) []byte {
	var b strings.Builder
	b.WriteString("From: stranger@example.org\r\nTo: fbl@example.com\r\nSubject: not a report\r\n\r\n")
	line := strings.Repeat("garbage ", 9) + "\r\n"
	for b.Len() < size {
		b.WriteString(line)
	}
	return []byte(b.String())
}

// flooder is an SMTP client of the inbound listener from one loopback
// address, sending as a flooder does: no SIZE, one transaction after the
// other on one connection.
type flooder struct {
	ip, addr string
	c        *smtp.Client
}

func (s *flooder) dial(t *testing.T) error {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(s.ip)}, Timeout: 30 * time.Second}
	conn, err := d.Dial("tcp", s.addr)
	if err != nil {
		return err
	}
	s.c = smtp.NewClient(conn)
	s.c.CommandTimeout, s.c.SubmissionTimeout = 60*time.Second, 60*time.Second
	return s.c.Hello("flood.example.org")
}

// send sends msg to the feedback address; nil when it was accepted.
func (s *flooder) send(t *testing.T, msg []byte) error {
	if s.c == nil {
		if err := s.dial(t); err != nil {
			return err
		}
	}
	err := func() error {
		if err := s.c.Mail("", nil); err != nil {
			return err
		}
		if err := s.c.Rcpt("fbl@example.com", nil); err != nil {
			return err
		}
		w, err := s.c.Data()
		if err != nil {
			return err
		}
		if _, err := w.Write(msg); err != nil {
			w.Close()
			return err
		}
		return w.Close()
	}()
	var se *smtp.SMTPError
	if err != nil && !errors.As(err, &se) {
		s.close() // a broken connection: the next send dials again
	}
	return err
}

func (s *flooder) close() {
	if s.c != nil {
		s.c.Close()
		s.c = nil
	}
}

// flood sends msg from ip until a reply refuses it, at most max times; it
// returns how many were accepted and the refusal (nil if none).
func flood(t *testing.T, addr, ip string, msg []byte, max int) (accepted int, refusal error) {
	s := &flooder{ip: ip, addr: addr}
	defer s.close()
	for range max {
		err := s.send(t, msg)
		if err == nil {
			accepted++
			continue
		}
		return accepted, err
	}
	return accepted, nil
}

func isReply(err error, code int, enh smtp.EnhancedCode) bool {
	var se *smtp.SMTPError
	return errors.As(err, &se) && se.Code == code && se.EnhancedCode == enh
}

// usedBytes is how much of the file system at path is in use.
func usedBytes(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		t.Fatal(err)
	}
	return (st.Blocks - st.Bfree) * uint64(st.Bsize)
}

func freeBytes(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Bavail * uint64(st.Bsize)
}

// submitOne submits a message and checks it reaches the smarthost.
func submitOne(t *testing.T, inst *instance, user creds, what string) {
	t.Helper()
	c := dialAuthed(t, inst.smtpAddr, user)
	defer c.Close()
	tok := newToken()
	if err := sendOne(c, paddedMessage(tok, 4<<10)); err != nil {
		t.Fatalf("submission %s: %v, want 250 (the inbound listener must never take submission's room)", what, err)
	}
	waitArrived(t, inst.sink, []string{tok}, 60*time.Second)
}

func TestInboundFloodDiskFull(t *testing.T) {
	inst := newInstance(t)
	mountTmpfs(t, inst, "64m")
	inst.unthrottled()
	addr := freeAddr(t, "127.0.0.1")
	inst.configure(map[string]any{
		"inbound.listen":             []string{addr},
		"inbound.feedback_addresses": []string{"fbl@example.com"},
		// The documented defaults, but for what is kept in all and the
		// reserve: the 64 MiB disk is smaller than their defaults.
		"inbound.max_stored_bytes": floodCap,
		"inbound.min_free_bytes":   floodReserve,
	})
	user := inst.standard(senderDomain, "flood")
	t.Logf("started: %s", dfLine(inst.dataDir))

	// Larger than inbound.max_message_bytes (1 MiB by default): refused
	// for good, and nothing kept.
	big := &flooder{ip: "127.0.0.40", addr: addr}
	if err := big.send(t, floodMessage(2<<20)); !isReply(err, 552, smtp.EnhancedCode{5, 3, 4}) {
		t.Errorf("a 2 MiB message to the inbound listener: %v, want 552 5.3.4", err)
	}
	big.close()

	// One address: its hourly share (client_bytes_per_hour, 4 MiB of what
	// is kept) runs out, and it is refused with 450 4.7.1.
	msg := floodMessage(512 << 10)
	start := time.Now()
	one, refusal := flood(t, addr, "127.0.0.1", msg, 200)
	t.Logf("127.0.0.1: %d messages of %d KiB accepted in %s, then %v; %s", one, len(msg)>>10,
		time.Since(start).Round(time.Millisecond), refusal, dfLine(inst.dataDir))
	if !isReply(refusal, 450, smtp.EnhancedCode{4, 7, 1}) {
		t.Errorf("one client flooding: refused with %v after %d messages, want 450 4.7.1 (its hourly share)", refusal, one)
	}
	if again, refusal := flood(t, addr, "127.0.0.1", msg, 1); again != 0 || !isReply(refusal, 450, smtp.EnhancedCode{4, 7, 1}) {
		t.Errorf("the same client again: %d accepted, %v; want 450 4.7.1", again, refusal)
	}

	// Several addresses at once: what is kept in all reaches
	// inbound.max_stored_bytes, and every client gets 452 4.3.1.
	var wg sync.WaitGroup
	var mu sync.Mutex
	refusals := map[string]int{}
	many := 0
	start = time.Now()
	for n := 2; n <= 9; n++ {
		wg.Go(func() {
			ip := fmt.Sprintf("127.0.0.%d", n)
			accepted, refusal := flood(t, addr, ip, msg, 200)
			mu.Lock()
			defer mu.Unlock()
			many += accepted
			var se *smtp.SMTPError
			if errors.As(refusal, &se) {
				refusals[replyCode(se)]++
			} else {
				refusals[fmt.Sprint(refusal)]++
			}
		})
	}
	wg.Wait()
	t.Logf("127.0.0.2-9: %d messages accepted in %s, then refused: %v; %s", many,
		time.Since(start).Round(time.Millisecond), refusals, dfLine(inst.dataDir))
	if refusals["452 4.3.1"] == 0 {
		t.Errorf("8 clients flooding: refusals %v, want 452 4.3.1 once the total cap is reached", refusals)
	}
	for code := range refusals {
		if code != "452 4.3.1" && code != "450 4.7.1" {
			t.Errorf("8 clients flooding: refused with %s, want 452 4.3.1 or 450 4.7.1", code)
		}
	}

	// What is kept stays within the cap, and the disk has room.
	list := inboundEntries(t, inst)
	var kept int64
	for _, m := range list {
		kept += m.KeptBytes
		if !m.Truncated || m.Size != int64(len(msg)) {
			t.Errorf("inbound message %d: %d bytes received, truncated %v; want %d, truncated", m.ID, m.Size, m.Truncated, len(msg))
			break
		}
	}
	used := usedBytes(t, inst.dataDir)
	t.Logf("kept: %d messages, %d KiB (cap %d KiB); data directory: %d KiB used", len(list), kept>>10, floodCap>>10, used>>10)
	if kept > floodCap || len(list) != one+many {
		t.Errorf("kept %d messages of %d bytes, want the %d accepted within %d bytes", len(list), kept, one+many, floodCap)
	}
	if used > 32<<20 {
		t.Errorf("the data directory uses %d KiB after the flood, want well under the 64 MiB disk", used>>10)
	}
	page := scrape(t, inst)
	for sample, min := range map[string]float64{
		`sesame_inbound_refused_total{reason="too_large"}`:   1,
		`sesame_inbound_refused_total{reason="client_rate"}`: 2,
		`sesame_inbound_refused_total{reason="storage_cap"}`: 1,
		`sesame_inbound_truncated_total`:                     float64(one + many),
		`sesame_inbound_messages_total{status="unparsed"}`:   float64(one + many),
	} {
		if v, _ := metricValue(t, page, sample); v < min {
			t.Errorf("/metrics: %s %v, want at least %v", sample, v, min)
		}
	}
	if v, _ := metricValue(t, page, "sesame_inbound_stored_bytes"); v != float64(kept) {
		t.Errorf("/metrics: sesame_inbound_stored_bytes %v, want %d", v, kept)
	}

	// Submission is untouched.
	submitOne(t, inst, user, "after the flood")

	// The operator cleans up: one message, then a client's.
	id := strconv.FormatInt(list[0].ID, 10)
	if out := string(inst.mustAdmin(t, "inbound", "delete", id)); !strings.Contains(out, "Deleted") {
		t.Errorf("inbound delete %s: %q", id, out)
	}
	if status, _, stderr := inst.adminStatus(t, "inbound", "show", id); status != 1 || !strings.Contains(stderr, "no inbound message") {
		t.Errorf("inbound show of a deleted message: %d %q", status, stderr)
	}
	if out := string(inst.mustAdmin(t, "inbound", "purge", "--before", "1h")); !strings.Contains(out, "Deleted 0 ") {
		t.Errorf("inbound purge --before 1h, nothing that old: %q", out)
	}
	out := string(inst.mustAdmin(t, "inbound", "purge", "--unparsed", "--client", "127.0.0.1"))
	if !strings.Contains(out, fmt.Sprintf("Deleted %d ", one-boolInt(list[0].Client == "127.0.0.1"))) {
		t.Errorf("inbound purge --unparsed --client 127.0.0.1 of its %d messages: %q", one, out)
	}
	for _, m := range inboundEntries(t, inst) {
		if m.Client == "127.0.0.1" {
			t.Fatalf("message %d of 127.0.0.1 left after its purge", m.ID)
		}
	}

	// Less free space than the reserve: the listener takes nothing,
	// submission still does.
	filler := filepath.Join(inst.dataDir, "filler")
	fillTo(t, filler, floodReserve/2, inst.dataDir)
	t.Logf("filled: %s", dfLine(inst.dataDir))
	if _, refusal := flood(t, addr, "127.0.0.50", floodMessage(10<<10), 1); !isReply(refusal, 452, smtp.EnhancedCode{4, 3, 1}) {
		t.Errorf("inbound mail below the free-space reserve: %v, want 452 4.3.1", refusal)
	}
	if v, _ := metricValue(t, scrape(t, inst), `sesame_inbound_refused_total{reason="disk_reserve"}`); v < 1 {
		t.Errorf("/metrics: disk_reserve refusals %v, want 1", v)
	}
	submitOne(t, inst, user, "below the inbound reserve")
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}

	// Everything unparsed purged, the listener takes mail again at once.
	inst.mustAdmin(t, "inbound", "purge", "--unparsed")
	if n := len(inboundEntries(t, inst)); n != 0 {
		t.Errorf("%d messages left after purge --unparsed", n)
	}
	if accepted, refusal := flood(t, addr, "127.0.0.51", floodMessage(10<<10), 1); accepted != 1 {
		t.Errorf("inbound mail after the purge: %v, want 250", refusal)
	}

	// What a stranger chose reaches the operator's terminal escaped (a
	// message's text, a report's Final-Recipient), the bytes as they are
	// only with --raw.
	evil := &flooder{ip: "127.0.0.52", addr: addr}
	defer evil.close()
	body := []byte("Subject: \x1b[2J\x1b]0;pwned\x07hi\r\n\r\nbody\r\n")
	if err := evil.send(t, body); err != nil {
		t.Fatalf("a message with escape sequences: %v", err)
	}
	id = strconv.FormatInt(inboundEntries(t, inst)[0].ID, 10)
	dsn := strings.ReplaceAll(postfixDSN("\x1b]0;pwned\x07gone@example.net", "5.1.1", "550 5.1.1 \x1b[2J no such user", "0123456789ABCDEF"), "\n", "\r\n")
	if err := evil.send(t, []byte(dsn)); err != nil {
		t.Fatalf("a DSN with escape sequences: %v", err)
	}
	for _, args := range [][]string{{"inbound", "list"}, {"inbound", "show", id}} {
		out := string(inst.mustAdmin(t, args...))
		if strings.ContainsAny(out, "\x1b\x07") {
			t.Errorf("sesame %s prints the stranger's escape sequences raw:\n%q", strings.Join(args, " "), out)
		}
		if args[1] == "show" && !strings.Contains(out, `\x1b[2J\x1b]0;pwned\x07hi`) {
			t.Errorf("sesame inbound show does not show the escaped subject:\n%q", out)
		}
	}
	if out := inst.mustAdmin(t, "inbound", "show", id, "--raw"); string(out) != string(body) {
		t.Errorf("sesame inbound show --raw printed %q, want the bytes received %q", out, body)
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// fillTo writes path until the file system at dir has about free bytes
// left.
func fillTo(t *testing.T, path string, free uint64, dir string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for freeBytes(t, dir) > free+uint64(len(buf)) {
		if _, err := f.Write(buf); err != nil {
			t.Fatalf("filling the disk: %v", err)
		}
	}
}
