package dnsclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/sesame-mail/sesame/testkit"
)

func testClient(t *testing.T, timeout time.Duration, servers ...string) *Client {
	t.Helper()
	c, err := New(servers, timeout)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// rrStrings returns the records in zone file syntax, for comparing.
func rrStrings(rrs []dns.RR) []string {
	var ss []string
	for _, rr := range rrs {
		ss = append(ss, rr.String())
	}
	return ss
}

func mustRRStrings(t *testing.T, records ...string) []string {
	t.Helper()
	var ss []string
	for _, r := range records {
		rr, err := dns.NewRR(r)
		if err != nil {
			t.Fatalf("record %q: %v", r, err)
		}
		ss = append(ss, rr.String())
	}
	return ss
}

func TestLookup(t *testing.T) {
	records := []string{
		"a.test. 300 IN A 192.0.2.1",
		"a.test. 60 IN A 192.0.2.2",
		"txt.test. 300 IN TXT \"only text\"",
		"alias.test. 120 IN CNAME alias2.test.",
		"alias2.test. 600 IN CNAME real.test.",
		"real.test. 300 IN A 192.0.2.3",
		"dangling.test. 300 IN CNAME gone.test.",
		"loop1.test. 300 IN CNAME loop2.test.",
		"loop2.test. 300 IN CNAME loop1.test.",
	}
	// Chains of n CNAMEs: chainN-0.test → chainN-1.test → … → end.test.
	for _, n := range []int{8, 9} {
		for i := range n {
			next := fmt.Sprintf("chain%d-%d.test.", n, i+1)
			if i == n-1 {
				next = "end.test."
			}
			records = append(records, fmt.Sprintf("chain%d-%d.test. 300 IN CNAME %s", n, i, next))
		}
	}
	records = append(records, "end.test. 300 IN A 192.0.2.9")

	tests := []struct {
		name     string
		qname    string
		qtype    uint16
		records  []string      // want these
		nxdomain bool          // want NXDOMAIN
		ttl      time.Duration // want this TTL
		soa      bool          // want an SOA
		queries  []string      // want these names asked, once each
		err      string        // want an error with this text
	}{
		{name: "records, least TTL", qname: "a.test", qtype: dns.TypeA,
			records: []string{"a.test. 300 IN A 192.0.2.1", "a.test. 60 IN A 192.0.2.2"}, ttl: time.Minute,
			queries: []string{"a.test."}},
		{name: "name in any case, with a dot", qname: "A.Test.", qtype: dns.TypeA,
			records: []string{"a.test. 300 IN A 192.0.2.1", "a.test. 60 IN A 192.0.2.2"}, ttl: time.Minute,
			queries: []string{"a.test."}},
		{name: "NODATA", qname: "txt.test", qtype: dns.TypeA, ttl: maxTTL, soa: true,
			queries: []string{"txt.test."}},
		{name: "NXDOMAIN", qname: "nowhere.test", qtype: dns.TypeMX, nxdomain: true, ttl: maxTTL, soa: true,
			queries: []string{"nowhere.test."}},
		{name: "CNAMEs followed by hand", qname: "alias.test", qtype: dns.TypeA,
			records: []string{"real.test. 300 IN A 192.0.2.3"}, ttl: 120 * time.Second,
			queries: []string{"alias.test.", "alias2.test.", "real.test."}},
		{name: "CNAME to no name", qname: "dangling.test", qtype: dns.TypeA, nxdomain: true, ttl: 300 * time.Second, soa: true,
			queries: []string{"dangling.test.", "gone.test."}},
		{name: "CNAME loop", qname: "loop1.test", qtype: dns.TypeA, err: "more than 8 CNAMEs"},
		{name: "eight CNAMEs", qname: "chain8-0.test", qtype: dns.TypeA,
			records: []string{"end.test. 300 IN A 192.0.2.9"}, ttl: 300 * time.Second},
		{name: "nine CNAMEs", qname: "chain9-0.test", qtype: dns.TypeA, err: "more than 8 CNAMEs"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := testkit.StartZone(t, records...)
			c := testClient(t, 5*time.Second, s.Addr)
			ans, err := c.Lookup(t.Context(), tc.qname, tc.qtype)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got, want := rrStrings(ans.Records), mustRRStrings(t, tc.records...); !slices.Equal(got, want) {
				t.Errorf("records %q, want %q", got, want)
			}
			if ans.NXDomain != tc.nxdomain || ans.TTL != tc.ttl || (ans.SOA != nil) != tc.soa {
				t.Errorf("NXDomain %v, TTL %v, SOA %v; want %v, %v, an SOA %v", ans.NXDomain, ans.TTL, ans.SOA, tc.nxdomain, tc.ttl, tc.soa)
			}
			for _, q := range tc.queries {
				if n := s.Count(q); n != 1 {
					t.Errorf("%s asked %d times, want once", q, n)
				}
			}
			if tc.queries != nil && s.Total() != len(tc.queries) {
				t.Errorf("%d queries, want %d", s.Total(), len(tc.queries))
			}
		})
	}
}

