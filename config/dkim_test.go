package config

import (
	"strings"
	"testing"
	"time"
)

// Durations take days ("180d", "1d12h"), for dkim.rotate_every.
func TestDurationDays(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"180d": 180 * 24 * time.Hour, "7d": 7 * 24 * time.Hour, "1d12h": 36 * time.Hour, "90s": 90 * time.Second, "0s": 0,
	} {
		var d Duration
		if err := d.UnmarshalText([]byte(in)); err != nil || d.Duration != want {
			t.Errorf("%q: %v %v, want %v", in, d.Duration, err, want)
		}
	}
	for _, in := range []string{"d", "1.5d", "-1d", "7days", "1d1d", "soon"} {
		var d Duration
		if err := d.UnmarshalText([]byte(in)); err == nil {
			t.Errorf("%q accepted as %v", in, d.Duration)
		}
	}
}

func TestDKIMRotationConfig(t *testing.T) {
	cfg, err := Parse("[dkim]\nrotate_every = \"180d\"\n")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DKIM.RotateEvery.Duration != 180*24*time.Hour || cfg.DKIM.RotationGrace.Duration != 7*24*time.Hour {
		t.Errorf("rotate_every %s, rotation_grace %s; want 180 days and the default 7", cfg.DKIM.RotateEvery, cfg.DKIM.RotationGrace)
	}
	if Default().DKIM.RotateEvery.Duration != 0 {
		t.Error("scheduled rotation is on by default")
	}
	for text, want := range map[string]string{
		"[dkim]\nrotate_every = \"5d\"\n":     "dkim.rotate_every: 120h0m0s: expected 0 (no scheduled rotation) or longer than dkim.rotation_grace",
		"[dkim]\nrotation_grace = \"0s\"\n":   "dkim.rotation_grace: 0s",
		"[dkim]\nrotate_every = \"-1h\"\n":    "dkim.rotate_every: -1h0m0s",
		"[dkim]\nrotate_every = \"1 year\"\n": "is not a duration",
	} {
		if _, err := Parse(text); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error lacks %q: %v", text, want, err)
		}
	}
}

// The system domain is dkim.system_domain, else hostname's domain.
func TestSystemDomain(t *testing.T) {
	for text, want := range map[string]string{
		"hostname = \"mail.example.com\"\n":                                          "example.com",
		"hostname = \"Relay.Mail.Example.co.uk\"\n":                                  "mail.example.co.uk",
		"hostname = \"example.com\"\n":                                               "example.com",
		"hostname = \"localhost\"\n":                                                 "",
		"hostname = \"mail.example.com\"\n[dkim]\nsystem_domain = \"Example.ORG\"\n": "example.org",
	} {
		cfg, err := Parse(text)
		if err != nil {
			t.Fatalf("%q: %v", text, err)
		}
		if got := cfg.SystemDomain(); got != want {
			t.Errorf("%q: system domain %q, want %q", text, got, want)
		}
	}
	if _, err := Parse("[dkim]\nsystem_domain = \"localhost\"\n"); err == nil || !strings.Contains(err.Error(), "dkim.system_domain") {
		t.Errorf("a one-label system_domain accepted: %v", err)
	}
}
