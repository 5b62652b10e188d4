package account

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

func TestNewUsername(t *testing.T) {
	seen := make(map[string]bool)
	for range 1000 {
		u := NewUsername()
		if len(u) != 20 || !strings.HasPrefix(u, "SM") {
			t.Fatalf("NewUsername() = %q, want 20 characters starting with SM", u)
		}
		if strings.Trim(u, usernameAlphabet) != "" {
			t.Fatalf("NewUsername() = %q, want only A-Z and 0-9", u)
		}
		if seen[u] {
			t.Fatalf("NewUsername() repeated %q", u)
		}
		seen[u] = true
	}
}

func TestNewPassword(t *testing.T) {
	seen := make(map[string]bool)
	for range 1000 {
		p := NewPassword()
		b, err := base64.RawURLEncoding.DecodeString(p)
		if len(p) != 43 || err != nil || len(b) != 32 {
			t.Fatalf("NewPassword() = %q (decode error %v), want 43 characters of raw URL base64", p, err)
		}
		if seen[p] {
			t.Fatalf("NewPassword() repeated %q", p)
		}
		seen[p] = true
	}
}

func TestHashPasswordRoundTrip(t *testing.T) {
	h, err := HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if want := "$argon2id$v=19$m=19456,t=2,p=1$"; !strings.HasPrefix(h, want) {
		t.Errorf("HashPassword = %q, want prefix %q", h, want)
	}
	f := strings.Split(h, "$")
	if salt, _ := base64.RawStdEncoding.DecodeString(f[4]); len(salt) != 16 {
		t.Errorf("salt is %d bytes, want 16", len(salt))
	}
	if key, _ := base64.RawStdEncoding.DecodeString(f[5]); len(key) != 32 {
		t.Errorf("key is %d bytes, want 32", len(key))
	}
	for _, tc := range []struct {
		password string
		want     bool
	}{
		{"correct horse", true},
		{"correct horsf", false},
		{"correct horse ", false},
		{"", false},
	} {
		got, err := CheckPassword(h, tc.password)
		if err != nil || got != tc.want {
			t.Errorf("CheckPassword(h, %q) = %v, %v; want %v, nil", tc.password, got, err, tc.want)
		}
	}
	h2, err := HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if h2 == h {
		t.Error("two hashes of one password are equal; the salt is not random")
	}
}

// TestCheckPasswordReference checks hashes from the argon2 reference
// implementation's test vectors (phc-winner-argon2 src/test.c), which proves
// the PHC encoding and that parameters are read from the string, not assumed.
func TestCheckPasswordReference(t *testing.T) {
	for _, h := range []string{
		"$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
		"$argon2id$v=19$m=256,t=2,p=2$c29tZXNhbHQ$bQk8UB/VmZZF4Oo79iDXuL5/0ttZwg2f/5U52iv1cDc",
	} {
		if ok, err := CheckPassword(h, "password"); !ok || err != nil {
			t.Errorf("CheckPassword(%q, password) = %v, %v; want true, nil", h, ok, err)
		}
		if ok, err := CheckPassword(h, "passwore"); ok || err != nil {
			t.Errorf("CheckPassword(%q, passwore) = %v, %v; want false, nil", h, ok, err)
		}
	}
}

func TestCheckPasswordMalformed(t *testing.T) {
	const salt, key = "c29tZXNhbHQ", "nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4"
	for _, h := range []string{
		"",
		"password",
		"$argon2id$v=19$m=256,t=2,p=1$" + salt, // no key
		"$argon2id$v=19$m=256,t=2,p=1$" + salt + "$" + key + "$",   // extra field
		"x$argon2id$v=19$m=256,t=2,p=1$" + salt + "$" + key,        // junk before
		"$argon2i$v=19$m=256,t=2,p=1$" + salt + "$" + key,          // argon2i
		"$argon2id$v=16$m=256,t=2,p=1$" + salt + "$" + key,         // old version
		"$argon2id$m=256,t=2,p=1$" + salt + "$" + key,              // version missing
		"$argon2id$v=19$m=256,t=2$" + salt + "$" + key,             // p missing
		"$argon2id$v=19$t=2,m=256,p=1$" + salt + "$" + key,         // order
		"$argon2id$v=19$m=256,t=0,p=1$" + salt + "$" + key,         // t too small
		"$argon2id$v=19$m=256,t=2,p=0$" + salt + "$" + key,         // p too small
		"$argon2id$v=19$m=256,t=2,p=256$" + salt + "$" + key,       // p overflows
		"$argon2id$v=19$m=7,t=2,p=1$" + salt + "$" + key,           // m below 8p
		"$argon2id$v=19$m=4294967295,t=2,p=1$" + salt + "$" + key,  // m too large
		"$argon2id$v=19$m=4294967296,t=2,p=1$" + salt + "$" + key,  // m overflows
		"$argon2id$v=19$m=256,t=1000,p=1$" + salt + "$" + key,      // t too large
		"$argon2id$v=19$m=0256,t=2,p=1$" + salt + "$" + key,        // leading zero
		"$argon2id$v=19$m=-256,t=2,p=1$" + salt + "$" + key,        // negative
		"$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ=$" + key,         // padded salt
		"$argon2id$v=19$m=256,t=2,p=1$c29tZQ$" + key,               // short salt
		"$argon2id$v=19$m=256,t=2,p=1$" + salt + "$nf65EOgLrQMR",   // short key
		"$argon2id$v=19$m=256,t=2,p=1$" + salt + "$" + key + "!",   // bad base64
		"$argon2id$v=19$m=256,t=2,p=1$" + salt + "$" + key + "===", // padded key
	} {
		ok, err := CheckPassword(h, "password")
		if err == nil || ok {
			t.Errorf("CheckPassword(%q) = %v, %v; want false and an error", h, ok, err)
			continue
		}
		if !errors.Is(err, errMalformedHash) {
			t.Errorf("CheckPassword(%q) error %v does not wrap errMalformedHash", h, err)
		}
	}
}

// A password never starts with '-', which command-line clients such as
// swaks would take for an option.
func TestNewPasswordNoLeadingDash(t *testing.T) {
	for i := 0; i < 5000; i++ {
		if p := NewPassword(); p[0] == '-' || len(p) != 43 {
			t.Fatalf("password %q", p)
		}
	}
}
