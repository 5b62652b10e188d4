package relay

import "net/netip"

// notGloballyReachable lists the address blocks that mail must not be
// delivered to unless the operator allows private destinations
// (relay.allow_private_destinations): every block of the IANA IPv4 and IPv6
// Special-Purpose Address Registries (RFC 6890 and its updates) whose
// "Globally Reachable" column is False, plus the multicast and reserved
// ranges. A domain's DNS is written by strangers, so without this check an
// MX record could aim the relay at the operator's internal network.
//
// Deliberate choices, against the registries as of 2026:
//   - 192.0.0.0/24 and 2001::/23 are refused whole. Their few globally
//     reachable exceptions (PCP and TURN anycast, AMT, AS112, ORCHIDv2) are
//     never mail exchangers.
//   - 2002::/16 (6to4, deprecated by RFC 7526) and 64:ff9b::/96 (the NAT64
//     well-known prefix) embed an IPv4 address; that address is checked
//     instead, so a NAT64 gateway cannot be used to reach 10.0.0.0/8.
//   - IPv4-mapped IPv6 addresses (::ffff:0:0/96) are checked as IPv4.
//   - Outside 2000::/3 (the only IPv6 space IANA allocates for global
//     unicast) nothing is reachable but the NAT64 prefix above; that one
//     rule covers ::1, ::, 100::/64, 5f00::/16, fc00::/7, fe80::/10,
//     ff00::/8 and whatever is carved out of reserved space later.
var notGloballyReachable = mustPrefixes(
	// IPv4 (iana-ipv4-special-registry).
	"0.0.0.0/8",          // "this network" (RFC 791)
	"10.0.0.0/8",         // private use (RFC 1918)
	"100.64.0.0/10",      // shared address space, carrier-grade NAT (RFC 6598)
	"127.0.0.0/8",        // loopback (RFC 1122)
	"169.254.0.0/16",     // link local (RFC 3927)
	"172.16.0.0/12",      // private use (RFC 1918)
	"192.0.0.0/24",       // IETF protocol assignments (RFC 6890)
	"192.0.2.0/24",       // documentation, TEST-NET-1 (RFC 5737)
	"192.88.99.0/24",     // 6to4 relay anycast, deprecated (RFC 7526)
	"192.168.0.0/16",     // private use (RFC 1918)
	"198.18.0.0/15",      // benchmarking (RFC 2544)
	"198.51.100.0/24",    // documentation, TEST-NET-2 (RFC 5737)
	"203.0.113.0/24",     // documentation, TEST-NET-3 (RFC 5737)
	"224.0.0.0/4",        // multicast (RFC 5771)
	"240.0.0.0/4",        // reserved (RFC 1112)
	"255.255.255.255/32", // limited broadcast (RFC 919)

	// IPv6 (iana-ipv6-special-registry): the blocks inside global unicast
	// space; everything outside 2000::/3 is refused by globallyReachable.
	"2001::/23",     // IETF protocol assignments (RFC 2928)
	"2001:db8::/32", // documentation (RFC 3849)
	"3fff::/20",     // documentation (RFC 9637)
)

var (
	globalUnicast  = netip.MustParsePrefix("2000::/3")
	nat64WellKnown = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour      = netip.MustParsePrefix("2002::/16")
)

// globallyReachable reports whether a is an address on the public internet,
// by the IANA special-purpose registries (see notGloballyReachable).
func globallyReachable(a netip.Addr) bool {
	a = a.Unmap()
	if !a.IsValid() {
		return false
	}
	if a.Is6() {
		b := a.As16()
		switch {
		case nat64WellKnown.Contains(a):
			return globallyReachable(netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}))
		case sixToFour.Contains(a):
			return globallyReachable(netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]}))
		case !globalUnicast.Contains(a):
			// IANA allocates public IPv6 space only from 2000::/3; the
			// rest is loopback, unspecified, IPv4-compatible, discard-only,
			// unique local, link-local, multicast or reserved.
			return false
		}
	}
	for _, p := range notGloballyReachable {
		if p.Contains(a) {
			return false
		}
	}
	return true
}

func mustPrefixes(ss ...string) []netip.Prefix {
	ps := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		ps[i] = netip.MustParsePrefix(s)
	}
	return ps
}
