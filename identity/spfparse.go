package identity

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// The SPF record syntax (RFC 7208 §4.5, §4.6.1, §5, §6).

// isSPF reports whether a TXT record is an SPF record: "v=spf1" alone or
// followed by a space (RFC 7208 §4.5).
func isSPF(v string) bool {
	return len(v) >= 6 && strings.EqualFold(v[:6], "v=spf1") && (len(v) == 6 || v[6] == ' ')
}

// spfTerm is one directive or modifier of an SPF record (RFC 7208 §4.6.1).
type spfTerm struct {
	text      string // as written
	qualifier byte   // '+', '-', '~' or '?'; 0 for a modifier
	name      string // mechanism or modifier name, lower case
	arg       string // domain-spec ("" for the current domain), or the modifier's value
	prefix    netip.Prefix
	v4, v6    int // CIDR lengths of a and mx (RFC 7208 §5.6): 32 and 128 unless given
}

// parseSPF splits an SPF record into terms. A syntax error is what
// receivers call a permerror.
func parseSPF(record string) ([]spfTerm, error) {
	var terms []spfTerm
	seen := map[string]bool{}
	for _, word := range strings.Fields(record)[1:] {
		// A modifier is name=value, its name starting with a letter; a
		// mechanism has no '=' before any ':' or '/'.
		if i := strings.IndexByte(word, '='); i > 0 && !strings.ContainsAny(word[:i], ":/") {
			t := spfTerm{text: word, name: strings.ToLower(word[:i]), arg: word[i+1:]}
			if t.name == "redirect" || t.name == "exp" {
				// RFC 7208 §6: each at most once, with a domain.
				if seen[t.name] || t.arg == "" {
					return nil, fmt.Errorf("%s: %s= must appear at most once, with a domain", word, t.name)
				}
				seen[t.name] = true
			}
			terms = append(terms, t)
			continue
		}
		t := spfTerm{text: word, qualifier: '+', v4: 32, v6: 128}
		rest := word
		if strings.IndexByte("+-~?", rest[0]) >= 0 {
			t.qualifier, rest = rest[0], rest[1:]
		}
		end := strings.IndexAny(rest, ":/")
		if end < 0 {
			end = len(rest)
		}
		t.name, rest = strings.ToLower(rest[:end]), rest[end:]
		switch t.name {
		case "ip4", "ip6":
			var err error
			if t.prefix, err = parseNetwork(strings.TrimPrefix(rest, ":"), t.name == "ip4"); err != nil || !strings.HasPrefix(rest, ":") {
				return nil, fmt.Errorf("%s: %v", word, cmpErr(err, "no network"))
			}
		case "a", "mx", "ptr", "include", "exists":
			spec, cidr := rest, ""
			if i := strings.IndexByte(rest, '/'); i >= 0 {
				spec, cidr = rest[:i], rest[i:]
			}
			if spec != "" {
				if !strings.HasPrefix(spec, ":") || len(spec) == 1 {
					return nil, fmt.Errorf("%s: expected %s:DOMAIN", word, t.name)
				}
				t.arg = spec[1:]
			}
			if (t.name == "include" || t.name == "exists") && (t.arg == "" || cidr != "") {
				return nil, fmt.Errorf("%s needs a domain and takes no prefix length", word)
			}
			if cidr != "" {
				if t.name == "ptr" {
					return nil, fmt.Errorf("%s: ptr takes no prefix length", word)
				}
				var err error
				if t.v4, t.v6, err = parseDualCIDR(cidr); err != nil {
					return nil, fmt.Errorf("%s: %w", word, err)
				}
			}
		case "all":
			if rest != "" {
				return nil, fmt.Errorf("%s: all takes no argument", word)
			}
		default:
			return nil, fmt.Errorf("unknown mechanism %q", word)
		}
		terms = append(terms, t)
	}
	return terms, nil
}

func cmpErr(err error, text string) error {
	if err != nil {
		return err
	}
	return errors.New(text)
}

// parseDualCIDR reads "/24", "//64" or "/24//64" (RFC 7208 §5.6).
func parseDualCIDR(s string) (v4, v6 int, err error) {
	v4, v6 = 32, 128
	four, six, dual := strings.Cut(s, "//")
	if dual {
		if v6, err = strconv.Atoi(six); err != nil || v6 < 0 || v6 > 128 {
			return 0, 0, fmt.Errorf("bad IPv6 prefix length %q", six)
		}
	}
	if four != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(four, "/"))
		if err != nil || !strings.HasPrefix(four, "/") || n < 0 || n > 32 {
			return 0, 0, fmt.Errorf("bad IPv4 prefix length %q", four)
		}
		v4 = n
	}
	return v4, v6, nil
}

func parseNetwork(s string, v4 bool) (netip.Prefix, error) {
	var p netip.Prefix
	var err error
	if strings.Contains(s, "/") {
		p, err = netip.ParsePrefix(s)
	} else {
		var ip netip.Addr
		if ip, err = netip.ParseAddr(s); err == nil {
			p = netip.PrefixFrom(ip, ip.BitLen())
		}
	}
	if err != nil {
		return netip.Prefix{}, err
	}
	if p.Addr().Is4() != v4 {
		return netip.Prefix{}, fmt.Errorf("%s is of the wrong IP version", s)
	}
	return p, nil
}
