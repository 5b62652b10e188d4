package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sesame-mail/sesame/testkit"
)

// The sink with --latency holds every reply on a delay line: the greeting
// and each reply arrive no sooner than the latency, and the replies to a
// pipelined group overlap in flight rather than costing a latency each.
// With --addrs it listens on consecutive addresses and reports the most
// sessions open at once, in all and at one address.
func TestSinkLatencyAndAddrs(t *testing.T) {
	const latency = time.Second
	s, err := startSink(sinkConfig{Listen: "127.0.3.1:0", Latency: latency, Addrs: 3, Expect: 1,
		Timeout: time.Minute}, time.Now, &testkit.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(s.Addr().String())
	dial := func(ip string) net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", net.JoinHostPort(ip, port))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	began := time.Now()
	c := dial("127.0.3.2")
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "220 ") {
		t.Fatalf("greeting %q, %v", line, err)
	}
	if took := time.Since(began); took < latency {
		t.Errorf("the greeting arrived after %s, before the latency of %s", took, latency)
	}

	const n = 5
	began = time.Now()
	io.WriteString(c, "HELO relay.test\r\nNOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\n")
	for i := range n {
		line, err := r.ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "250") {
			t.Fatalf("reply %d: %q, %v", i+1, line, err)
		}
		if i == 0 {
			if took := time.Since(began); took < latency {
				t.Errorf("the first reply arrived after %s, before the latency of %s", took, latency)
			}
		}
	}
	// Serialized, n replies would take n latencies; in flight together, one
	// and the server's time. The bound leaves room for a loaded machine.
	if took := time.Since(began); took >= 3*latency {
		t.Errorf("%d pipelined replies took %s with a latency of %s: they did not overlap", n, took, latency)
	}

	dial("127.0.3.2")
	dial("127.0.3.3")
	// One message ends the run.
	io.WriteString(c, "MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n")
	for range 3 {
		if _, err := r.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}
	io.WriteString(c, "Subject: x\r\n\r\nbody\r\n.\r\n")
	rep, err := s.run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Addrs != 3 || rep.LatencyMs != 1000 || rep.PeakSessions != 3 || rep.PeakSessionsPerAddr != 2 {
		t.Errorf("report: addrs %d, latency %v ms, peak sessions %d, at one address %d; want 3, 1000, 3, 2",
			rep.Addrs, rep.LatencyMs, rep.PeakSessions, rep.PeakSessionsPerAddr)
	}
	if rep.FirstUnix <= 0 || rep.LastUnix < rep.FirstUnix {
		t.Errorf("first %v, last %v: want the first connection, then the last message", rep.FirstUnix, rep.LastUnix)
	}
}

func TestSinkLatencyAndAddrsValidate(t *testing.T) {
	for _, cfg := range []sinkConfig{
		{Listen: "127.0.0.2:2525", Latency: -time.Second},
		{Listen: "127.0.0.2:2525", Addrs: -1},
		{Listen: "127.255.255.250:2525", Addrs: 10}, // leaves 127.0.0.0/8
		{Listen: "127.0.0.2:2525", Addrs: maxSinkAddrs + 1},
	} {
		if err := cfg.validate(); err == nil {
			t.Errorf("%+v: no error", cfg)
		}
	}
	if err := (&sinkConfig{Listen: "127.0.0.101:2525", Addrs: 100, Latency: 100 * time.Millisecond}).validate(); err != nil {
		t.Errorf("the benchmark's sink: %v", err)
	}
}

// --domains spreads the messages over that many domains, taken in turn by
// all the clients' messages; the dns subcommand's --mx-count puts the mail
// exchanger of dK on the (K mod N)th address, so each address serves the
// same number of domains.
func TestDomainsAndTheirExchangers(t *testing.T) {
	cfg := testSendConfig("127.0.0.1:587")
	cfg.Connections, cfg.Domains, cfg.Recipients = 20, 1000, 2
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	perDomain := map[string]int{}
	for id := range 20 {
		for n := range 150 {
			rcpts := cfg.recipients(id, n)
			_, d, _ := strings.Cut(rcpts[0], "@")
			if _, d2, _ := strings.Cut(rcpts[1], "@"); d2 != d {
				t.Fatalf("one message to two domains: %v", rcpts)
			}
			perDomain[d]++
		}
	}
	if len(perDomain) != 1000 || perDomain["d0.example.net"] != 3 || perDomain["d999.example.net"] != 3 {
		t.Errorf("%d domains, d0 got %d messages, d999 %d; want 1000 domains of 3 each",
			len(perDomain), perDomain["d0.example.net"], perDomain["d999.example.net"])
	}
	cfg.Domains = -1
	if err := cfg.validate(); err == nil || !strings.Contains(err.Error(), "--domains") {
		t.Errorf("--domains -1: %v", err)
	}

	z := benchZone{mx: netip.MustParseAddr("127.0.0.101"), count: 100}
	perAddr := map[netip.Addr]int{}
	for d := range perDomain {
		perAddr[z.mxAddr(d+".")]++
	}
	if len(perAddr) != 100 || perAddr[netip.MustParseAddr("127.0.0.101")] != 10 || perAddr[netip.MustParseAddr("127.0.0.200")] != 10 {
		t.Errorf("exchangers on %d addresses, %d domains at the first, %d at the last; want 100 addresses of 10",
			len(perAddr), perAddr[netip.MustParseAddr("127.0.0.101")], perAddr[netip.MustParseAddr("127.0.0.200")])
	}
	if a := z.mxAddr("other.example."); a.Compare(netip.MustParseAddr("127.0.0.101")) < 0 || a.Compare(netip.MustParseAddr("127.0.0.200")) > 0 {
		t.Errorf("another domain's exchanger at %s, outside the 100 addresses", a)
	}
}
