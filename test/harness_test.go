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
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sesame-mail/sesame/testkit"
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

// tokenRE matches what newToken makes; the sink indexes messages by it.
var tokenRE = regexp.MustCompile(`e2e-[0-9a-f]{16}`)

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

// creds is the JSON that `sesame user create|rotate --json` prints.
type creds struct {
	Name     string `json:"name"`
	Username string `json:"username"`
	Password string `json:"password"`
}

// dnsRecord is one record of `sesame domain add --json`.
type dnsRecord struct {
	Type     string `json:"type"`
	Name     string `json:"name"`
	Value    string `json:"value"`
	Purpose  string `json:"purpose"`
	Required bool   `json:"required"`
	// What `domain show|check|verify --json` found in DNS.
	Check string `json:"check"`
}

// domainInfo is what `sesame domain add|show|verify --json` print.
type domainInfo struct {
	Domain  string      `json:"domain"`
	Status  string      `json:"status"`
	Records []dnsRecord `json:"records"`
}

// dkimRecords returns the required DKIM TXT records: what the domain must
// publish to be verified.
func (d domainInfo) dkimRecords() []dnsRecord {
	var out []dnsRecord
	for _, r := range d.Records {
		if r.Required && strings.EqualFold(r.Type, "TXT") && strings.Contains(r.Name, "._domainkey.") {
			out = append(out, r)
		}
	}
	return out
}

// instance is one Sesame installation: a config file, a data directory, a
// DNS server (the config's [relay] dns_servers) where the DKIM records of
// its domains are published, a sink standing in for the smarthost, and at
// most one running `serve`.
type instance struct {
	t        *testing.T
	dir      string
	cfgPath  string
	dataDir  string
	zone     *testkit.Zone
	sink     *testkit.Sink
	smtpAddr string // STARTTLS submission (587 in production)
	tlsAddr  string // implicit-TLS submission (465 in production)
	httpAddr string
	apiAddr  string // the SES-compatible API (HTTPS)

	mu       sync.Mutex
	settings map[string]any // config overrides by "section.key"; nil removes a key
	tables   string         // TOML appended after the settings ([[ip]] tables and such)
	records  []dnsRecord    // records of every added domain, for DKIM checks
	cmd      *exec.Cmd
	exited   chan struct{}  // closed when the current serve process has exited
	serveLg  testkit.Buffer // serve's stdout and stderr, across restarts
	nofile   int            // serve's open-file limit (soft and hard) when > 0
}

// startZone starts an instance's DNS server. Unknown names get NXDOMAIN,
// known names without records of the asked type NODATA, both with an SOA
// whose MINIMUM of 1 s keeps a resolver from caching them longer: records
// are added and removed while Sesame runs.
func startZone(t *testing.T) *testkit.Zone {
	t.Helper()
	z := testkit.StartZone(t)
	z.SetSOA(t, "test. 60 IN SOA ns.test. hostmaster.test. 1 60 60 60 1")
	return z
}

// startSink starts the smarthost Sesame relays to: an SMTP server on
// 127.0.0.2 that accepts everything without AUTH and records it, indexed by
// token. Like a real smarthost it offers STARTTLS, with a self-signed
// certificate, so a relay that insists on TLS works and one that only uses
// it when offered is exercised too. It lives as long as the test, so it
// keeps receiving while serve is killed and restarted.
func startSink(t *testing.T) *testkit.Sink {
	t.Helper()
	return testkit.StartSink(t, testkit.SinkOptions{TLS: testkit.SelfSigned(t, "sink.test"), Index: tokenRE})
}

