package test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/sesame-mail/sesame/testkit"
)

// TestBenchEndToEnd runs the benchmark tools the way bench/submission.sh
// does, with a small load, so CI proves they measure what they claim:
// `sesame-bench dns` serves the domain's DKIM record (for `domain verify`),
// `sesame-bench sink` stands in for the smarthost and verifies every
// signature with the keys of `domain add --json`, and `sesame-bench send`
// submits 4 x 75 messages over persistent STARTTLS + AUTH PLAIN sessions and
// 2 x 10 with a new implicit-TLS session each. Every message must be
// accepted, reach the sink, and verify. It checks correctness, not speed.
func TestBenchEndToEnd(t *testing.T) {
	inst := newInstance(t)
	inst.unthrottled()
	bench := buildSesameBench(t)

	domainJSON := filepath.Join(inst.dir, "domain.json")
	out := inst.mustAdmin(t, "domain", "add", senderDomain, "--json")
	if err := os.WriteFile(domainJSON, out, 0o600); err != nil {
		t.Fatal(err)
	}
	var d domainInfo
	if err := json.Unmarshal(out, &d); err != nil || len(d.dkimRecords()) == 0 {
		t.Fatalf("domain add --json printed %q (%v): want a DKIM record", out, err)
	}

	dnsAddr := startBenchDNS(t, bench, domainJSON, d.dkimRecords()[0].Name)
	const persistent, perConn, fresh, perFresh = 4, 75, 2, 10
	total := persistent*perConn + fresh*perFresh
	sink := startBenchProc(t, bench, "sink", "--listen", "127.0.0.2:0", "--expect", strconv.Itoa(total),
		"--timeout", "90s", "--report-every", "0", "--self-signed", "--dkim-records", domainJSON)
	sinkAddr := sink.waitFor(t, regexp.MustCompile(`sink: listening on (\S+)`))

	inst.configure(map[string]any{"relay.dns_servers": []string{dnsAddr}, "relay.smarthost": sinkAddr})
	inst.verifyDomain(t, senderDomain)
	user := inst.createUser(t, "bench")
	inst.start()

	sendArgs := func(addr, tlsMode string, conns, per int) []string {
		return []string{"send", "--addr", addr, "--tls", tlsMode, "--auth", "plain",
			"--user", user.Username, "--password", user.Password, "--connections", strconv.Itoa(conns),
			"--messages", strconv.Itoa(per), "--size", "10240", "--from", "shop@" + senderDomain,
			"--to-domain", "example.net", "--timeout", "20s", "--json-only"}
	}
	runBenchSend(t, bench, persistent*perConn, sendArgs(inst.smtpAddr, "starttls", persistent, perConn)...)
	runBenchSend(t, bench, fresh*perFresh, append(sendArgs(inst.tlsAddr, "implicit", fresh, perFresh), "--new-connection")...)

	code := sink.wait(t, 60*time.Second)
	var rep struct {
		Received     int  `json:"received"`
		Connections  int  `json:"connections"`
		DKIMChecked  bool `json:"dkim_checked"`
		DKIMVerified int  `json:"dkim_verified"`
		DKIMFailed   int  `json:"dkim_failed"`
		DKIMUnsigned int  `json:"dkim_unsigned"`
	}
	sink.decodeLastJSON(t, &rep)
	t.Logf("sink: %+v", rep)
	if code != 0 {
		t.Errorf("sesame-bench sink exited %d; stderr:\n%s", code, sink.stderr.String())
	}
	if rep.Received != total || rep.Connections == 0 {
		t.Errorf("sink received %d messages on %d connections, want %d", rep.Received, rep.Connections, total)
	}
	if !rep.DKIMChecked || rep.DKIMVerified != total || rep.DKIMFailed != 0 || rep.DKIMUnsigned != 0 {
		t.Errorf("sink DKIM figures %+v: want all %d verified; stderr:\n%s", rep, total, sink.stderr.String())
	}
}

// buildSesameBench builds cmd/sesame-bench for one test.
func buildSesameBench(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = "/usr/local/go/bin/go"
	}
	bin := filepath.Join(t.TempDir(), "sesame-bench")
	cmd := exec.Command(goTool, "build", "-o", bin, "./cmd/sesame-bench")
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/sesame-bench: %v\n%s", err, out)
	}
	return bin
}

// benchProc is a sesame-bench process running beside the test. It is
// interrupted (SIGTERM, as Ctrl-C) at the end of the test, and its stderr is
// logged if the test failed.
type benchProc struct {
	name           string
	cmd            *exec.Cmd
	stdout, stderr testkit.Buffer
	exited         chan struct{}
	err            error // set before exited is closed
}

