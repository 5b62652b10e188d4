// Package relay delivers queued mail to the next hop.
//
// One dispatcher goroutine (dispatch.go) claims due messages from the queue
// and starts a delivery for each, in a goroutine of its own, as many as
// Config.MemoryBudget holds (and at most Config.Workers, when set),
// Config.DomainConcurrency per destination domain, and three quarters of
// either per credential; mail for a busy domain stays in the queue, in
// order, while other domains and other senders go ahead.
//
// A delivery (worker.go) splits a message's recipients by destination
// domain (route.go), finds every domain's mail exchangers at once through
// DNS (resolver.go, which shares one query among simultaneous askers and
// remembers timeouts), and delivers each group in one SMTP transaction to
// the domain's mail exchangers in preference order, or to the smarthost
// when one is configured, every group at once. Each receiving server (by
// IP address) has a window of connections open at once, which grows while
// deliveries go well and shrinks when they do not (window.go).
// Connections are kept open and reused for the next message to the same
// server under the same name (pool.go).
//
// Every recipient gets one outcome per attempt (report.go):
//
//   - 2xx after DATA: delivered.
//   - 5xx to MAIL, RCPT or DATA, a domain that does not exist, a null MX:
//     bounced, with a DSN to the sender (dsn.go). A 5xx to RCPT bounces only
//     that recipient; a reply to MAIL or DATA applies to every recipient of
//     the transaction.
//   - 4xx, DNS trouble, and any trouble reaching a server (connect,
//     greeting, EHLO, STARTTLS, a dropped connection): deferred, retried
//     after an exponential backoff; a recipient still failing after
//     Config.MaxLifetime expires and bounces. The sender is warned once,
//     after Config.DelayWarning, that mail is still being retried.
//   - Stored bytes that are unusable (store.ErrCorrupt): quarantined, neither
//     retried nor bounced, and the message kept for the operator (`sesame
//     queue show`, then `queue delete --bounce` or `queue retry`).
//
// With MX delivery, each leg first asks the outbound IPs' Limiter (package
// warmup, applied in shaping.go) for room and leaves from the IP it
// chooses; recipients without room wait in the store, parked in a line per
// IP pool and provider, until the dispatcher releases them in arrival
// order. With Config.ReturnPath each recipient gets a transaction and a
// return path of its own (VERP). Recipients at Config.SimulatorDomain never
// leave: simulator.go gives them their outcome.
//
// No DSN is ever sent for a message whose sender is null: a bounce cannot
// bounce. The outcomes and the DSN are stored in one transaction. The relay
// promises that every recipient it claims gets an outcome recorded unless
// the process dies or the store refuses the write; then the lease runs out
// and the recipient is claimed again, so the only duplicate is a
// redelivery. A panic while delivering one message defers its recipients and
// leaves the relay running.
package relay

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sesame-mail/sesame/store"
	"github.com/sesame-mail/sesame/warmup"
)

// Queue is what the relay needs from the store (store.SQLite satisfies it).
//
// Claim leases up to max messages with due recipients, without their bytes;
// a claimed recipient is not handed out again until Complete records its
// outcome or the lease runs out. MessageData reads a message's bytes.
// Suppressed says which addresses are on the suppression list.
// NextDue is the earliest time a waiting recipient becomes due (ok is false
// when nothing waits). Ready receives a value when new mail may be due.
type Queue interface {
	Claim(ctx context.Context, now time.Time, max int, lease time.Duration) ([]store.Delivery, error)
	MessageData(ctx context.Context, id string) ([]byte, error)
	Suppressed(ctx context.Context, credential string, addresses []string) (map[string]bool, error)
	Complete(ctx context.Context, r store.Report) error
	NextDue(ctx context.Context) (time.Time, bool, error)
	Ready() <-chan struct{}

	// The state of outbound IPs and the mail parked for their capacity
	// (see shaping.go).
	ClaimParked(ctx context.Context, line string, now time.Time, max int, lease time.Duration) ([]store.Delivery, error)
	ParkedCounts(ctx context.Context) (map[string]int, error)
	IPSends(ctx context.Context, since time.Time) ([]store.IPSend, error)
	PruneIPSends(ctx context.Context, before time.Time) error
	IPSuspensions(ctx context.Context) ([]store.IPSuspension, error)
	SetIPSuspension(ctx context.Context, s store.IPSuspension) error
	IPPauses(ctx context.Context) ([]store.IPPause, error)
}

