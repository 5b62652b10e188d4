// Package relay delivers queued mail to the next hop.
//
// One dispatcher goroutine claims due messages from the queue and hands each
// to a pool of workers. A worker delivers a message in one SMTP transaction
// per next hop and reports one outcome per recipient back to the queue:
//
//   - 2xx after DATA: delivered, with the server's reply.
//   - 5xx to MAIL, RCPT or DATA: failed. A 5xx to RCPT fails only that
//     recipient; a reply to MAIL or DATA applies to every recipient of the
//     transaction.
//   - 4xx, and any trouble before MAIL (DNS, connect, greeting, EHLO,
//     STARTTLS, TLS) or in the middle of the conversation (timeouts, a
//     dropped connection): deferred, to be retried after an exponential
//     backoff (Config.RetryFirst doubling up to Config.RetryMax).
//
// The relay promises that every recipient it claims gets an outcome recorded
// unless the process dies or the store refuses the write; then the lease runs
// out and the recipient is claimed again, so the only duplicate is a
// redelivery. A panic while delivering one message defers its recipients and
// leaves the relay running.
//
// Today every recipient goes to one smarthost (route.go). MX resolution,
// per-domain concurrency and DSN bounces come with the next milestone; they
// slot into route and into the failed branch of record.
package relay

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sesame-mail/sesame/store"
)

// Queue is what the relay needs from the store (store.SQLite satisfies it).
//
// Claim leases up to max messages with due recipients; a claimed recipient is
// not handed out again until Complete records its outcome or the lease runs
// out. NextDue is the earliest time an unleased recipient becomes due (ok is
// false when nothing waits). Ready receives a value after new mail is
// enqueued.
type Queue interface {
	Claim(ctx context.Context, now time.Time, max int, lease time.Duration) ([]store.Delivery, error)
	Complete(ctx context.Context, outcomes []store.Outcome) error
	NextDue(ctx context.Context) (time.Time, bool, error)
	Ready() <-chan struct{}
}

var _ Queue = (*store.SQLite)(nil)

// Config configures a Relay. Zero values take the defaults noted.
type Config struct {
	Hostname       string        // EHLO name (default: the OS host name)
	Smarthost      string        // "host:port"; "" = nothing to deliver to yet: mail stays queued
	SourceIPs      []string      // local addresses to dial from (round-robin); empty: OS chooses
	DNSServers     []string      // "ip:port" servers to resolve the smarthost's host name with; empty: system resolver
	Workers        int           // concurrent deliveries (default 8)
	RetryFirst     time.Duration // first retry delay (default 1m); doubles each attempt
	RetryMax       time.Duration // cap on the delay (default 1h)
	ConnectTimeout time.Duration // DNS lookup, and each TCP connect (default 30s)
	CommandTimeout time.Duration // per SMTP command, and for the reply to the data (default 5m)
	Logger         *slog.Logger  // default slog.Default()
	Now            func() time.Time
}

const (
	defaultWorkers        = 8
	defaultRetryFirst     = time.Minute
	defaultRetryMax       = time.Hour
	defaultConnectTimeout = 30 * time.Second
	defaultCommandTimeout = 5 * time.Minute

	// A delivery is cut off at deliveryTimeout, a minute before its lease
	// ends, so nobody claims the same recipients while we still talk.
	leaseTime       = 10 * time.Minute
	deliveryTimeout = leaseTime - time.Minute

	// pollInterval bounds every sleep: other processes may enqueue without
	// our Ready channel hearing of it.
	pollInterval = 30 * time.Second
	// minWait is the shortest sleep after a claim found nothing, so a store
	// that reports something due which Claim does not return cannot make the
	// dispatcher spin.
	minWait = 100 * time.Millisecond
	// storeRetry is the pause after the store failed a Claim or NextDue.
	storeRetry = 5 * time.Second
	// completeTimeout bounds the write of one delivery's outcomes.
	completeTimeout = time.Minute
)

// Relay delivers queued mail. Make it with New and start it with Run.
type Relay struct {
	cfg Config
	q   Queue
	log *slog.Logger
	now func() time.Time

	// Set by prepare from cfg before the workers start.
	smarthost hop
	sources   []netip.Addr
	resolver  *net.Resolver

	nextSource atomic.Uint64 // round-robin over sources
	nextDNS    atomic.Uint64 // round-robin over cfg.DNSServers
}

