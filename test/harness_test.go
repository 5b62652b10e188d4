package test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// installHint is what every missing-prerequisite failure says.
const installHint = "run scripts/install-test-deps.sh (as root) to install the end-to-end test tools"

// Set up by TestMain when SESAME_E2E=1.
var (
	repoRoot  string
	sesameBin string
	setupErr  error
)

func TestMain(m *testing.M) {
	var buildDir string
	if e2eEnabled() {
		buildDir, setupErr = setup()
	}
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

func e2eEnabled() bool { return os.Getenv("SESAME_E2E") == "1" }

// setup finds the repository root and builds the binary once for all tests.
// SESAME_BIN names a prebuilt binary instead; SESAME_E2E_RACE=1 builds it
// with the race detector so server races show up under real clients.
func setup() (buildDir string, err error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			repoRoot = dir
			break
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("no go.mod above %s", wd)
		}
	}
	if bin := os.Getenv("SESAME_BIN"); bin != "" {
		sesameBin, err = filepath.Abs(bin)
		return "", err
	}
	buildDir, err = os.MkdirTemp("", "sesame-e2e-bin-")
	if err != nil {
		return "", err
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = "/usr/local/go/bin/go"
	}
	sesameBin = filepath.Join(buildDir, "sesame")
	args := []string{"build", "-o", sesameBin}
	if os.Getenv("SESAME_E2E_RACE") == "1" {
		args = append(args, "-race")
	}
	cmd := exec.Command(goTool, append(args, "./cmd/sesame")...)
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		return buildDir, fmt.Errorf("go build ./cmd/sesame: %v\n%s", err, out)
	}
	return buildDir, nil
}

// needE2E skips the test unless the suite is enabled, and fails it when the
// binary could not be built.
func needE2E(t *testing.T) {
	t.Helper()
	if !e2eEnabled() {
		t.Skip("end-to-end test skipped: set SESAME_E2E=1 to run it (it needs the tools that scripts/install-test-deps.sh installs)")
	}
	if setupErr != nil {
		t.Fatalf("setup: %v", setupErr)
	}
}

// requireTool fails the test when a client program is not installed.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found in PATH: %s", name, installHint)
	}
	return path
}

// systemPython is Debian's interpreter, which sees python3-dkim; a python3
// earlier in PATH (pyenv, venv) usually does not.
const systemPython = "/usr/bin/python3"

var pythonDKIM struct {
	once sync.Once
	err  error
}

func requirePythonDKIM(t *testing.T) {
	t.Helper()
	pythonDKIM.once.Do(func() {
		out, err := exec.Command(systemPython, "-c", "import dkim").CombinedOutput()
		if err != nil {
			pythonDKIM.err = fmt.Errorf("%s cannot import dkim (python3-dkim): %v %s", systemPython, err, out)
		}
	})
	if pythonDKIM.err != nil {
		t.Fatalf("%v: %s", pythonDKIM.err, installHint)
	}
}

func clientsDir() string { return filepath.Join(repoRoot, "test", "clients") }

// newToken returns a string unique to one message; the sink indexes every
// message by the tokens it contains (see tokenRE).
func newToken() string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return "e2e-" + hex.EncodeToString(b)
}

