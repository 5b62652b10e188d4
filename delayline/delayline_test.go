package delayline

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// pair returns a client connection to a server whose side is wrapped with
// latency, and the server's side.
func pair(t *testing.T, latency time.Duration) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	l := Listener{Listener: ln, Latency: latency}
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() {
		client.Close()
		server.Close()
	})
	return client, server
}

// A reply arrives no sooner than the latency after it was written, and the
// replies to a pipelined group, written one after another, arrive together:
// they overlap in flight instead of costing a latency each.
func TestRepliesDelayedAndOverlapping(t *testing.T) {
	const latency = time.Second
	const n = 5
	client, server := pair(t, latency)
	go func() {
		r := bufio.NewReader(server)
		for range n {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			io.WriteString(server, "250 "+strings.TrimSpace(line)+"\r\n") // one write per reply
		}
	}()

	began := time.Now()
	io.WriteString(client, "A\r\nB\r\nC\r\nD\r\nE\r\n") // the pipelined group
	r := bufio.NewReader(client)
	var arrived []time.Duration
	for i := range n {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reply %d: %v", i+1, err)
		}
		if want := "250 " + string(rune('A'+i)) + "\r\n"; line != want {
			t.Errorf("reply %d %q, want %q", i+1, line, want)
		}
		arrived = append(arrived, time.Since(began))
	}
	if arrived[0] < latency {
		t.Errorf("the first reply arrived after %s, before the latency of %s", arrived[0], latency)
	}
	// Serialized, the last would come n latencies after the group; in
	// flight together, one latency plus the server's time. The bound is
	// generous for a loaded machine and still far from serial.
	if last := arrived[n-1]; last >= 3*latency {
		t.Errorf("the last of %d pipelined replies arrived after %s: the replies did not overlap (%v)", n, last, arrived)
	}
	t.Logf("replies arrived after %v", arrived)
}

// What was written before Close still arrives, then the end of the
// connection, as on a real link.
func TestCloseDeliversWhatWasWritten(t *testing.T) {
	const latency = 200 * time.Millisecond
	client, server := pair(t, latency)
	io.WriteString(server, "221 bye\r\n")
	if err := server.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(server, "more"); err == nil {
		t.Error("a write after Close succeeded")
	}
	client.SetReadDeadline(time.Now().Add(30 * time.Second))
	got, err := io.ReadAll(client)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "221 bye\r\n" {
		t.Errorf("read %q after the server closed, want the reply it wrote before", got)
	}
}

// Without a latency the connection is returned as it is.
func TestZeroLatencyIsTheConnection(t *testing.T) {
	c, _ := net.Pipe()
	defer c.Close()
	if Wrap(c, 0) != c {
		t.Error("Wrap with no latency wrapped the connection")
	}
}
