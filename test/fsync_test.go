package test

import (
	"bufio"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestFsyncBeforeQueued checks "250 only once the message is on disk" at
// the level of system calls: serve runs under strace, swaks submits one
// message, and the trace must show the message's bytes written to the
// SQLite WAL and that file fsynced before the reply goes out on the
// client's socket.
//
// The reply is inside TLS, so its text cannot be seen in the trace; the
// order of events identifies it instead:
//
//  1. P, the first write into a file of the data directory whose bytes
//     hold the message's token (in its Subject and body): the message row
//     going into the WAL. Sesame stores a message only once the whole DATA
//     has been read, so P follows the final dot.
//  2. W, the first write on the client's socket (the connection accepted
//     on the submission port) that starts after P has returned. Between
//     the end of DATA and its reply the server writes nothing else there,
//     and it reads nothing more from the client (checked), so W is the 250.
//  3. An fsync or fdatasync of P's file must start after P returned and
//     return 0 before W starts.
//
// Why the order of lines can be trusted across threads: a traced thread
// stays stopped at each call's return until strace has written that line,
// so a reply that waits for the fsync (through the store's committer, on
// another thread) always comes after the fsync's line. A reply that did not
// wait would show up before it, unless it happened to lose the race. The -tt
// times are only for the log.
func TestFsyncBeforeQueued(t *testing.T) {
	inst := newInstance(t)
	strace := requireTool(t, "strace")
	probeStrace(t, strace)
	inst.addDomain(t, senderDomain)
	user := inst.createUser(t, "fsync")

	trace := filepath.Join(t.TempDir(), "strace.out")
	startTraced(t, inst, strace, trace)
	tok := newToken()
	out, err := swaksFrom(t, inst, user, tok, "")
	if err != nil || !queuedRE.MatchString(out) {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	inst.expectDelivered(t, tok, senderDomain)
	stopTraced(t, inst)

	calls, err := parseStrace(trace)
	if err != nil {
		t.Fatal(err)
	}
	dataDir, _ := filepath.Abs(inst.dataDir)
	summary, err := fsyncBeforeReply(calls, tok, "TCP:["+inst.smtpAddr+"->", dataDir)
	if err != nil {
		t.Errorf("%v (the trace is kept at %s)", err, keepTrace(t, trace))
		return
	}
	t.Log(summary)
}

// fsyncBeforeReply finds in calls P, W and the fsync between them (see
// TestFsyncBeforeQueued) for the message carrying token, the client socket
// whose -yy path starts with client, and the store's files under dataDir.
func fsyncBeforeReply(calls []straceCall, token, client, dataDir string) (string, error) {
	p := -1
	for n, c := range calls {
		if isWrite(c.name) && strings.HasPrefix(c.path, dataDir+"/") && strings.Contains(c.data, token) && c.ok() {
			p = n
			break
		}
	}
	if p < 0 {
		return "", fmt.Errorf("no write of the message (token %s) into a file under %s in the trace", token, dataDir)
	}
	P := calls[p]
	w := -1
	for n, c := range calls {
		if isWrite(c.name) && strings.HasPrefix(c.path, client) && c.entry > P.exit {
			w = n
			break
		}
	}
	if w < 0 {
		return "", fmt.Errorf("no write on the client's socket (%s...) after the message was written to %s", client, P.path)
	}
	W := calls[w]
	// W answers what was read before P: the server read nothing more from
	// the client between the message's end and the reply.
	for _, c := range calls {
		if c.name == "read" && strings.HasPrefix(c.path, client) && c.ok() && c.exit > P.entry && c.entry < W.entry {
			return "", fmt.Errorf("a read on the client's socket (%s) between the message's write (%s) and the next write on it (%s): "+
				"that write may not be the reply to the DATA", c.time, P.time, W.time)
		}
	}
	for _, c := range calls {
		if (c.name == "fsync" || c.name == "fdatasync") && c.path == P.path && c.entry > P.exit && c.exit < W.entry && c.ok() {
			return fmt.Sprintf("message written to %s by %s at %s; %s of it entered at %s and returned before the reply was written at %s",
				filepath.Base(P.path), P.name, P.time, c.name, c.time, W.time), nil
		}
	}
	return "", fmt.Errorf("the reply on the client's socket (%s at %s) was written before any fsync of %s that followed the message's write (%s at %s)",
		W.name, W.time, P.path, P.name, P.time)
}

// TestFsyncOrderCheck runs fsyncBeforeReply on made-up traces, so that the
// check above is known to fail when the order is wrong, not only to pass.
func TestFsyncOrderCheck(t *testing.T) {
	if !e2eEnabled() {
		t.Skip("end-to-end test skipped: set SESAME_E2E=1 to run it")
	}
	const (
		tok    = "e2e-0123456789abcdef"
		client = "TCP:[127.0.0.1:587->"
		read   = `100 07:00:00.000001 read(5<TCP:[127.0.0.1:587->127.0.0.1:5000]>, "\27\3\3\0(", 4096) = 100`
		store  = `101 07:00:00.000002 pwrite64(8</d/sesame.db-wal>, "\r\0\0From: a@example.com\r\nSubject: ` + tok + `\r\n", 4096, 32) = 4096`
		relay  = `100 07:00:00.000004 write(9<TCP:[127.0.0.1:33000->127.0.0.2:25]>, "EHLO x\r\n", 8) = 8`
		sync   = `101 07:00:00.000003 fsync(8</d/sesame.db-wal>) = 0`
		enter  = `101 07:00:00.000003 fsync(8</d/sesame.db-wal> <unfinished ...>`
		back   = `101 07:00:00.000005 <... fsync resumed>) = 0`
		reply  = `100 07:00:00.000006 write(5<TCP:[127.0.0.1:587->127.0.0.1:5000]>, "\27\3\3", 3) = 3`
	)
	for _, tt := range []struct {
		name  string
		lines []string
		ok    bool
	}{
		{"in order", []string{read, store, sync, relay, reply}, true},
		{"fsync interleaved with another thread", []string{read, store, enter, relay, back, reply}, true},
		{"reply while the fsync runs", []string{read, store, enter, reply, back}, false},
		{"reply before the fsync", []string{read, store, reply, sync}, false},
		{"fsync before the write", []string{read, sync, store, reply}, false},
		{"fsync of another file", []string{read, store, strings.ReplaceAll(sync, "sesame.db-wal", "other"), reply}, false},
		{"fsync failed", []string{read, store, strings.ReplaceAll(sync, "= 0", "= -1 EIO (Input/output error)"), reply}, false},
		{"a read between message and reply", []string{read, store, sync, strings.ReplaceAll(read, ".000001", ".000004"), reply}, false},
		{"no write of the message", []string{read, strings.ReplaceAll(store, tok, "e2e-other"), sync, reply}, false},
	} {
		path := filepath.Join(t.TempDir(), "trace")
		if err := os.WriteFile(path, []byte(strings.Join(tt.lines, "\n")+"\n+++ exited with 0 +++\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		calls, err := parseStrace(path)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		msg, err := fsyncBeforeReply(calls, tok, client, "/d")
		t.Logf("%s: %s %v", tt.name, msg, err)
		if (err == nil) != tt.ok {
			t.Errorf("%s: error %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

// probeStrace skips the test when this machine does not let strace trace
// (ptrace forbidden in a container, for instance).
func probeStrace(t *testing.T, strace string) {
	t.Helper()
	out, err := exec.Command(strace, "-f", "-o", os.DevNull, "/bin/true").CombinedOutput()
	if err != nil {
		t.Skipf("strace cannot trace here (ptrace not permitted?): %v: %s", err, out)
	}
}

// startTraced runs serve under strace as startOnce runs it, and waits for
// /healthz. The instance's cmd is strace; stopTraced stops serve itself.
func startTraced(t *testing.T, i *instance, strace, trace string) {
	t.Helper()
	i.mu.Lock()
	if i.cmd != nil {
		i.mu.Unlock()
		t.Fatal("serve is already running")
	}
	fmt.Fprintf(&i.serveLg, "----- %s: strace ... sesame serve --config %s\n", time.Now().Format(time.RFC3339Nano), i.cfgPath)
	// -yy names each descriptor (file path, or TCP:[local->peer]); -s
	// keeps whole WAL pages so the token can be found; pwrite64 is how
	// SQLite writes its files.
	cmd := exec.Command(strace, "-f", "-tt", "-yy", "-s", "65536", "-e", "signal=none",
		"-e", "trace=fsync,fdatasync,read,write,writev,pwrite64,pwritev,sendto,sendmsg",
		"-o", trace, sesameBin, "serve", "--config", i.cfgPath)
	cmd.Stdout, cmd.Stderr = &i.serveLg, &i.serveLg
	if err := cmd.Start(); err != nil {
		i.mu.Unlock()
		t.Fatal(err)
	}
	exited := make(chan struct{})
	i.cmd, i.exited = cmd, exited
	i.mu.Unlock()
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(&i.serveLg, "----- %s: strace exited: %v\n", time.Now().Format(time.RFC3339Nano), err)
		close(exited)
	}()
	// Before the instance's own cleanup, which would signal strace.
	t.Cleanup(func() { stopTraced(t, i) })
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(60 * time.Second) // slower under strace
	for {
		select {
		case <-exited:
			i.mu.Lock()
			i.cmd = nil
			i.mu.Unlock()
			if strings.Contains(i.serveLg.String(), "Operation not permitted") {
				t.Skipf("strace cannot trace serve (ptrace not permitted?):\n%s", tail(i.serveLg.String(), 2000))
			}
			t.Fatal("serve under strace exited before it was ready")
		default:
		}
		if resp, err := client.Get("http://" + i.httpAddr + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("serve under strace did not answer /healthz within 60s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stopTraced sends SIGTERM to serve (strace's child) and waits for strace
// to exit, which it does once serve has. Signalling strace instead would
// make it detach at once and leave serve running on.
func stopTraced(t *testing.T, i *instance) {
	t.Helper()
	i.mu.Lock()
	cmd, exited := i.cmd, i.exited
	i.cmd = nil
	i.mu.Unlock()
	if cmd == nil {
		return
	}
	pid, err := childOf(cmd.Process.Pid)
	if err != nil {
		t.Errorf("stopping serve: %v", err)
		cmd.Process.Kill()
		<-exited
		return
	}
	syscall.Kill(pid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Errorf("serve under strace did not exit within 30s of SIGTERM")
		syscall.Kill(pid, syscall.SIGKILL)
		<-exited
	}
}

// childOf returns the process whose parent is ppid, from /proc.
func childOf(ppid int) (int, error) {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, s := range stats {
		b, err := os.ReadFile(s)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		rest := string(b[strings.LastIndexByte(string(b), ')')+1:])
		f := strings.Fields(rest)
		if len(f) > 1 && f[1] == strconv.Itoa(ppid) {
			return strconv.Atoi(filepath.Base(filepath.Dir(s)))
		}
	}
	return 0, fmt.Errorf("no child of strace (pid %d) in /proc", ppid)
}

func keepTrace(t *testing.T, trace string) string {
	dst := filepath.Join(os.TempDir(), fmt.Sprintf("sesame-%s-strace-%d.out", t.Name(), os.Getpid()))
	if b, err := os.ReadFile(trace); err == nil && os.WriteFile(dst, b, 0o600) == nil {
		return dst
	}
	return trace + " (removed with the test's temporary directory)"
}

// straceCall is one system call of the trace: the lines on which it
// entered and returned (the same line unless another thread's call came
// in between), its descriptor's path as -yy shows it, and for writes the
// bytes as strace quotes them.
type straceCall struct {
	name        string
	path        string
	data        string
	ret         string
	time        string // of the entry
	entry, exit int    // line numbers (0-based)
}

func (c straceCall) ok() bool { return c.ret != "" && !strings.HasPrefix(c.ret, "-1") }

func isWrite(name string) bool {
	switch name {
	case "write", "writev", "pwrite64", "pwritev", "sendto", "sendmsg":
		return true
	}
	return false
}

var (
	// 1234 07:12:13.123456 name(5</path>, "data"..., 40) = 40
	// 1234 07:12:13.123456 name(5</path>, ... <unfinished ...>
	// 1234 07:12:13.123456 <... name resumed>...) = 0
	straceLine = regexp.MustCompile(`^(\d+) +(\d\d:\d\d:\d\d\.\d+) (.*)$`)
	// The path ends at the first ">" followed by what follows a first
	// argument: a socket's "TCP:[a:1->b:2]" has a ">" of its own.
	straceEntry   = regexp.MustCompile(`^(\w+)\(\d+<(.*?)>(, .*|\).*| <unfinished \.\.\.>)$`)
	straceResumed = regexp.MustCompile(`^<\.\.\. (\w+) resumed>.*\) += (.*)$`)
	straceReturn  = regexp.MustCompile(`\) += ([^=]*)$`)
	straceData    = regexp.MustCompile(`^, \[?\{?(?:iov_base=)?"((?:[^"\\]|\\.)*)"`)
)

// parseStrace reads the calls on a descriptor from an strace -f -tt -yy
// output file, in the order they entered the kernel.
func parseStrace(path string) ([]straceCall, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var calls []straceCall
	pending := map[string]int{} // pid -> index in calls of its unfinished call
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for n := 0; sc.Scan(); n++ {
		m := straceLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue // "+++ exited ..." and the like
		}
		pid, at, rest := m[1], m[2], m[3]
		if r := straceResumed.FindStringSubmatch(rest); r != nil {
			if k, ok := pending[pid]; ok && calls[k].name == r[1] {
				calls[k].exit, calls[k].ret = n, strings.TrimSpace(r[2])
				delete(pending, pid)
			}
			continue
		}
		e := straceEntry.FindStringSubmatch(rest)
		if e == nil {
			continue // a call without a descriptor argument
		}
		c := straceCall{name: e[1], path: e[2], time: at, entry: n, exit: n}
		if d := straceData.FindStringSubmatch(e[3]); d != nil && isWrite(c.name) {
			c.data = d[1]
		}
		if strings.HasSuffix(rest, "<unfinished ...>") {
			pending[pid] = len(calls)
		} else if r := straceReturn.FindStringSubmatch(rest); r != nil {
			c.ret = strings.TrimSpace(r[1])
		}
		calls = append(calls, c)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if len(calls) == 0 {
		return nil, errors.New("the strace output holds no system calls")
	}
	return calls, nil
}
