package relay

import (
	"net/netip"
	"testing"
)

func TestGloballyReachable(t *testing.T) {
	for _, tc := range []struct {
		addr string
		want bool
	}{
		{"8.8.8.8", true},
		{"198.51.99.1", true},
		{"100.63.255.255", true},
		{"100.64.0.1", false}, // carrier-grade NAT (RFC 6598)
		{"100.127.255.254", false},
		{"100.128.0.1", true},
		{"0.1.2.3", false},
		{"10.1.2.3", false},
		{"127.0.0.5", false},
		{"169.254.169.254", false}, // cloud metadata
		{"172.16.0.1", false},
		{"172.32.0.1", true},
		{"192.0.0.9", false},
		{"192.0.2.1", false},
		{"192.88.99.1", false},
		{"192.168.1.1", false},
		{"198.18.0.1", false},
		{"198.19.255.255", false},
		{"198.51.100.7", false},
		{"203.0.113.5", false},
		{"224.0.0.251", false},
		{"240.0.0.1", false},
		{"255.255.255.255", false},

		{"2a00:1450:4001:80b::201a", true},
		{"2001:4860:4860::8888", true},
		{"::", false},
		{"::1", false},
		{"::ffff:10.0.0.1", false}, // IPv4-mapped: checked as IPv4
		{"::ffff:8.8.8.8", true},
		{"::10.0.0.1", false}, // IPv4-compatible, deprecated
		{"64:ff9b::8.8.8.8", true},
		{"64:ff9b::10.0.0.1", false}, // NAT64 to a private address
		{"64:ff9b:1::1", false},
		{"100::1", false},
		{"2001::1", false},
		{"2001:db8::25", false},
		{"2002:0808:0808::1", true},  // 6to4 of 8.8.8.8
		{"2002:c0a8:0101::1", false}, // 6to4 of 192.168.1.1
		{"3fff::1", false},
		{"5f00::1", false},
		{"fc00::1", false},
		{"fd12:3456::1", false},
		{"fe80::1", false},
		{"fec0::1", false},
		{"ff02::1", false},
	} {
		if got := globallyReachable(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("globallyReachable(%s) = %v, want %v", tc.addr, got, tc.want)
		}
	}
}
