package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
)

func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestCLIUsage(t *testing.T) {
	tests := []struct {
		args     []string
		code     int
		contains string
	}{
		{[]string{"send", "--help"}, 0, "-connections"},
		{[]string{"send", "-h"}, 0, "MAIL to the final reply"},
		{[]string{"sink", "--help"}, 0, "-expect"},
		{[]string{"--help"}, 0, "sesame-bench send"},
		{nil, 2, "Usage"},
		{[]string{"bogus"}, 2, "unknown subcommand"},
		{[]string{"send", "--nope"}, 2, "flag provided but not defined"},
		{[]string{"send", "extra"}, 2, "unexpected arguments"},
		// Refused before any connection is attempted.
		{[]string{"send", "--addr", "192.0.2.1:587", "--user", "u"}, 2, "not loopback"},
		{[]string{"sink", "--listen", "0.0.0.0:2525"}, 2, "not loopback"},
	}
	for _, tt := range tests {
		code, out, errOut := runCLI(tt.args...)
		if code != tt.code || !strings.Contains(out+errOut, tt.contains) {
			t.Errorf("%q: exit %d, output lacks %q? stdout:\n%s\nstderr:\n%s", tt.args, code, tt.contains, out, errOut)
		}
	}
}

func TestCLISend(t *testing.T) {
	addr := startStandIn(t, &standIn{user: "app", password: "secret"}, false)
	base := []string{"send", "--addr", addr, "--user", "app", "--password", "secret",
		"--connections", "2", "--messages", "3", "--size", "1000", "--scenario", "cli"}

	code, out, errOut := runCLI(append(base, "--json-only")...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.HasPrefix(out, "{") || strings.Count(out, "\n") != 1 {
		t.Fatalf("--json-only printed more than one JSON line:\n%s", out)
	}
	var rep sendReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Accepted != 6 || rep.Scenario != "cli" {
		t.Errorf("report = %+v", rep)
	}

	code, out, _ = runCLI(base...)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if code != 0 || len(lines) < 2 || !strings.HasPrefix(lines[len(lines)-1], "{") ||
		!strings.Contains(out, "throughput") {
		t.Errorf("exit %d; want a table then a JSON line:\n%s", code, out)
	}

	// Nothing accepted is a failed run.
	code, _, _ = runCLI("send", "--addr", addr, "--user", "app", "--password", "wrong",
		"--connections", "1", "--messages", "1", "--json-only")
	if code != 1 {
		t.Errorf("exit %d with a wrong password, want 1", code)
	}
}

func TestCLISinkTimeout(t *testing.T) {
	code, out, errOut := runCLI("sink", "--listen", "127.0.0.2:0", "--expect", "3", "--timeout", "10ms")
	if code != 1 || !strings.HasPrefix(out, `{"received":0`) || !strings.Contains(errOut, "timed out") {
		t.Errorf("exit %d; stdout %q; stderr %q", code, out, errOut)
	}
}