// A recursive server that followed a CNAME chain gives the records at its
// end: they count, whatever their owner, and nothing more is asked.
func TestLookupChainFollowedByServer(t *testing.T) {
	s := testkit.StartZone(t)
	s.Set(t, "chased.test", dns.TypeA,
		"chased.test. 30 IN CNAME target.test.",
		"target.test. 300 IN A 192.0.2.91",
		"target.test. 300 CH A 192.0.2.92",
		"target.test. 300 IN TXT \"not an address\"")
	c := testClient(t, 5*time.Second, s.Addr)
	ans, err := c.Lookup(t.Context(), "chased.test", dns.TypeA)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := rrStrings(ans.Records), mustRRStrings(t, "target.test. 300 IN A 192.0.2.91"); !slices.Equal(got, want) {
		t.Fatalf("records %q, want %q: only the IN A ones", got, want)
	}
	if s.Total() != 1 {
		t.Fatalf("%d queries, want 1", s.Total())
	}
}

func TestLookupQuery(t *testing.T) {
	var got *dns.Msg
	var mu sync.Mutex
	s := testkit.StartZone(t, "q.test. 300 IN A 192.0.2.1")
	s.Rewrite(func(req, m *dns.Msg, _ bool) *dns.Msg {
		mu.Lock()
		got = req.Copy()
		mu.Unlock()
		return m
	})
	c := testClient(t, 5*time.Second, s.Addr)
	if _, err := c.Lookup(t.Context(), "Q.test", dns.TypeA); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !got.RecursionDesired || len(got.Question) != 1 || got.Question[0].Name != "q.test." ||
		got.Question[0].Qtype != dns.TypeA || got.Question[0].Qclass != dns.ClassINET {
		t.Fatalf("query %v, want RD and one question q.test. IN A", got)
	}
	if o := got.IsEdns0(); o == nil || o.UDPSize() != udpSize || o.Do() {
		t.Fatalf("query EDNS0 %v, want a UDP size of %d and no DO bit", o, udpSize)
	}
}

func TestLookupTruncatedRetriesOverTCP(t *testing.T) {
	s := testkit.StartZone(t,
		"big.test. 300 IN A 192.0.2.80",
		"small.test. 300 IN A 192.0.2.81")
	s.Rewrite(func(req, m *dns.Msg, overTCP bool) *dns.Msg {
		if !overTCP && req.Question[0].Name == "big.test." {
			m.Answer = nil
			m.Truncated = true
		}
		return m
	})
	c := testClient(t, 5*time.Second, s.Addr)
	ans, err := c.Lookup(t.Context(), "big.test", dns.TypeA)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := rrStrings(ans.Records), mustRRStrings(t, "big.test. 300 IN A 192.0.2.80"); !slices.Equal(got, want) {
		t.Fatalf("records %q, want %q", got, want)
	}
	if s.Count("big.test.") != 2 || s.TCPCount() != 1 {
		t.Fatalf("%d queries for big.test, %d over TCP; want a UDP one, then a TCP one", s.Count("big.test."), s.TCPCount())
	}
	if _, err := c.Lookup(t.Context(), "small.test", dns.TypeA); err != nil {
		t.Fatal(err)
	}
	if s.TCPCount() != 1 {
		t.Fatal("an untruncated answer was asked again over TCP")
	}
}