var _ Queue = (*store.SQLite)(nil)

// Config configures a Relay. Zero values take the defaults noted.
type Config struct {
	Hostname  string   // EHLO name, DSN Reporting-MTA (default: the OS host name)
	Smarthost string   // "host:port" to send everything to; "" delivers to each domain's MX
	MXPort    int      // port of mail exchangers (default 25)
	SourceIPs []string // smarthost only: local addresses to dial from (round-robin); empty: OS chooses
	// Shaper applies the outbound IPs' warm-up and provider limits to MX
	// delivery and chooses the source address of each; nil sends without
	// limits from SourceIPs. Not used with a smarthost, whose own addresses
	// are the ones mailbox providers see.
	Shaper     *warmup.Limiter
	DNSServers []string // "ip:port" servers; empty: those of /etc/resolv.conf
	// Workers, when positive, caps the deliveries in flight in total, below
	// what MemoryBudget allows; 0: no cap but the budget's.
	Workers int
	// MemoryBudget bounds the deliveries in flight by what they hold in
	// memory: each counts its message's size and deliveryOverhead (default
	// 256 MiB, about 3,000 deliveries of 10 KiB messages).
	MemoryBudget int64
	// DomainConcurrency caps the deliveries in flight per destination domain
	// (default 20).
	DomainConcurrency int
	// DestinationConcurrency caps the connections open at once to one
	// receiving server (IP address), whatever the domains (default 20);
	// InitialDestinationConcurrency is where each server's window starts
	// before it grows (default 5). See window.go.
	DestinationConcurrency        int
	InitialDestinationConcurrency int
	// SmarthostConcurrency is the connections open at once to the
	// smarthost (default 32).
	SmarthostConcurrency int
	RetryFirst           time.Duration // first retry delay (default 5m); doubles each attempt
	RetryMax             time.Duration // cap on the delay (default 1h)
	MaxLifetime          time.Duration // give up (bounce) after this long in the queue (default 5 days)
	DelayWarning         time.Duration // warn the sender once after this long (default 0: never)
	ConnectTimeout       time.Duration // DNS lookups, and each TCP connect (default 30s)
	CommandTimeout       time.Duration // per SMTP command, and for the reply to the data (default 5m)
	// ReturnPath, when set, gives the MAIL FROM for one recipient of a
	// message (a VERP address, see package verp), or "" to keep the
	// sender; each recipient then goes in a transaction of its own. Never
	// called for the null sender.
	ReturnPath func(sender, queueID, rcpt string) string
	// SimulatorDomain is the mailbox simulator's domain (simulator.go);
	// "" turns it off.
	SimulatorDomain string
	// AllowPrivateDestinations lets MX delivery connect to addresses that are
	// not globally reachable (destinations.go) and to this host's own; off,
	// such destinations fail.
	AllowPrivateDestinations bool
	// SystemSigner DKIM-signs the DSNs and delay warnings, which come from
	// MAILER-DAEMON@Hostname; nil leaves them unsigned.
	SystemSigner SystemSigner
	Metrics      Metrics      // default: none
	Logger       *slog.Logger // default slog.Default()
	Now          func() time.Time
}

// SystemSigner signs the mail Sesame writes itself (dkim.SystemSigner): it
// returns msg with a signature on top, or as it was when it cannot sign.
type SystemSigner interface {
	Sign(ctx context.Context, msg []byte) []byte
}

// Metrics counts deliveries.
type Metrics interface {
	// Delivery counts one recipient's outcome: its state, the mail
	// exchanger that answered ("" if none), the source IP, and the time
	// since the message was accepted.
	Delivery(state, mxHost, sourceIP string, sinceAccepted time.Duration)
	// OutboundConnection counts a new connection by its TLS version.
	OutboundConnection(tlsVersion string)
}

