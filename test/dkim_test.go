package test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sesame-mail/sesame/testkit"
)

// dkimResult is what clients/dkimverify.py prints.
type dkimResult struct {
	Signatures []struct {
		Index int    `json:"index"`
		OK    bool   `json:"ok"`
		Error string `json:"error"`
		D     string `json:"d"`
		S     string `json:"s"`
		A     string `json:"a"`
		C     string `json:"c"`
		H     string `json:"h"`
	} `json:"signatures"`
	Lookups []string `json:"lookups"`
}

// verifyDKIM checks msg with python3-dkim, an implementation independent of
// the go-msgauth signer, answering key lookups from the records that
// `domain add` printed: no DNS. Every signature must verify, one of them
// for fromDomain, all relaxed/relaxed.
func verifyDKIM(t *testing.T, msg *testkit.Message, fromDomain string, records []dnsRecord) {
	t.Helper()
	requirePythonDKIM(t)
	file := filepath.Join(t.TempDir(), "message.eml")
	if err := os.WriteFile(file, msg.Data, 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{filepath.Join(clientsDir(), "dkimverify.py"), file}
	for _, r := range records {
		if strings.EqualFold(r.Type, "TXT") {
			args = append(args, r.Name+"="+r.Value)
		}
	}
	cmd := exec.Command(systemPython, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, runErr := cmd.Output()
	var res dkimResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("dkimverify.py: %v (%v)\nstdout: %s\nstderr: %s", runErr, err, out, stderr.String())
	}
	fail := func(format string, args ...any) {
		t.Helper()
		t.Errorf(format, args...)
		t.Logf("dkimverify.py output: %s\nverifier log:\n%s\nmessage as the smarthost got it:\n%s", out, stderr.String(), msg.Data)
	}
	if len(res.Signatures) == 0 {
		fail("message has no DKIM-Signature")
		return
	}
	signedForDomain := false
	for _, s := range res.Signatures {
		if !s.OK {
			fail("DKIM signature %d (d=%s s=%s) does not verify: %s", s.Index, s.D, s.S, s.Error)
			return
		}
		if s.C != "relaxed/relaxed" {
			fail("DKIM signature %d has c=%s, want relaxed/relaxed", s.Index, s.C)
		}
		if strings.EqualFold(s.D, fromDomain) {
			signedForDomain = true
		}
	}
	if !signedForDomain {
		fail("no DKIM signature with d=%s", fromDomain)
	}
	if runErr != nil {
		fail("dkimverify.py: %v", runErr)
	}
}