func TestLookupRcodes(t *testing.T) {
	for rcode, want := range map[int]string{
		dns.RcodeServerFailure:  "server answered SERVFAIL",
		dns.RcodeRefused:        "server answered REFUSED",
		dns.RcodeFormatError:    "server answered FORMERR",
		dns.RcodeNotImplemented: "server answered NOTIMP",
		dns.RcodeYXDomain:       "server answered YXDOMAIN",
	} {
		s := testkit.StartZone(t)
		s.Fail("*", rcode)
		c := testClient(t, 5*time.Second, s.Addr)
		_, err := c.Lookup(t.Context(), "rcode.test", dns.TypeA)
		if err == nil || err.Error() != want {
			t.Errorf("rcode %s: error %v, want %q", dns.RcodeToString[rcode], err, want)
		}
	}
}

func TestLookupQuestionMismatch(t *testing.T) {
	good := "asked.test. 300 IN A 192.0.2.1"
	other, err := dns.NewRR("other.test. 300 IN A 192.0.2.66")
	if err != nil {
		t.Fatal(err)
	}
	for name, change := range map[string]func(m *dns.Msg){
		"name": func(m *dns.Msg) { m.Question[0].Name, m.Answer = "other.test.", []dns.RR{other} },
		"type": func(m *dns.Msg) { m.Question[0].Qtype = dns.TypeAAAA },
		"none": func(m *dns.Msg) { m.Question = nil },
		"two":  func(m *dns.Msg) { m.Question = append(m.Question, m.Question[0]) },
	} {
		t.Run(name, func(t *testing.T) {
			spoofed := testkit.StartZone(t, good)
			spoofed.Rewrite(func(_, m *dns.Msg, _ bool) *dns.Msg {
				change(m)
				return m
			})
			c := testClient(t, 5*time.Second, spoofed.Addr)
			_, err := c.Lookup(t.Context(), "asked.test", dns.TypeA)
			if err == nil || err.Error() != "reply to another question" {
				t.Fatalf("error %v, want %q", err, "reply to another question")
			}

			// The next server is asked.
			honest := testkit.StartZone(t, good)
			c = testClient(t, 5*time.Second, spoofed.Addr, honest.Addr)
			ans, err := c.Lookup(t.Context(), "asked.test", dns.TypeA)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := rrStrings(ans.Records), mustRRStrings(t, "asked.test. 300 IN A 192.0.2.1"); !slices.Equal(got, want) {
				t.Fatalf("records %q, want %q", got, want)
			}
		})
	}
}

// A server that does not recurse answers with a referral, which is not
// NODATA.
func TestLookupLameServer(t *testing.T) {
	ns, err := dns.NewRR("test. 300 IN NS ns.test.")
	if err != nil {
		t.Fatal(err)
	}
	soa, err := dns.NewRR(testkit.DefaultSOA)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		make func(m *dns.Msg)
		err  string
	}{
		{name: "referral", make: func(m *dns.Msg) { m.Ns = []dns.RR{ns} }, err: "server does not recurse"},
		{name: "nothing", make: func(m *dns.Msg) {}, err: "server does not recurse"},
		{name: "NODATA with an SOA", make: func(m *dns.Msg) { m.Ns = []dns.RR{soa} }},
		{name: "authoritative NODATA", make: func(m *dns.Msg) { m.Authoritative = true }},
		{name: "recursive NODATA", make: func(m *dns.Msg) { m.RecursionAvailable = true }},
		{name: "NXDOMAIN", make: func(m *dns.Msg) { m.Rcode = dns.RcodeNameError }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := testkit.StartZone(t)
			s.Rewrite(func(req, _ *dns.Msg, _ bool) *dns.Msg {
				m := new(dns.Msg)
				m.SetReply(req)
				tc.make(m)
				return m
			})
			c := testClient(t, 5*time.Second, s.Addr)
			ans, err := c.Lookup(t.Context(), "lame.test", dns.TypeA)
			if tc.err == "" && err != nil {
				t.Fatalf("error %v, want a negative answer", err)
			}
			if tc.err != "" && (err == nil || err.Error() != tc.err) {
				t.Fatalf("answer %+v, error %v; want %q", ans, err, tc.err)
			}
		})
	}
}

