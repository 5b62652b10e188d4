package main

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestDNSZone(t *testing.T) {
	addr := freeUDPAndTCPPort(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	var stderr bytes.Buffer
	go func() {
		done <- run(ctx, []string{"dns", "--listen", addr, "--mx", "127.0.0.2"}, &bytes.Buffer{}, &stderr)
	}()
	exited := false
	defer func() {
		cancel()
		if !exited {
			<-done
		}
	}()

	c := &dns.Client{Timeout: time.Second}
	ask := func(name string, qtype uint16) *dns.Msg {
		m := new(dns.Msg)
		m.SetQuestion(name, qtype)
		var r *dns.Msg
		var err error
		for i := 0; i < 250; i++ { // the server may still be starting
			if r, _, err = c.Exchange(m, addr); err == nil {
				return r
			}
			select {
			case code := <-done:
				exited = true
				t.Fatalf("dns exited with %d before answering: %s", code, stderr.String())
			case <-time.After(20 * time.Millisecond):
			}
		}
		t.Fatalf("%s: %v", name, err)
		return nil
	}
	r := ask("example.net.", dns.TypeMX)
	if len(r.Answer) != 1 || r.Answer[0].(*dns.MX).Mx != "mx.example.net." {
		t.Fatalf("MX answer %v", r.Answer)
	}
	r = ask("mx.example.net.", dns.TypeA)
	if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "127.0.0.2" {
		t.Fatalf("A answer %v", r.Answer)
	}
	if r = ask("mx.example.net.", dns.TypeAAAA); len(r.Answer) != 0 {
		t.Fatalf("AAAA answer %v", r.Answer)
	}
	if code := run(context.Background(), []string{"dns", "--mx", "192.0.2.1"}, &bytes.Buffer{}, &bytes.Buffer{}); code != 2 {
		t.Fatalf("non-loopback --mx: exit %d", code)
	}
}

// freeUDPAndTCPPort finds a loopback port free for both UDP and TCP: the
// dns command listens on both, and a port the kernel hands out for UDP may
// be taken for TCP.
func freeUDPAndTCPPort(t *testing.T) string {
	t.Helper()
	for i := 0; i < 20; i++ {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := pc.LocalAddr().String()
		l, err := net.Listen("tcp", addr)
		pc.Close()
		if err == nil {
			l.Close()
			return addr
		}
	}
	t.Fatal("no loopback port free for both UDP and TCP")
	return ""
}
