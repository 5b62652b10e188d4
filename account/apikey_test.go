package account

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAccessKeyShape(t *testing.T) {
	id, secret := NewAccessKey()
	if len(id) != 20 || !strings.HasPrefix(id, AccessKeyPrefix) || strings.ToUpper(id) != id {
		t.Errorf("access key id %q: want 20 upper-case characters starting %s", id, AccessKeyPrefix)
	}
	if len(secret) != 40 {
		t.Errorf("secret has %d characters, want 40", len(secret))
	}
	if id2, secret2 := NewAccessKey(); id2 == id || secret2 == secret {
		t.Error("two keys alike")
	}
}

func TestSealer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "api.key")
	s, err := LoadSealer(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v; want mode 0600", fi, err)
	}
	id, secret := NewAccessKey()
	sealed := s.Seal(id, secret)
	if strings.Contains(string(sealed), secret) {
		t.Fatal("the secret is in the sealed bytes")
	}
	// The same file, loaded again, opens it.
	s2, err := LoadSealer(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s2.Open(id, sealed); err != nil || got != secret {
		t.Fatalf("Open = %q, %v", got, err)
	}
	other, _ := NewAccessKey()
	if _, err := s2.Open(other, sealed); err == nil {
		t.Error("a sealed secret opened for another id")
	}
	s3, err := LoadSealer(filepath.Join(t.TempDir(), "other.key"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s3.Open(id, sealed); err == nil {
		t.Error("a sealed secret opened with another key")
	}
}
