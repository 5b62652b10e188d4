package testkit

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// systemPython is Debian's interpreter, which sees python3-dkim (a python3
// earlier in PATH, pyenv or a venv, usually does not).
const systemPython = "/usr/bin/python3"

// dkimpyDNSScript verifies every DKIM-Signature of the message in argv[1]
// with dkimpy, looking keys up over DNS at argv[2] ("ip:port") with
// dnspython (python3-dkim depends on it), and prints one True/False line per
// signature, topmost first. dkimpy reports some failures (a body hash
// mismatch) by raising instead of returning False.
const dkimpyDNSScript = `
import sys
import dkim, dns.resolver

msg = open(sys.argv[1], 'rb').read()
host, port = sys.argv[2].rsplit(':', 1)
res = dns.resolver.Resolver(configure=False)
res.nameservers = [host]
res.port = int(port)
res.cache = None

def dnsfunc(name, timeout=5):
    try:
        ans = res.resolve(name.decode('ascii'), 'TXT', lifetime=timeout)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return None
    return b''.join(ans[0].strings)

n = sum(1 for k, _ in dkim.DKIM(msg).headers if k.lower() == b'dkim-signature')
for i in range(n):
    try:
        print(dkim.DKIM(msg).verify(idx=i, dnsfunc=dnsfunc))
    except dkim.ValidationError as e:
        print(False)
        print('signature', i, e, file=sys.stderr)
`

var (
	dkimpyOnce sync.Once
	dkimpyErr  error // why dkimpy cannot run here
)

// VerifyDKIMPy verifies msg's DKIM signatures with dkimpy, an independent
// verifier, which looks the keys up in DNS at dnsServer (a Zone's Addr),
// and returns its verdict per signature ("True" or "False"), topmost first.
// Without python3-dkim the test is skipped, except in CI (CI=true) or with
// SESAME_E2E set, where it fails.
func VerifyDKIMPy(t testing.TB, msg []byte, dnsServer string) []string {
	t.Helper()
	dkimpyOnce.Do(func() { dkimpyErr = exec.Command(systemPython, "-c", "import dkim, nacl, dns.resolver").Run() })
	if err := dkimpyErr; err != nil {
		msg := systemPython + " cannot import dkim, nacl and dns.resolver (apt-get install python3-dkim python3-nacl, or run scripts/install-test-deps.sh)"
		if os.Getenv("CI") == "true" || os.Getenv("SESAME_E2E") != "" {
			t.Fatalf("%s: %v", msg, err)
		}
		t.Skipf("%s: %v", msg, err)
	}
	dir := t.TempDir()
	msgFile, scriptFile := filepath.Join(dir, "msg.eml"), filepath.Join(dir, "verify.py")
	if err := os.WriteFile(msgFile, msg, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(scriptFile, []byte(dkimpyDNSScript), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(systemPython, scriptFile, msgFile, dnsServer)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("dkimpy: %v\n%s", err, stderr.Bytes())
	}
	if stderr.Len() > 0 {
		t.Logf("dkimpy: %s", stderr.Bytes())
	}
	return strings.Fields(stdout.String())
}
