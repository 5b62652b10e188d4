// Command sesame-bench measures an SMTP submission relay such as Sesame.
//
// It has two halves that are run together for an end-to-end measurement:
//
//	sesame-bench send   drives C concurrent authenticated SMTP clients against
//	                    the submission port and reports throughput, per-message
//	                    latency (MAIL to the final DATA reply) and errors by
//	                    reply code, as a table and as one JSON line.
//	sesame-bench sink   is a counting SMTP server the relay delivers to; it
//	                    reports messages received, connections seen and the
//	                    end-to-end latency taken from each message's
//	                    X-Bench-Sent header. It can listen on many
//	                    addresses and hold its replies for an internet-like
//	                    latency (--addrs, --latency).
//	sesame-bench dns    answers any domain's MX with a loopback address (one,
//	                    or one of many, as shared hosting), so a benchmark
//	                    takes Sesame's MX delivery path.
//	sesame-bench fill   queues many messages straight into a stopped Sesame's
//	                    store, deferred as after a 451, for the scale scenario.
//
// Both refuse addresses outside loopback (127.0.0.0/8, ::1, "localhost")
// unless --allow-remote is given, so a mistyped address cannot load a real
// mail server.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
)

const usage = `sesame-bench: load tool for an SMTP submission relay.

Usage:
  sesame-bench send [flags]   drive concurrent SMTP clients, report throughput and latency
  sesame-bench sink [flags]   counting SMTP server for the relay to deliver to
  sesame-bench dns [flags]    DNS server answering every domain's MX with loopback addresses
  sesame-bench fill [flags]   queue many messages straight into a stopped Sesame's store

Run "sesame-bench send --help" or "sesame-bench sink --help" for the flags.
Only loopback addresses are accepted unless --allow-remote is given.
With SESAME_BENCH_CPUPROFILE=PREFIX set, a CPU profile of the run is written
to PREFIX-SUBCOMMAND.pprof.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	stopProfile := startProfile(os.Getenv("SESAME_BENCH_CPUPROFILE"), os.Args[1:])
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stopProfile()
	stop()
	os.Exit(code)
}

// startProfile writes a CPU profile of the whole run to PREFIX-SUBCOMMAND.pprof
// when SESAME_BENCH_CPUPROFILE=PREFIX is set, so the load tool's and the sink's
// own cost on a shared box can be measured. It returns the function that
// ends the profile.
func startProfile(prefix string, args []string) func() {
	if prefix == "" || len(args) == 0 {
		return func() {}
	}
	f, err := os.Create(prefix + "-" + args[0] + ".pprof")
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "sesame-bench: SESAME_BENCH_CPUPROFILE: %v\n", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// run is main without the process: it returns the exit status so tests can
// drive the whole command line. 0 is success, 1 a failed run, 2 a usage error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "send":
		return sendMain(ctx, args[1:], stdout, stderr)
	case "sink":
		return sinkMain(ctx, args[1:], stdout, stderr)
	case "dns":
		return dnsMain(ctx, args[1:], stdout, stderr)
	case "fill":
		return fillMain(ctx, args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "sesame-bench: unknown subcommand %q\n\n%s", args[0], usage)
		return 2
	}
}

// parseFlags parses a subcommand's flags. It returns done=true with the exit
// status when the process should stop: after --help (0) or a bad flag (2).
func parseFlags(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (done bool, code int) {
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(stdout)
		fs.Usage()
		return true, 0
	case err != nil:
		fmt.Fprintf(stderr, "sesame-bench %s: %v\n", fs.Name(), err)
		fs.SetOutput(stderr)
		fs.Usage()
		return true, 2
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "sesame-bench %s: unexpected arguments %q\n", fs.Name(), fs.Args())
		return true, 2
	}
	return false, 0
}

// setUsage gives a subcommand's --help a one-paragraph description above the
// flag list.
func setUsage(fs *flag.FlagSet, text string) {
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprint(w, text)
		fmt.Fprintln(w, "\nFlags:")
		fs.PrintDefaults()
	}
}

// checkLoopback refuses host:port addresses outside loopback unless
// allowRemote is set. Host names other than "localhost" are refused rather
// than resolved, so the check itself sends no DNS query. It returns the
// address to use, with "localhost" pinned to 127.0.0.1.
func checkLoopback(addr string, allowRemote bool) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("address %q: %w", addr, err)
	}
	if allowRemote {
		return addr, nil
	}
	if host == "localhost" {
		return net.JoinHostPort("127.0.0.1", port), nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return "", fmt.Errorf("address %q is not loopback (127.0.0.0/8, ::1, localhost); pass --allow-remote to use it", addr)
	}
	return addr, nil
}