// New returns a Relay that delivers the mail of q as cfg says.
func New(cfg Config, q Queue) *Relay {
	if cfg.Hostname == "" {
		cfg.Hostname, _ = os.Hostname()
		if cfg.Hostname == "" {
			cfg.Hostname = "localhost"
		}
	}
	if cfg.Workers <= 0 {
		cfg.Workers = defaultWorkers
	}
	if cfg.RetryFirst <= 0 {
		cfg.RetryFirst = defaultRetryFirst
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = defaultRetryMax
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = defaultConnectTimeout
	}
	if cfg.CommandTimeout <= 0 {
		cfg.CommandTimeout = defaultCommandTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Relay{cfg: cfg, q: q, log: cfg.Logger, now: cfg.Now}
}

// prepare parses the addresses in the configuration.
func (r *Relay) prepare() error {
	host, port, err := net.SplitHostPort(r.cfg.Smarthost)
	if err != nil || host == "" || port == "" {
		return fmt.Errorf("relay: smarthost %q: want host:port", r.cfg.Smarthost)
	}
	r.smarthost = hop{host: host, port: port}
	for _, s := range r.cfg.SourceIPs {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return fmt.Errorf("relay: source IP %q: %w", s, err)
		}
		r.sources = append(r.sources, ip.Unmap())
	}
	for _, s := range r.cfg.DNSServers {
		if _, err := netip.ParseAddrPort(s); err != nil {
			return fmt.Errorf("relay: DNS server %q: want ip:port: %w", s, err)
		}
	}
	r.resolver = r.newResolver()
	return nil
}

// Run delivers until ctx is cancelled, then waits for the deliveries in
// flight (they are not cut short), closes its connections and returns nil. It
// returns an error only for a configuration it cannot use. Call it once.
func (r *Relay) Run(ctx context.Context) error {
	if r.cfg.Smarthost == "" {
		r.log.Warn("relay: no smarthost configured; mail stays queued")
		<-ctx.Done()
		return nil
	}
	if err := r.prepare(); err != nil {
		return err
	}
	r.log.Info("relay: started", "smarthost", r.cfg.Smarthost, "workers", r.cfg.Workers)

	// Both channels hold one value per worker, so neither side ever blocks:
	// the dispatcher hands out at most Workers deliveries at a time and each
	// ends with exactly one done.
	work := make(chan store.Delivery, r.cfg.Workers)
	done := make(chan struct{}, r.cfg.Workers)
	// Deliveries outlive ctx: a message already on the wire is finished, and
	// its outcome recorded, rather than abandoned until its lease runs out.
	wctx := context.WithoutCancel(ctx)
	var wg sync.WaitGroup
	for range r.cfg.Workers {
		w := &worker{r: r}
		wg.Go(func() { w.run(wctx, work, done) })
	}
	r.dispatch(ctx, work, done)
	close(work)
	wg.Wait()
	r.log.Info("relay: stopped")
	return nil
}

// dispatch claims due mail for free workers until ctx ends. When nothing is
// due it sleeps until the next recipient is due, new mail arrives, a worker
// finishes, or pollInterval passes.
func (r *Relay) dispatch(ctx context.Context, work chan<- store.Delivery, done <-chan struct{}) {
	busy := 0
	timer := time.NewTimer(pollInterval)
	defer timer.Stop()
	for ctx.Err() == nil {
		free := r.cfg.Workers - busy
		wait := pollInterval
		if free > 0 {
			ds, err := r.q.Claim(ctx, r.now(), free, leaseTime)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				r.log.Error("relay: claiming due mail failed", "err", err)
				wait = storeRetry
			}
			for _, d := range ds {
				work <- d
			}
			busy += len(ds)
			if len(ds) == free {
				continue // there may be more; wait for a worker, then claim again
			}
			if err == nil {
				wait = r.untilNextDue(ctx)
			}
		}

		// With every worker busy, only a finishing worker matters: new mail
		// waits for it, and the claim after it sees that mail.
		var ready <-chan struct{}
		var tick <-chan time.Time
		if r.cfg.Workers-busy > 0 {
			ready = r.q.Ready()
			timer.Reset(wait)
			tick = timer.C
		}
		select {
		case <-ctx.Done():
			return
		case <-done:
			busy--
		case <-ready:
		case <-tick:
		}
		timer.Stop()
	}
}

// untilNextDue is how long to sleep until the queue's next recipient is due.
func (r *Relay) untilNextDue(ctx context.Context) time.Duration {
	next, ok, err := r.q.NextDue(ctx)
	switch {
	case err != nil:
		if ctx.Err() == nil {
			r.log.Error("relay: reading the next due time failed", "err", err)
		}
		return storeRetry
	case !ok:
		return pollInterval
	}
	return min(max(next.Sub(r.now()), minWait), pollInterval)
}