type noMetrics struct{}

func (noMetrics) Delivery(string, string, string, time.Duration) {}
func (noMetrics) OutboundConnection(string)                      {}

const (
	defaultMemoryBudget      = 256 << 20
	defaultDomainConcurrency = 20
	defaultMXPort            = 25
	defaultRetryFirst        = 5 * time.Minute
	defaultRetryMax          = time.Hour
	defaultMaxLifetime       = 5 * 24 * time.Hour
	defaultConnectTimeout    = 30 * time.Second
	defaultCommandTimeout    = 5 * time.Minute

	// A delivery is cut off at deliveryTimeout, a minute before its lease
	// ends, so nobody claims the same recipients while we still talk.
	leaseTime       = 10 * time.Minute
	deliveryTimeout = leaseTime - time.Minute

	// pollInterval bounds every sleep, as a safety net under Ready.
	pollInterval = 30 * time.Second
	// minWait is the shortest sleep after a claim found nothing, so a store
	// that reports something due which Claim does not return cannot make the
	// dispatcher spin.
	minWait = 100 * time.Millisecond
	// storeRetry is the pause after the store failed a Claim or NextDue.
	storeRetry = 5 * time.Second
	// dnsQueryTimeout bounds one DNS query to one server.
	dnsQueryTimeout = 5 * time.Second
	// completeTimeout bounds the write of one delivery's outcomes.
	completeTimeout = time.Minute
	// tlsSessionCacheSize bounds the TLS sessions kept for resumption, one
	// per server name.
	tlsSessionCacheSize = 10000
)

// Relay delivers queued mail. Make it with New and start it with Run.
type Relay struct {
	cfg Config
	q   Queue
	log *slog.Logger
	now func() time.Time

	// Set by prepare from cfg before the workers start.
	smarthost   *hop // nil: MX delivery
	sources     []netip.Addr
	dns         *resolver
	own         map[netip.Addr]bool // this host's addresses, never a destination
	conns       *pool
	windows     *windows // connections at once per server
	servers     *servers // the server each domain's mail last went to
	tlsSessions tls.ClientSessionCache
	shaper      *warmup.Limiter // nil: no shaping
	lines       *lines

	nextSource atomic.Uint64 // round-robin over sources
}

// New returns a Relay that delivers the mail of q as cfg says.
func New(cfg Config, q Queue) *Relay {
	if cfg.Hostname == "" {
		cfg.Hostname, _ = os.Hostname()
		if cfg.Hostname == "" {
			cfg.Hostname = "localhost"
		}
	}
	setDefault := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	cfg.Workers = max(cfg.Workers, 0)
	if cfg.MemoryBudget <= 0 {
		cfg.MemoryBudget = defaultMemoryBudget
	}
	setDefault(&cfg.DomainConcurrency, defaultDomainConcurrency)
	setDefault(&cfg.DestinationConcurrency, defaultDestinationConcurrency)
	setDefault(&cfg.InitialDestinationConcurrency, defaultInitialDestinationConcurrency)
	setDefault(&cfg.SmarthostConcurrency, defaultSmarthostConcurrency)
	setDefault(&cfg.MXPort, defaultMXPort)
	setDuration := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	setDuration(&cfg.RetryFirst, defaultRetryFirst)
	setDuration(&cfg.RetryMax, defaultRetryMax)
	setDuration(&cfg.MaxLifetime, defaultMaxLifetime)
	setDuration(&cfg.ConnectTimeout, defaultConnectTimeout)
	setDuration(&cfg.CommandTimeout, defaultCommandTimeout)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Metrics == nil {
		cfg.Metrics = noMetrics{}
	}
	return &Relay{cfg: cfg, q: q, log: cfg.Logger, now: cfg.Now}
}