func TestLookupFailsOverToNextServer(t *testing.T) {
	records := []string{"over.test. 300 IN A 192.0.2.70"}
	want := mustRRStrings(t, "over.test. 300 IN A 192.0.2.70")
	t.Run("SERVFAIL", func(t *testing.T) {
		bad := testkit.StartZone(t)
		bad.Fail("*", dns.RcodeServerFailure)
		good := testkit.StartZone(t, records...)
		c := testClient(t, 5*time.Second, bad.Addr, good.Addr)
		ans, err := c.Lookup(t.Context(), "over.test", dns.TypeA)
		if err != nil {
			t.Fatal(err)
		}
		if got := rrStrings(ans.Records); !slices.Equal(got, want) {
			t.Fatalf("records %q, want %q", got, want)
		}
		if bad.Count("over.test.") != 1 || good.Count("over.test.") != 1 {
			t.Fatalf("asked %d times of the failing server and %d of the healthy one, want 1 and 1",
				bad.Count("over.test."), good.Count("over.test."))
		}
	})
	t.Run("timeout", func(t *testing.T) {
		silent, got := testkit.SilentDNS(t)
		good := testkit.StartZone(t, records...)
		c := testClient(t, 100*time.Millisecond, silent, good.Addr)
		ans, err := c.Lookup(t.Context(), "over.test", dns.TypeA)
		if err != nil {
			t.Fatal(err)
		}
		if got := rrStrings(ans.Records); !slices.Equal(got, want) {
			t.Fatalf("records %q, want %q", got, want)
		}
		select {
		case <-got:
		default:
			t.Fatal("the silent server was never asked")
		}
	})
	t.Run("connection refused", func(t *testing.T) {
		good := testkit.StartZone(t, records...)
		c := testClient(t, 5*time.Second, testkit.ClosedUDPPort(t), good.Addr)
		if _, err := c.Lookup(t.Context(), "over.test", dns.TypeA); err != nil {
			t.Fatal(err)
		}
	})
}

// When no server answers, the error gives each distinct reason once, in the
// order the servers were asked, and no address.
func TestLookupAllServersFail(t *testing.T) {
	refusing := testkit.StartZone(t)
	refusing.Fail("*", dns.RcodeRefused)
	refusing2 := testkit.StartZone(t)
	refusing2.Fail("*", dns.RcodeRefused)
	silent, _ := testkit.SilentDNS(t)
	c := testClient(t, 100*time.Millisecond, refusing.Addr, testkit.ClosedUDPPort(t), refusing2.Addr, silent)
	_, err := c.Lookup(t.Context(), "dead.test", dns.TypeA)
	if want := "server answered REFUSED; read: connection refused; timeout"; err == nil || err.Error() != want {
		t.Fatalf("error %v, want %q", err, want)
	}
	if strings.Contains(err.Error(), "127.0.0.1") {
		t.Fatalf("error %q names a server", err)
	}
}

func TestLookupRotatesServers(t *testing.T) {
	var records []string
	for i := range 8 {
		records = append(records, fmt.Sprintf("r%d.test. 300 IN A 192.0.2.%d", i, i+1))
	}
	a := testkit.StartZone(t, records...)
	b := testkit.StartZone(t, records...)
	c := testClient(t, 5*time.Second, a.Addr, b.Addr)
	for i := range 8 {
		if _, err := c.Lookup(t.Context(), fmt.Sprintf("r%d.test", i), dns.TypeA); err != nil {
			t.Fatal(err)
		}
	}
	if a.Total() != 4 || b.Total() != 4 {
		t.Fatalf("servers asked %d and %d times, want 4 and 4", a.Total(), b.Total())
	}
}

