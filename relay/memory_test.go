package relay

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// slowFarmEnv makes the test binary, started again by
// TestMemoryOfOpenConnections, run the slow servers instead of tests.
const slowFarmEnv = "SESAME_RELAY_SLOW_FARM"

// 2,000 deliveries held open at slow servers (each waits for the reply to
// its message's data, over STARTTLS) cost the relay no more memory each than
// the dispatcher counts a delivery for in its memory budget
// (deliveryOverhead). The servers run in a child process, so that what is
// measured here is the relay's own memory. SESAME_TEST_HEAPPROFILE=FILE
// writes the heap profile at that moment, and prints the heap and stacks.
func TestMemoryOfOpenConnections(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 2,000 connections")
	}
	if raceEnabled {
		t.Skip("the race detector multiplies memory")
	}
	const servers, perServer = 100, 20
	const total = servers * perServer
	ips := loopbackIPs(4, servers)
	farm := startSlowFarm(t, ips)
	zone, _ := startZoneFunc(t, mxZone(func(name string) string {
		if n := domainNumber(name, "mem.test"); n >= 0 && n < total {
			return ips[n%servers]
		}
		return ""
	}))
	q := newQueue(t)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range total {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			enqueue(t, q, mxSender, mxBody, fmt.Sprintf("r@d%d.mem.test", i))
		})
	}
	wg.Wait()
	drained := make(chan struct{})
	var failed atomic.Int64
	var lastFailure atomic.Value
	go func() {
		for {
			select {
			case o := <-q.outcomes:
				failed.Add(1) // none may end while the servers hold them
				lastFailure.Store(o.Reply)
			case <-drained:
				return
			}
		}
	}()
	cfg := testConfig(t, "", nil)
	cfg.Logger = slog.New(slog.DiscardHandler) // 2,000 deliveries' lines would be kept in memory
	cfg.Workers = 0
	cfg.MXPort = farm.port
	cfg.DNSServers = []string{zone}
	cfg.AllowPrivateDestinations = true
	cfg.DestinationConcurrency, cfg.InitialDestinationConcurrency = perServer, perServer
	cfg.CommandTimeout = 5 * time.Minute // the servers hold their replies
	cfg.ConnectTimeout = time.Minute     // 6,000 DNS questions at once on a loaded machine
	cfg.RetryFirst, cfg.RetryMax = time.Hour, time.Hour
	before := heapAndStacks()
	goroutines := runtime.NumGoroutine()
	stop := start(t, cfg, q)
	defer func() {
		farm.stop() // the held deliveries fail, are deferred, and the relay can stop
		stop()
		close(drained)
	}()

	deadline := time.Now().Add(2 * time.Minute)
	for farm.held.Load() < total {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d deliveries held open at the slow servers within 2 minutes; %d ended (the last: %v)",
				farm.held.Load(), total, failed.Load(), lastFailure.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	after := heapAndStacks()
	if p := os.Getenv("SESAME_TEST_HEAPPROFILE"); p != "" {
		f, _ := os.Create(p)
		pprof.Lookup("heap").WriteTo(f, 0)
		f.Close()
	}
	per := (after - before) / total
	t.Logf("%d connections held open: %.1f MiB of heap and stacks, %d KiB each (budgeted: %d KiB); %d goroutines more",
		total, float64(after-before)/(1<<20), per>>10, deliveryOverhead>>10, runtime.NumGoroutine()-goroutines)
	if per > deliveryOverhead {
		t.Errorf("a delivery held open costs %d KiB, more than the %d KiB the memory budget counts for it", per>>10, deliveryOverhead>>10)
	}
}

// heapAndStacks is the memory the process's Go objects and goroutine
// stacks take, after a collection.
func heapAndStacks() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	if os.Getenv("SESAME_TEST_HEAPPROFILE") != "" {
		fmt.Printf("heap %d KiB, stacks %d KiB\n", m.HeapInuse>>10, m.StackInuse>>10)
	}
	return int64(m.HeapInuse + m.StackInuse)
}

