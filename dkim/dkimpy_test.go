package dkim

import (
	"bytes"
	"encoding/json"
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

// dkimpyScript verifies every DKIM-Signature of the message in argv[1] with
// dkimpy, answering key lookups from the JSON object in argv[2], and prints
// one "True"/"False" line per signature, topmost first. dkimpy reports
// some failures (a body hash mismatch) by raising instead of returning False.
const dkimpyScript = `
import json, sys
import dkim

msg = open(sys.argv[1], 'rb').read()
records = json.load(open(sys.argv[2]))

def dnsfunc(name, timeout=5):
    # dkimpy asks for e.g. b"sel._domainkey.example.com."
    v = records.get(name.decode('ascii').rstrip('.'))
    return v.encode('ascii') if v is not None else None

n = sum(1 for k, _ in dkim.DKIM(msg).headers if k.lower() == b'dkim-signature')
for i in range(n):
    try:
        print(dkim.DKIM(msg).verify(idx=i, dnsfunc=dnsfunc))
    except dkim.ValidationError as e:
        print(False)
        print('signature', i, e, file=sys.stderr)
`

// dkimpyVerify runs dkimpy over msg and returns its verdict per signature.
// It skips the test when dkimpy is unavailable, unless SESAME_E2E is set.
func dkimpyVerify(t *testing.T, msg []byte, records map[string]string) []string {
	t.Helper()
	if err := exec.Command(systemPython, "-c", "import dkim, nacl").Run(); err != nil {
		if os.Getenv("SESAME_E2E") != "" {
			t.Fatalf("SESAME_E2E is set but %s cannot import dkim and nacl (install python3-dkim and python3-nacl): %v", systemPython, err)
		}
		t.Skipf("%s cannot import dkim and nacl (python3-dkim, python3-nacl): %v", systemPython, err)
	}
	dir := t.TempDir()
	msgFile := filepath.Join(dir, "msg.eml")
	recFile := filepath.Join(dir, "records.json")
	scriptFile := filepath.Join(dir, "verify.py")
	rec, err := json.Marshal(records)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{msgFile: msg, recFile: rec, scriptFile: []byte(dkimpyScript)} {
		if err := os.WriteFile(name, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(systemPython, scriptFile, msgFile, recFile)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("dkimpy: %v\n%s", err, stderr.Bytes())
	}
	if stderr.Len() > 0 {
		t.Logf("dkimpy: %s", stderr.Bytes())
	}
	return strings.Fields(stdout.String())
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