// freeAddr returns host:port with a port that was free a moment ago. serve
// is restarted on fresh ports if another process takes it in between.
func freeAddr(t *testing.T, host string) string {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// syncBuffer collects a child's output while it is read by the test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// creds is the JSON that `sesame user create|rotate --json` prints.
type creds struct {
	Name     string `json:"name"`
	Username string `json:"username"`
	Password string `json:"password"`
}

// dnsRecord is one record of `sesame domain add --json`.
type dnsRecord struct {
	Type  string `json:"type"`
	Name  string `json:"name"`
	Value string `json:"value"`
}

// instance is one Sesame installation: a config file, a data directory, a
// sink standing in for the smarthost, and at most one running `serve`.
type instance struct {
	t        *testing.T
	dir      string
	cfgPath  string
	dataDir  string
	sink     *sink
	smtpAddr string // STARTTLS submission (587 in production)
	tlsAddr  string // implicit-TLS submission (465 in production)
	httpAddr string

	mu      sync.Mutex
	records []dnsRecord // TXT records of every added domain, for DKIM checks
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the current serve process has exited
	serveLg syncBuffer    // serve's stdout and stderr, across restarts
}

// newInstance writes a config for a fresh installation; it does not start
// serve. On failure the test log gets serve's output.
func newInstance(t *testing.T) *instance {
	t.Helper()
	needE2E(t)
	dir := t.TempDir()
	i := &instance{
		t:       t,
		dir:     dir,
		cfgPath: filepath.Join(dir, "sesame.toml"),
		dataDir: filepath.Join(dir, "data"),
		sink:    startSink(t),
	}
	i.pickPorts()
	t.Cleanup(func() {
		i.stop()
		if t.Failed() {
			t.Logf("sesame serve output:\n%s", tail(i.serveLg.String(), 64<<10))
		}
	})
	return i
}

func (i *instance) pickPorts() {
	i.smtpAddr = freeAddr(i.t, "127.0.0.1")
	i.tlsAddr = freeAddr(i.t, "127.0.0.1")
	i.httpAddr = freeAddr(i.t, "127.0.0.1")
	i.writeConfig()
}

func (i *instance) writeConfig() {
	cfg := fmt.Sprintf(`hostname = "sesame.test"
data_dir = %q

[submission]
starttls_listen = [%q]
tls_listen = [%q]
max_message_bytes = 41943040
max_recipients = 50

[relay]
smarthost = %q

[http]
listen = %q
`, i.dataDir, i.smtpAddr, i.tlsAddr, i.sink.addr, i.httpAddr)
	if err := os.WriteFile(i.cfgPath, []byte(cfg), 0o600); err != nil {
		i.t.Fatal(err)
	}
}

// admin runs an operator command (`sesame ARGS... --config FILE`).
func (i *instance) admin(args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, sesameBin, append(args, "--config", i.cfgPath)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("sesame %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.Bytes(), err
}

// The helpers below take the calling test's t: FailNow must run on the
// goroutine of the test that fails, which for a subtest is not i.t's.

func (i *instance) mustAdmin(t *testing.T, args ...string) []byte {
	t.Helper()
	out, err := i.admin(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (i *instance) userCmd(t *testing.T, verb, name string) creds {
	t.Helper()
	out := i.mustAdmin(t, "user", verb, name, "--json")
	var c creds
	if err := json.Unmarshal(out, &c); err != nil || c.Username == "" || c.Password == "" {
		t.Fatalf("sesame user %s %s --json printed %q (%v); want {name, username, password}", verb, name, out, err)
	}
	return c
}

func (i *instance) createUser(t *testing.T, name string) creds {
	t.Helper()
	return i.userCmd(t, "create", name)
}

func (i *instance) rotateUser(t *testing.T, name string) creds {
	t.Helper()
	return i.userCmd(t, "rotate", name)
}

func (i *instance) deleteUser(t *testing.T, name string) {
	t.Helper()
	i.mustAdmin(t, "user", "delete", name)
}

// addDomain adds a sending domain and keeps its TXT records for DKIM checks.
func (i *instance) addDomain(t *testing.T, domain string) {
	t.Helper()
	out := i.mustAdmin(t, "domain", "add", domain, "--json")
	var resp struct {
		Domain  string      `json:"domain"`
		Records []dnsRecord `json:"records"`
	}
	if err := json.Unmarshal(out, &resp); err != nil {
		t.Fatalf("sesame domain add %s --json printed %q: %v", domain, out, err)
	}
	var dkimTXT int
	for _, r := range resp.Records {
		if strings.EqualFold(r.Type, "TXT") && strings.Contains(r.Name, "._domainkey.") {
			dkimTXT++
		}
	}
	if dkimTXT == 0 {
		t.Fatalf("sesame domain add %s --json: no DKIM TXT record in %q", domain, out)
	}
	i.mu.Lock()
	i.records = append(i.records, resp.Records...)
	i.mu.Unlock()
}

func (i *instance) dnsRecords() []dnsRecord {
	i.mu.Lock()
	defer i.mu.Unlock()
	return append([]dnsRecord(nil), i.records...)
}

// start runs `sesame serve` and waits until /healthz answers 200. If serve
// dies because a port was taken meanwhile, it retries on fresh ports.
func (i *instance) start() {
	i.t.Helper()
	for attempt := 1; ; attempt++ {
		err := i.startOnce()
		if err == nil {
			return
		}
		if attempt < 3 && strings.Contains(i.serveLg.String(), "address already in use") {
			i.t.Logf("serve could not listen (%v); retrying on other ports", err)
			i.pickPorts()
			continue
		}
		i.t.Fatalf("sesame serve did not become ready: %v", err)
	}
}

func (i *instance) startOnce() error {
	i.mu.Lock()
	if i.cmd != nil {
		i.mu.Unlock()
		return errors.New("serve is already running")
	}
	fmt.Fprintf(&i.serveLg, "----- %s: sesame serve --config %s\n", time.Now().Format(time.RFC3339Nano), i.cfgPath)
	cmd := exec.Command(sesameBin, "serve", "--config", i.cfgPath)
	cmd.Stdout, cmd.Stderr = &i.serveLg, &i.serveLg
	if err := cmd.Start(); err != nil {
		i.mu.Unlock()
		return err
	}
	exited := make(chan struct{})
	i.cmd, i.exited = cmd, exited
	i.mu.Unlock()
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(&i.serveLg, "----- %s: serve exited: %v\n", time.Now().Format(time.RFC3339Nano), err)
		close(exited)
	}()

	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			i.mu.Lock()
			i.cmd = nil
			i.mu.Unlock()
			return errors.New("serve exited before it was ready")
		default:
		}
		resp, err := client.Get("http://" + i.httpAddr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	i.signal(syscall.SIGKILL)
	return fmt.Errorf("GET http://%s/healthz did not answer 200 within 30s", i.httpAddr)
}

// signal sends sig to serve and waits for it to exit (SIGKILL after 15s).
func (i *instance) signal(sig syscall.Signal) {
	i.mu.Lock()
	cmd, exited := i.cmd, i.exited
	i.cmd = nil
	i.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		i.t.Errorf("sesame serve did not exit within 15s of %v; killing it", sig)
		cmd.Process.Kill()
		<-exited
	}
}

// kill ends serve abruptly, as a crash or power loss would (minus the
// page cache, which survives).
func (i *instance) kill() { i.signal(syscall.SIGKILL) }

// stop shuts serve down gracefully.
func (i *instance) stop() { i.signal(syscall.SIGTERM) }

// standard sets up the common case: one sending domain, one user, serve
// running.
func (i *instance) standard(domain, user string) creds {
	i.t.Helper()
	i.addDomain(i.t, domain)
	c := i.createUser(i.t, user)
	i.start()
	return c
}

// expectDelivered waits for the message carrying token at the sink and
// checks its DKIM signature with python3-dkim.
func (i *instance) expectDelivered(t *testing.T, token, fromDomain string) *sinkMessage {
	t.Helper()
	msg, ok := i.sink.wait(token, 30*time.Second)
	if !ok {
		t.Fatalf("message %s did not reach the smarthost within 30s (sink holds %d messages)", token, i.sink.count())
	}
	verifyDKIM(t, msg, fromDomain, i.dnsRecords())
	return msg
}

// run executes a client program with a deadline and returns its combined
// output; failures include the output.
func run(t *testing.T, stdin []byte, dir string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		err = fmt.Errorf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return string(out), err
}

// tail keeps the end of a long log, where the failure usually is.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return fmt.Sprintf("[... %d bytes cut ...]\n%s", len(s)-n, s[len(s)-n:])
}