// slowFarm is the child process running the slow servers.
type slowFarm struct {
	port  int
	held  atomic.Int64 // deliveries whose data arrived and whose reply is held
	stdin io.Closer
	cmd   *exec.Cmd
	once  sync.Once
}

// startSlowFarm starts this test binary again as the slow servers on ips,
// and reads the port and the count of held deliveries it reports.
func startSlowFarm(t *testing.T, ips []string) *slowFarm {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestHelperSlowFarm$")
	cmd.Env = append(os.Environ(), slowFarmEnv+"="+strings.Join(ips, ","))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f := &slowFarm{stdin: stdin, cmd: cmd}
	t.Cleanup(f.stop)
	ports := make(chan int, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			verb, n, _ := strings.Cut(sc.Text(), " ")
			v, _ := strconv.Atoi(n)
			switch verb {
			case "port":
				ports <- v
			case "held":
				f.held.Store(int64(v))
			}
		}
	}()
	select {
	case f.port = <-ports:
	case <-time.After(time.Minute):
		t.Fatal("the slow servers did not start within a minute")
	}
	return f
}

func (f *slowFarm) stop() {
	f.once.Do(func() {
		f.stdin.Close()
		done := make(chan struct{})
		go func() { f.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			f.cmd.Process.Kill()
			<-done
		}
	})
}

// TestHelperSlowFarm is not a test: in the child process started by
// startSlowFarm it runs SMTP servers that offer STARTTLS and PIPELINING,
// accept every message, and never answer its data until the client goes
// away. It reports "port N", then "held N" as the count changes, and ends
// when its standard input closes.
func TestHelperSlowFarm(t *testing.T) {
	list := os.Getenv(slowFarmEnv)
	if list == "" {
		t.Skip("the child process of TestMemoryOfOpenConnections")
	}
	ips := strings.Split(list, ",")
	port, lns := listenSamePort(t, ips)
	tlsConfig := farmTLS(t)
	var held atomic.Int64
	var changed = make(chan struct{}, 1)
	note := func(d int64) {
		held.Add(d)
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	for _, ln := range lns {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go slowConverse(c, tlsConfig, note)
			}
		}()
	}
	fmt.Printf("port %d\n", port)
	stdinClosed := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(stdinClosed)
	}()
	for {
		select {
		case <-changed:
			fmt.Printf("held %d\n", held.Load())
			time.Sleep(10 * time.Millisecond) // report at most 100 times a second
		case <-stdinClosed:
			return
		case <-time.After(5 * time.Minute):
			return
		}
	}
}

// slowConverse is one session of the slow servers.
func slowConverse(c net.Conn, tlsConfig *tls.Config, note func(int64)) {
	defer c.Close()
	r := bufio.NewReader(c)
	say := func(s string) bool {
		_, err := io.WriteString(c, s)
		return err == nil
	}
	if !say("220 slow.test ESMTP\r\n") {
		return
	}
	encrypted := false
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		verb, _, _ := strings.Cut(strings.ToUpper(strings.TrimSpace(line)), " ")
		verb, _, _ = strings.Cut(verb, ":")
		switch verb {
		case "EHLO", "HELO":
			ext := "250-slow.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
			if !encrypted {
				ext += "250-STARTTLS\r\n"
			}
			say(ext + "250 SIZE 10485760\r\n")
		case "STARTTLS":
			say("220 2.0.0 go ahead\r\n")
			tc := tls.Server(c, tlsConfig)
			if tc.Handshake() != nil {
				return
			}
			c, r, encrypted = tc, bufio.NewReader(tc), true
		case "DATA":
			say("354 go ahead\r\n")
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
			}
			// Hold the reply until the client goes away.
			note(1)
			io.Copy(io.Discard, r)
			note(-1)
			return
		case "QUIT":
			say("221 bye\r\n")
			return
		default:
			say("250 ok\r\n")
		}
	}
}
