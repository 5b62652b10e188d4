package inbound

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func mustPrefix(t *testing.T, s string) netip.Prefix {
	t.Helper()
	p, err := netip.ParsePrefix(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAligned(t *testing.T) {
	tests := []struct {
		d, domain string
		want      bool
	}{
		{"arf.mail.yahoo.com", "arf.mail.yahoo.com", true},
		{"ARF.mail.yahoo.com.", "arf.mail.yahoo.com", true},
		{"yahoo.com", "arf.mail.yahoo.com", true}, // a parent
		{"mail.yahoo.com", "arf.mail.yahoo.com", true},
		{"sub.arf.mail.yahoo.com", "arf.mail.yahoo.com", false}, // a child
		{"oo.com", "arf.mail.yahoo.com", false},                 // a suffix, not a parent
		{"com", "arf.mail.yahoo.com", false},                    // one label
		{"", "arf.mail.yahoo.com", false},
		{"evil.test", "arf.mail.yahoo.com", false},
	}
	for _, tt := range tests {
		if got := aligned(tt.d, tt.domain); got != tt.want {
			t.Errorf("aligned(%q, %q) = %v, want %v", tt.d, tt.domain, got, tt.want)
		}
	}
}

func TestReporterOf(t *testing.T) {
	rs := parseReporters([]string{"arf.mail.yahoo.com", "Staff@Hotmail.com", " ", "fbl.example.net."})
	tests := []struct {
		from, domain string
		ok           bool
	}{
		{"feedback@arf.mail.yahoo.com", "arf.mail.yahoo.com", true},
		{"anyone@ARF.mail.yahoo.com", "arf.mail.yahoo.com", true},
		{"x@sub.arf.mail.yahoo.com", "", false}, // not its subdomains
		{"someone@yahoo.com", "", false},
		{"staff@hotmail.com", "hotmail.com", true},
		{"STAFF@hotmail.com", "hotmail.com", true},
		{"user@hotmail.com", "", false}, // the provider's users are no reporter
		{"loop@fbl.example.net", "fbl.example.net", true},
		{"", "", false},
	}
	for _, tt := range tests {
		r, ok := reporterOf(rs, tt.from)
		if ok != tt.ok || r.domain != tt.domain {
			t.Errorf("reporterOf(%q) = %+v, %v; want domain %q, %v", tt.from, r, ok, tt.domain, tt.ok)
		}
	}
}

func TestHeaderFrom(t *testing.T) {
	tests := []struct{ raw, want, err string }{
		{"From: Yahoo! Mail AntiSpam Feedback <feedback@arf.mail.yahoo.com>\r\nTo: x@y\r\n\r\nbody", "feedback@arf.mail.yahoo.com", ""},
		{"To: x@y\r\n\r\nbody", "", "0 From fields"},
		{"From: a@b.test\r\nFrom: c@d.test\r\n\r\n", "", "2 From fields"},
		{"From: a@b.test, c@d.test\r\n\r\n", "", "is not one address"},
		{"From: nonsense\r\n\r\n", "", "is not one address"},
	}
	for _, tt := range tests {
		got, err := headerFrom([]byte(tt.raw))
		if got != tt.want || (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("headerFrom(%q) = %q, %v; want %q, %q", tt.raw, got, err, tt.want, tt.err)
		}
	}
}

func TestReceivedQueueID(t *testing.T) {
	sesame := "from app ([127.0.0.1]) by sesame.test (Sesame) with ESMTPSA id 0123456789ABCDEF; Fri, 27 Nov 2026 10:14:57 +0000"
	if got := receivedQueueID([]string{"from x by mx.example.net with ESMTPS id 4Xyz12", sesame}); got != "0123456789ABCDEF" {
		t.Errorf("got %q", got)
	}
	var fields []string
	for range maxReceivedFields {
		fields = append(fields, "from x by y with ESMTP id z")
	}
	if got := receivedQueueID(append(fields, sesame)); got != "" {
		t.Errorf("a Received field past the first %d was examined: %q", maxReceivedFields, got)
	}
}

// The budget fills at its rate up to its size; a client in debt waits.
func TestBudget(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	b := newBudget(10*time.Second, 0.1)
	ip := netip.MustParseAddr("192.0.2.1")
	if !b.allow(ip, t0) {
		t.Fatal("a new client is refused")
	}
	b.charge(ip, 12*time.Second, t0) // one costly report: 2 s in debt
	if b.allow(ip, t0.Add(19*time.Second)) {
		t.Error("allowed with 1.9 s earned against 2 s of debt")
	}
	if !b.allow(ip, t0.Add(21*time.Second)) {
		t.Error("refused after paying its debt back")
	}
	if b.allow(netip.MustParseAddr("192.0.2.2"), t0) != true {
		t.Error("another client is held back")
	}
	// IPv6 counts per /64.
	b.charge(netip.MustParseAddr("2001:db8::1"), time.Minute, t0)
	if b.allow(netip.MustParseAddr("2001:db8::ffff"), t0) {
		t.Error("another address of the same /64 is allowed")
	}
	// A full bucket holds no more than its size.
	b.charge(ip, 0, t0.Add(time.Hour))
	b.charge(ip, 10*time.Second+time.Millisecond, t0.Add(time.Hour))
	if b.allow(ip, t0.Add(time.Hour)) {
		t.Error("the bucket held more than its size")
	}
}

// The addresses tracked are bounded.
func TestBudgetForgets(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	b := newBudget(time.Second, 1)
	for i := range maxBudgetClients + 10 {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		b.charge(ip, time.Millisecond, t0.Add(time.Duration(i)*time.Millisecond))
	}
	if n := len(b.clients); n > maxBudgetClients {
		t.Errorf("%d clients tracked, at most %d wanted", n, maxBudgetClients)
	}
}
