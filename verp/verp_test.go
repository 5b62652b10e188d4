package verp

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReturnPathRoundTrip(t *testing.T) {
	key, err := LoadKey(filepath.Join(t.TempDir(), "verp.key"))
	if err != nil {
		t.Fatal(err)
	}
	s := New(key, "bounce")
	rp := s.ReturnPath("Example.COM", "7GFC3CTHMRJQDUDB", "User@Example.net")
	local, domain, _ := strings.Cut(rp, "@")
	if domain != "bounce.example.com" || len(local) > 64 || strings.ToLower(rp) != rp {
		t.Fatalf("return path %q: want a lower-case local part of at most 64 octets at bounce.example.com", rp)
	}
	for _, addr := range []string{rp, strings.ToUpper(rp)} {
		tok, err := s.Parse(addr)
		if err != nil || tok.QueueID != "7GFC3CTHMRJQDUDB" || tok.Domain != "example.com" || !tok.Matches("user@example.net") {
			t.Errorf("Parse(%q) = %+v, %v", addr, tok, err)
		}
		if tok.Matches("other@example.net") {
			t.Error("the token matches another recipient")
		}
	}
}

func TestParseRefuses(t *testing.T) {
	s := New(make([]byte, KeySize), "bounce")
	other := New([]byte(strings.Repeat("k", KeySize)), "bounce")
	rp := s.ReturnPath("example.com", "7GFC3CTHMRJQDUDB", "user@example.net")
	flip := func(i int) string {
		b := []byte(rp)
		if b[i] == 'a' {
			b[i] = 'b'
		} else {
			b[i] = 'a'
		}
		return string(b)
	}
	for _, c := range []struct {
		addr string
		want error
	}{
		{flip(3), ErrForged},  // queue id altered
		{flip(20), ErrForged}, // recipient hash altered
		{flip(30), ErrForged}, // MAC altered
		{strings.Replace(rp, "bounce.example.com", "bounce.example.org", 1), ErrForged},
		{other.ReturnPath("example.com", "7GFC3CTHMRJQDUDB", "user@example.net"), ErrForged},
		{"postmaster@example.com", ErrNotOurs},
		{"b+short@bounce.example.com", ErrNotOurs},
		{strings.Replace(rp, "@bounce.", "@mail.", 1), ErrNotOurs},
	} {
		if _, err := s.Parse(c.addr); !errors.Is(err, c.want) {
			t.Errorf("Parse(%q) = %v, want %v", c.addr, err, c.want)
		}
	}
}

func TestLoadKeyKeepsTheKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "verp.key")
	a, err := LoadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadKey(path)
	if err != nil || string(a) != string(b) {
		t.Fatalf("second LoadKey = %x, %v; want the same key", b, err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v, want 0600", fi.Mode().Perm())
	}
	os.WriteFile(path, []byte("short"), 0o600)
	if _, err := LoadKey(path); err == nil {
		t.Error("a short key was accepted")
	}
}

func FuzzParse(f *testing.F) {
	s := New(make([]byte, KeySize), "bounce")
	f.Add(s.ReturnPath("example.com", "7GFC3CTHMRJQDUDB", "user@example.net"))
	f.Add("b+@bounce.")
	f.Fuzz(func(t *testing.T, addr string) {
		tok, err := s.Parse(addr)
		if err != nil {
			return
		}
		// Only the canonical form of a genuine token parses.
		want := "b+" + strings.ToLower(tok.QueueID) + "." + tok.RcptHash + "." +
			s.mac(strings.ToLower(tok.QueueID), tok.RcptHash, tok.Domain) + "@bounce." + tok.Domain
		if strings.ToLower(addr) != want {
			t.Fatalf("Parse(%q) accepted a non-canonical address (canonical %q)", addr, want)
		}
	})
}
