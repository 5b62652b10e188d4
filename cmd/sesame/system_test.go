package main

import (
	"strings"
	"testing"
)

// The system domain (here hostname's, sesame.test): serve says at start
// whether Sesame's own mail is signed and how to sign it, and domain check
// without a domain checks it.
func TestSystemDomainStart(t *testing.T) {
	cfgPath, cfg := writeConfig(t, t.TempDir(), "")
	if cfg.SystemDomain() != "sesame.test" {
		t.Fatalf("system domain %q", cfg.SystemDomain())
	}
	if _, errOut, code := sesame(t, "domain", "check", "--config", cfgPath); code != 1 ||
		!strings.Contains(errOut, `the system domain`) || !strings.Contains(errOut, `sesame domain add sesame.test`) {
		t.Fatalf("check without the domain: %d %q", code, errOut)
	}
	stop, logs := startServe(t, cfg)
	stop()
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), `run \"sesame domain add sesame.test\"`) {
		t.Fatalf("serve did not say how to sign its own mail:\n%s", logs)
	}

	if _, errOut, code := sesame(t, "domain", "add", "sesame.test", "--config", cfgPath); code != 0 {
		t.Fatal(errOut)
	}
	stop, logs = startServe(t, cfg)
	stop()
	if !strings.Contains(logs.String(), `is DKIM-signed, but the system domain is pending`) {
		t.Fatalf("serve did not say the system domain's records are not published yet:\n%s", logs)
	}
	markVerified(t, cfg, "sesame.test")
	stop, logs = startServe(t, cfg)
	stop()
	if !strings.Contains(logs.String(), `msg="Sesame's own mail (address verification, DSNs) is DKIM-signed" domain=sesame.test`) {
		t.Fatalf("serve did not say its own mail is signed:\n%s", logs)
	}
	if out, _, _ := sesame(t, "domain", "check", "--config", cfgPath); !strings.Contains(out, "sesame.test is the system domain") {
		t.Fatalf("check of the system domain: %q", out)
	}
}