func TestLookupTimeout(t *testing.T) {
	silent, _ := testkit.SilentDNS(t)
	c := testClient(t, 100*time.Millisecond, silent)
	start := time.Now()
	_, err := c.Lookup(t.Context(), "slow.test", dns.TypeA)
	if err == nil || err.Error() != "timeout" {
		t.Fatalf("error %v, want %q", err, "timeout")
	}
	if !errors.Is(err, ErrTimeout) {
		t.Errorf("error %v is not ErrTimeout", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("the lookup took %v with a 100ms timeout", el)
	}
}

func TestLookupCancelled(t *testing.T) {
	t.Run("before", func(t *testing.T) {
		silent, got := testkit.SilentDNS(t)
		c := testClient(t, time.Hour, silent)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := c.Lookup(ctx, "cancel.test", dns.TypeA); !errors.Is(err, context.Canceled) {
			t.Fatalf("error %v, want %v", err, context.Canceled)
		}
		select {
		case <-got:
			t.Fatal("a query was sent with a cancelled context")
		default:
		}
	})
	t.Run("during", func(t *testing.T) {
		silent, got := testkit.SilentDNS(t)
		other, _ := testkit.SilentDNS(t)
		c := testClient(t, time.Hour, silent, other)
		ctx, cancel := context.WithCancel(t.Context())
		errc := make(chan error, 1)
		go func() {
			_, err := c.Lookup(ctx, "cancel.test", dns.TypeA)
			errc <- err
		}()
		<-got
		cancel()
		select {
		case err := <-errc:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("error %v, want %v", err, context.Canceled)
			}
		case <-time.After(time.Minute): // a liveness bound; the query timeout is an hour
			t.Fatal("the lookup went on after its context was cancelled")
		}
	})
	t.Run("deadline", func(t *testing.T) {
		silent, _ := testkit.SilentDNS(t)
		c := testClient(t, time.Hour, silent)
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		// The query's own deadline is ctx's, so which of the two is seen
		// ending first is a race: either error will do.
		_, err := c.Lookup(ctx, "cancel.test", dns.TypeA)
		if !errors.Is(err, context.DeadlineExceeded) && (err == nil || err.Error() != "timeout") {
			t.Fatalf("error %v, want %v or timeout", err, context.DeadlineExceeded)
		}
		if el := time.Since(start); el > time.Minute { // a liveness bound; the query timeout is an hour
			t.Fatalf("the lookup took %v with a deadline of 100ms", el)
		}
	})
}

func TestSystemServers(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(conf, []byte("search example.test\nnameserver 127.0.0.53\nnameserver ::1\noptions edns0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	servers, err := systemServers(conf)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"127.0.0.53:53", "[::1]:53"}; !slices.Equal(servers, want) {
		t.Fatalf("servers %q, want %q", servers, want)
	}

	empty := filepath.Join(dir, "empty.conf")
	if err := os.WriteFile(empty, []byte("# nothing\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{filepath.Join(dir, "missing.conf"), empty} {
		if _, err := systemServers(path); err == nil || !strings.Contains(err.Error(), "set [relay] dns_servers") {
			t.Fatalf("servers of %s: error %v, want one naming [relay] dns_servers", path, err)
		}
	}
}

func TestNew(t *testing.T) {
	for _, s := range []string{"localhost:53", "127.0.0.1", "dns.example:53", "127.0.0.1:dns"} {
		if _, err := New([]string{"127.0.0.1:53", s}, 0); err == nil || !strings.Contains(err.Error(), "want ip:port") {
			t.Errorf("New with DNS server %q: error %v, want one saying ip:port", s, err)
		}
	}
	c, err := New([]string{"127.0.0.1:53", "[::1]:5353"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if c.timeout != defaultTimeout {
		t.Errorf("timeout %v, want the default %v", c.timeout, defaultTimeout)
	}
}

func TestReasonOf(t *testing.T) {
	for err, want := range map[error]string{
		context.DeadlineExceeded: "timeout",
		&net.OpError{Op: "read", Net: "udp", Addr: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53}, Err: errors.New("connection refused")}: "connection refused",
		errors.New("server answered SERVFAIL"): "server answered SERVFAIL",
	} {
		if got := reasonOf(err); got != want {
			t.Errorf("reasonOf(%v) = %q, want %q", err, got, want)
		}
	}
}