func startBenchProc(t *testing.T, bin string, args ...string) *benchProc {
	t.Helper()
	p := &benchProc{name: "sesame-bench " + args[0], exited: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("%s: %v", p.name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("%s stderr:\n%s", p.name, tail(p.stderr.String(), 16<<10))
		}
	})
	return p
}

// waitFor waits until the process's stderr matches re and returns the
// first submatch.
func (p *benchProc) waitFor(t *testing.T, re *regexp.Regexp) string {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if m := re.FindStringSubmatch(p.stderr.String()); m != nil {
			return m[1]
		}
		select {
		case <-p.exited:
			t.Fatalf("%s exited (%v) before printing %q:\n%s", p.name, p.err, re, p.stderr.String())
		case <-deadline:
			t.Fatalf("%s did not print %q within 10s:\n%s", p.name, re, p.stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// wait waits for the process to exit on its own and returns its status.
func (p *benchProc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %s:\n%s", p.name, timeout, p.stderr.String())
	}
	var exit *exec.ExitError
	switch {
	case p.err == nil:
		return 0
	case errors.As(p.err, &exit):
		return exit.ExitCode()
	}
	t.Fatalf("%s: %v", p.name, p.err)
	return -1
}

// decodeLastJSON decodes the last line of stdout that starts with '{': the
// report every sesame-bench subcommand ends with.
func (p *benchProc) decodeLastJSON(t *testing.T, v any) {
	t.Helper()
	if err := decodeLastJSONLine(p.stdout.String(), v); err != nil {
		t.Fatalf("%s: %v", p.name, err)
	}
}

func decodeLastJSONLine(out string, v any) error {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], "{") {
			return json.Unmarshal([]byte(lines[i]), v)
		}
	}
	return fmt.Errorf("no JSON line in the output:\n%s", out)
}

// startBenchDNS runs `sesame-bench dns` with the domain's records on a port
// free for UDP and TCP, and waits until it answers for dkimName. A port
// taken between the pick and the start is picked again.
func startBenchDNS(t *testing.T, bin, records, dkimName string) string {
	t.Helper()
	for attempt := 1; ; attempt++ {
		addr := freeUDPTCPAddr(t)
		p := startBenchProc(t, bin, "dns", "--listen", addr, "--mx", "127.0.0.2", "--records", records)
		if answers(p, addr, dkimName) {
			return addr
		}
		if attempt == 3 || !strings.Contains(p.stderr.String(), "address already in use") {
			t.Fatalf("sesame-bench dns on %s did not answer for %s:\n%s", addr, dkimName, p.stderr.String())
		}
	}
}

// answers waits up to 10 s for the DNS server at addr to answer name's TXT
// record; false if it did not, or if p exited first.
func answers(p *benchProc, addr, name string) bool {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeTXT)
	m.SetEdns0(4096, false) // an RSA-2048 key's record does not fit in 512 bytes
	c := &dns.Client{Timeout: 200 * time.Millisecond}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if r, _, err := c.Exchange(m, addr); err == nil && len(r.Answer) == 1 {
			return true
		}
		select {
		case <-p.exited:
			return false
		case <-time.After(20 * time.Millisecond):
		}
	}
	return false
}

// freeUDPTCPAddr returns a loopback host:port that was free for both UDP and
// TCP a moment ago.
func freeUDPTCPAddr(t *testing.T) string {
	t.Helper()
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := pc.LocalAddr().String()
		ln, err := net.Listen("tcp", addr)
		pc.Close()
		if err == nil {
			ln.Close()
			return addr
		}
	}
	t.Fatal("no loopback port free for both UDP and TCP")
	return ""
}

// runBenchSend runs `sesame-bench send` to completion and checks its JSON
// line: want messages accepted, no error of any kind.
func runBenchSend(t *testing.T, bin string, want int, args ...string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("sesame-bench %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	var rep struct {
		Scenario string         `json:"scenario"`
		Accepted int            `json:"accepted"`
		Errors   map[string]int `json:"errors"`
		Sessions int            `json:"sessions"`
	}
	if err := decodeLastJSONLine(stdout.String(), &rep); err != nil {
		t.Fatalf("sesame-bench send: %v", err)
	}
	t.Logf("send %s: %d accepted over %d sessions in %s", rep.Scenario, rep.Accepted, rep.Sessions, time.Since(start).Round(time.Millisecond))
	if rep.Accepted != want || len(rep.Errors) != 0 {
		t.Errorf("send %s: accepted %d of %d, errors %v\nstderr: %s", rep.Scenario, rep.Accepted, want, rep.Errors, stderr.String())
	}
}