// prepare parses the addresses in the configuration.
func (r *Relay) prepare() error {
	if r.cfg.Smarthost != "" {
		host, port, err := net.SplitHostPort(r.cfg.Smarthost)
		if err != nil || host == "" || port == "" {
			return fmt.Errorf("relay: smarthost %q: want host:port", r.cfg.Smarthost)
		}
		r.smarthost = &hop{host: host, port: port}
	}
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
	var err error
	// A dead first server must not cost a whole connect timeout per query
	// before the next one is asked.
	r.dns, err = newResolver(r.cfg.DNSServers, min(r.cfg.ConnectTimeout, dnsQueryTimeout), r.now)
	if err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	// A domain whose name servers time out is not asked again before its
	// mail's first retry: until then its recipients are deferred at once,
	// without holding a delivery slot for a timeout each.
	r.dns.failFor = r.cfg.RetryFirst
	r.own = ownAddrs()
	// As many idle per server as may be open at once, so none is churned.
	if r.smarthost != nil {
		r.conns = newPool(r.cfg.SmarthostConcurrency)
		r.windows = newWindows(r.cfg.SmarthostConcurrency, r.cfg.SmarthostConcurrency, true, 0, r.conns, r.now)
	} else {
		r.conns = newPool(r.cfg.DestinationConcurrency)
		r.windows = newWindows(r.cfg.InitialDestinationConcurrency, r.cfg.DestinationConcurrency, false,
			r.cfg.RetryFirst, r.conns, r.now)
	}
	r.tlsSessions = tls.NewLRUClientSessionCache(tlsSessionCacheSize)
	r.servers = newServers()
	r.lines = newLines()
	if r.smarthost == nil && r.cfg.Shaper != nil {
		r.shaper = r.cfg.Shaper
	}
	return nil
}

// ownAddrs lists this host's interface addresses: an MX pointing at one of
// them would make Sesame deliver to itself.
func ownAddrs() map[netip.Addr]bool {
	own := map[netip.Addr]bool{}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return own
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			own[p.Addr().Unmap()] = true
		}
	}
	return own
}

// Run delivers until ctx is cancelled, then waits for the deliveries in
// flight (they are not cut short), closes its connections and returns nil. It
// returns an error only for a configuration it cannot use. Call it once.
func (r *Relay) Run(ctx context.Context) error {
	if err := r.prepare(); err != nil {
		return err
	}
	if r.shaper != nil {
		// Without the counters the caps could be exceeded: wait for the
		// store rather than guess.
		for {
			err := r.loadShaping(ctx)
			if err == nil {
				break
			}
			r.log.Error("relay: reading the outbound IPs' counters failed; retrying", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(storeRetry):
			}
		}
	}
	if r.smarthost != nil {
		r.log.Info("relay: started", "smarthost", r.cfg.Smarthost, "concurrency", r.cfg.SmarthostConcurrency,
			"workers", r.cfg.Workers, "memory_budget", r.cfg.MemoryBudget)
	} else {
		r.log.Info("relay: started", "mx_port", r.cfg.MXPort, "workers", r.cfg.Workers,
			"memory_budget", r.cfg.MemoryBudget, "domain_concurrency", r.cfg.DomainConcurrency,
			"destination_concurrency", r.cfg.DestinationConcurrency)
	}

	// Each delivery runs in a goroutine of its own, started by the
	// dispatcher, and reports back on done. Deliveries outlive ctx: a
	// message already on the wire is finished, and its outcome recorded,
	// rather than abandoned until its lease runs out.
	done := make(chan store.Delivery)
	wctx := context.WithoutCancel(ctx)
	var wg sync.WaitGroup
	launch := func(del store.Delivery) {
		wg.Go(func() {
			(&worker{r: r}).deliver(wctx, del)
			done <- del
		})
	}
	janitorDone := make(chan struct{})
	go func() {
		defer close(janitorDone)
		r.conns.closeIdleEvery(ctx, idleTimeout/3, r.windows.forget)
	}()
	newDispatcher(r, launch, done).run(ctx)
	// The dispatcher no longer listens: take the reports of the deliveries
	// still in flight until the last has ended.
	ended := make(chan struct{})
	go func() {
		wg.Wait()
		close(ended)
	}()
	for waiting := true; waiting; {
		select {
		case <-done:
		case <-ended:
			waiting = false
		}
	}
	<-janitorDone
	r.conns.closeAll()
	r.log.Info("relay: stopped")
	return nil
}