// newInstance writes a config for a fresh installation; it does not start
// serve. On failure the test log gets serve's output.
func newInstance(t *testing.T) *instance {
	t.Helper()
	needE2E(t)
	dir := t.TempDir()
	i := &instance{
		t:        t,
		dir:      dir,
		cfgPath:  filepath.Join(dir, "sesame.toml"),
		dataDir:  filepath.Join(dir, "data"),
		zone:     startZone(t), // before the cleanup below, so it outlives serve
		sink:     startSink(t),
		settings: map[string]any{},
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
	i.apiAddr = freeAddr(i.t, "127.0.0.1")
	i.writeConfig()
}

// configure overrides config keys ("relay.mx_port", "hostname") with Go
// values (string, bool, int, float64, []string; nil removes the key) and
// rewrites the file. A running serve sees the change at its next start.
func (i *instance) configure(settings map[string]any) {
	i.mu.Lock()
	for k, v := range settings {
		i.settings[k] = v
	}
	i.mu.Unlock()
	i.writeConfig()
}

// appendTables adds TOML text (tables the settings cannot express, such
// as [[ip]]) at the end of the config and rewrites the file.
func (i *instance) appendTables(text string) {
	i.mu.Lock()
	i.tables += "\n" + text + "\n"
	i.mu.Unlock()
	i.writeConfig()
}

// baseConfig is the configuration every instance starts from: loopback
// listeners, the sink as smarthost, the instance's DNS server, links to
// the HTTP listener, and no sandbox for new credentials (the identity tests
// turn it back on).
func (i *instance) baseConfig() map[string]any {
	return map[string]any{
		"hostname":                     "sesame.test",
		"data_dir":                     i.dataDir,
		"submission.starttls_listen":   []string{i.smtpAddr},
		"submission.tls_listen":        []string{i.tlsAddr},
		"submission.max_message_bytes": 41943040,
		"submission.max_recipients":    50,
		"relay.smarthost":              i.sink.Addr,
		"relay.dns_servers":            []string{i.zone.Addr},
		"http.listen":                  i.httpAddr,
		"http.public_url":              "http://" + i.httpAddr,
		"api.listen":                   i.apiAddr,
		"policy.sandbox_new_users":     false,
	}
}

// unthrottled lifts the production quotas (50000 recipients a day, 14 a
// second by default) for tests that submit as fast as they can: they test
// the pipeline, not the quotas (identity_test.go does).
func (i *instance) unthrottled() {
	i.configure(map[string]any{
		"policy.daily_quota":   1000000000,
		"policy.max_send_rate": 1000000.0,
	})
}

// tomlValue writes v as a TOML value.
func tomlValue(v any) string {
	switch v := v.(type) {
	case string:
		return strconv.Quote(v)
	case []string:
		q := make([]string, len(v))
		for n, s := range v {
			q[n] = strconv.Quote(s)
		}
		return "[" + strings.Join(q, ", ") + "]"
	case bool, int:
		return fmt.Sprint(v)
	case float64:
		f := strconv.FormatFloat(v, 'f', -1, 64)
		if !strings.Contains(f, ".") {
			f += ".0" // a TOML float, not an integer
		}
		return f
	}
	panic(fmt.Sprintf("tomlValue: %T", v))
}

func (i *instance) writeConfig() {
	cfg := i.baseConfig()
	i.mu.Lock()
	for k, v := range i.settings {
		if v == nil {
			delete(cfg, k)
		} else {
			cfg[k] = v
		}
	}
	i.mu.Unlock()
	sections := map[string][]string{}
	for k, v := range cfg {
		section, key, ok := strings.Cut(k, ".")
		if !ok {
			section, key = "", k
		}
		sections[section] = append(sections[section], key+" = "+tomlValue(v))
	}
	names := make([]string, 0, len(sections))
	for s := range sections {
		names = append(names, s)
	}
	sort.Strings(names) // "" (the top level) first
	var b strings.Builder
	for _, s := range names {
		if s != "" {
			fmt.Fprintf(&b, "\n[%s]\n", s)
		}
		sort.Strings(sections[s])
		for _, line := range sections[s] {
			b.WriteString(line + "\n")
		}
	}
	i.mu.Lock()
	b.WriteString(i.tables)
	i.mu.Unlock()
	if err := os.WriteFile(i.cfgPath, []byte(b.String()), 0o600); err != nil {
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

// adminStatus runs an operator command and returns its exit status with
// what it printed, for commands expected to fail.
func (i *instance) adminStatus(t *testing.T, args ...string) (status int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, sesameBin, append(args, "--config", i.cfgPath)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		status = exit.ExitCode()
	default:
		t.Fatalf("sesame %s: %v", strings.Join(args, " "), err)
	}
	return status, out.String(), errOut.String()
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

// adminJSON runs a command with --json and decodes what it printed into v.
func (i *instance) adminJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	out := i.mustAdmin(t, append(args, "--json")...)
	if err := json.Unmarshal(out, v); err != nil {
		t.Fatalf("sesame %s --json printed %q: %v", strings.Join(args, " "), out, err)
	}
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

// addPendingDomain adds a sending domain without publishing anything: it is
// pending. Its records are kept for DKIM checks.
func (i *instance) addPendingDomain(t *testing.T, domain string) domainInfo {
	t.Helper()
	var d domainInfo
	i.adminJSON(t, &d, "domain", "add", domain)
	if len(d.dkimRecords()) == 0 {
		t.Fatalf("sesame domain add %s --json: no required DKIM TXT record at SELECTOR._domainkey.%s in %+v", domain, domain, d)
	}
	if d.Status != "pending" {
		t.Errorf("sesame domain add %s --json: status %q, want pending", domain, d.Status)
	}
	i.mu.Lock()
	i.records = append(i.records, d.Records...)
	i.mu.Unlock()
	return d
}

// publishDKIM publishes the domain's required DKIM records in the
// instance's DNS server.
func (i *instance) publishDKIM(d domainInfo) {
	for _, r := range d.dkimRecords() {
		i.zone.SetTXT(r.Name, r.Value)
	}
}

// verifyDomain runs `sesame domain verify DOMAIN --json`, which must exit 0
// and report the domain verified.
func (i *instance) verifyDomain(t *testing.T, domain string) domainInfo {
	t.Helper()
	var d domainInfo
	i.adminJSON(t, &d, "domain", "verify", domain)
	if d.Status != "verified" {
		t.Fatalf("sesame domain verify %s exited 0 but reports status %q, want verified: %+v", domain, d.Status, d)
	}
	return d
}

// addDomain adds a sending domain, publishes its DKIM records in the DNS
// server and verifies it: ready to send.
func (i *instance) addDomain(t *testing.T, domain string) domainInfo {
	t.Helper()
	d := i.addPendingDomain(t, domain)
	i.publishDKIM(d)
	i.verifyDomain(t, domain)
	return d
}

// domainStatus returns the domain's status as `sesame domain list --json`
// reports it ("" when it is not listed).
func (i *instance) domainStatus(t *testing.T, domain string) string {
	t.Helper()
	var list []domainInfo
	i.adminJSON(t, &list, "domain", "list")
	for _, d := range list {
		if strings.EqualFold(d.Domain, domain) {
			return d.Status
		}
	}
	return ""
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
	if i.nofile > 0 {
		// Both limits: a Go program raises its soft limit to the hard one
		// at start. The shell execs serve, so signals reach it directly.
		cmd = exec.Command("/bin/sh", "-c", fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, i.nofile),
			sesameBin, "serve", "--config", i.cfgPath)
	}
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
func (i *instance) expectDelivered(t *testing.T, token, fromDomain string) *testkit.Message {
	t.Helper()
	msg, ok := i.sink.Wait(func(m *testkit.Message) bool { return bytes.Contains(m.Data, []byte(token)) }, 30*time.Second)
	if !ok {
		t.Fatalf("message %s did not reach the smarthost within 30s (sink holds %d messages)", token, len(i.sink.Messages()))
	}
	verifyDKIM(t, msg, fromDomain, i.dnsRecords())
	checkFeedbackID(t, msg, fromDomain)
	return msg
}

// feedbackIDField is the Feedback-ID smtpd adds; signedFeedbackID a
// DKIM-Signature whose h= lists it.
var (
	feedbackIDField  = regexp.MustCompile(`(?m)^Feedback-ID: [^:\r\n]+:[^:\r\n]+:([^:\r\n]+):sesame\r$`)
	signedFeedbackID = regexp.MustCompile(`(?is)DKIM-Signature:[^;]*(;[^;]*)*?\bh=[^;]*\bFeedback-ID\b`)
)

// checkFeedbackID checks that msg carries Sesame's Feedback-ID for
// fromDomain, covered by a DKIM signature.
func checkFeedbackID(t *testing.T, msg *testkit.Message, fromDomain string) {
	t.Helper()
	m := feedbackIDField.FindSubmatch(msg.Data)
	if m == nil || !strings.EqualFold(string(m[1]), fromDomain) || !signedFeedbackID.Match(msg.Data) {
		t.Errorf("no signed Feedback-ID for %s:\n%s", fromDomain, msg.Data)
	}
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
