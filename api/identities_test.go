package api

import "testing"

func TestIdentityName(t *testing.T) {
	for _, c := range []struct {
		in, want string
		addr, ok bool
	}{
		{"Example.COM.", "example.com", false, true},
		{"News@Example.com", "news@example.com", true, true},
		{"bücher.example", "xn--bcher-kva.example", false, true},
		{"info@bücher.example", "info@xn--bcher-kva.example", true, true},
		{"localhost", "", false, false},
		{"@example.com", "", false, false},
		{"a b@example.com", "", false, false},
		{"Ann <ann@example.com>", "", false, false},
		{"", "", false, false},
	} {
		got, addr, e := identityName(c.in)
		if (e == nil) != c.ok || got != c.want || addr != c.addr {
			t.Errorf("identityName(%q) = %q, %v, %v; want %q, %v, ok %v", c.in, got, addr, e, c.want, c.addr, c.ok)
		}
	}
}
