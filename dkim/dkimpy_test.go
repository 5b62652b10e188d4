package dkim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sesame-mail/sesame/store"
)

// systemPython is the Debian interpreter that python3-dkim is installed for
// (the python3 first on PATH may be another one).
const systemPython = "/usr/bin/python3"

// dkimpyScript verifies every DKIM-Signature of each message file in
// argv[2:] with dkimpy, answering key lookups from the JSON object in
// argv[1], and prints one line per message: a "True"/"False" word per
// signature, topmost first. dkimpy reports some failures (a body hash
// mismatch) by raising instead of returning False.
const dkimpyScript = `
import json, sys
import dkim

records = json.load(open(sys.argv[1]))

def dnsfunc(name, timeout=5):
    # dkimpy asks for e.g. b"sel._domainkey.example.com."
    v = records.get(name.decode('ascii').rstrip('.'))
    return v.encode('ascii') if v is not None else None

for path in sys.argv[2:]:
    msg = open(path, 'rb').read()
    n = sum(1 for k, _ in dkim.DKIM(msg).headers if k.lower() == b'dkim-signature')
    verdicts = []
    for i in range(n):
        try:
            verdicts.append(str(dkim.DKIM(msg).verify(idx=i, dnsfunc=dnsfunc)))
        except dkim.ValidationError as e:
            verdicts.append('False')
            print(path, 'signature', i, e, file=sys.stderr)
    print(' '.join(verdicts))
`

// dkimpyVerify runs dkimpy over msg and returns its verdict per signature.
// It skips the test when dkimpy is unavailable, unless SESAME_E2E is set.
func dkimpyVerify(t *testing.T, msg []byte, records map[string]string) []string {
	t.Helper()
	return strings.Fields(dkimpyVerifyAll(t, [][]byte{msg}, records)[0])
}

// dkimpyVerifyAll runs dkimpy once over every message in msgs and returns,
// per message, its verdicts joined by spaces ("True False").
func dkimpyVerifyAll(t *testing.T, msgs [][]byte, records map[string]string) []string {
	t.Helper()
	if err := exec.Command(systemPython, "-c", "import dkim, nacl").Run(); err != nil {
		if os.Getenv("SESAME_E2E") != "" {
			t.Fatalf("SESAME_E2E is set but %s cannot import dkim and nacl (install python3-dkim and python3-nacl): %v", systemPython, err)
		}
		t.Skipf("%s cannot import dkim and nacl (python3-dkim, python3-nacl): %v", systemPython, err)
	}
	dir := t.TempDir()
	recFile := filepath.Join(dir, "records.json")
	scriptFile := filepath.Join(dir, "verify.py")
	rec, err := json.Marshal(records)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{recFile: rec, scriptFile: []byte(dkimpyScript)}
	args := []string{scriptFile, recFile}
	for i, m := range msgs {
		name := filepath.Join(dir, fmt.Sprintf("msg%d.eml", i))
		files[name] = m
		args = append(args, name)
	}
	for name, data := range files {
		if err := os.WriteFile(name, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(systemPython, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("dkimpy: %v\n%s", err, stderr.Bytes())
	}
	if stderr.Len() > 0 {
		t.Logf("dkimpy: %s", stderr.Bytes())
	}
	lines := strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n")
	if len(lines) != len(msgs) {
		t.Fatalf("dkimpy printed %d lines for %d messages:\n%s", len(lines), len(msgs), stdout.Bytes())
	}
	return lines
}

func TestDkimpyVerifies(t *testing.T) {
	s, records := signerFor(t, store.AlgRSA, store.AlgEd25519)
	_, signed := signTest(t, s, testMessage)
	if got := strings.Join(dkimpyVerify(t, signed, records), " "); got != "True True" {
		t.Errorf("dkimpy verdicts for RSA, Ed25519: %q, want \"True True\"", got)
	}

	headerOnly := "From: a@example.com\r\nTo: b@example.org\r\nSubject: no body\r\n"
	_, signed = signTest(t, s, headerOnly)
	if got := strings.Join(dkimpyVerify(t, signed, records), " "); got != "True True" {
		t.Errorf("dkimpy verdicts for a header-only message: %q, want \"True True\"", got)
	}
}

func TestDkimpyRejectsForgery(t *testing.T) {
	s, records := signerFor(t, store.AlgRSA, store.AlgEd25519)
	_, signed := signTest(t, s, testMessage)
	for name, bad := range map[string]string{
		"From prepended": "From: ceo@example.com\r\n" + string(signed),
		"body modified":  strings.Replace(string(signed), "Köln", "Koln", 1),
	} {
		if got := strings.Join(dkimpyVerify(t, []byte(bad), records), " "); got != "False False" {
			t.Errorf("%s: dkimpy verdicts %q, want \"False False\"", name, got)
		}
	}
}
