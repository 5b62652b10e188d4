// Package config reads Sesame's TOML configuration file into typed structs,
// fills in defaults, and validates the whole file at once: every problem is
// reported, each naming its key and what is expected, so an operator fixes a
// broken file in one go.
//
// Every key, its default and its meaning are listed in docs/configuration.md;
// a test checks that the two agree.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// DefaultPath is where the commands look when --config is not given.
const DefaultPath = "/etc/sesame/sesame.toml"

// Config is the whole configuration.
type Config struct {
	Hostname   string     `toml:"hostname"`
	DataDir    string     `toml:"data_dir"`
	LogLevel   string     `toml:"log_level"`
	LogFormat  string     `toml:"log_format"`
	Submission Submission `toml:"submission"`
	Relay      Relay      `toml:"relay"`
	HTTP       HTTP       `toml:"http"`
	TLS        TLS        `toml:"tls"`
	API        API        `toml:"api"`
	DKIM       DKIM       `toml:"dkim"`
	Policy     Policy     `toml:"policy"`
	Identity   Identity   `toml:"identity"`
	Events     Events     `toml:"events"`
	Reputation Reputation `toml:"reputation"`
	Webhooks   []Webhook  `toml:"webhook"`
	Inbound    Inbound    `toml:"inbound"`
	IPs        []IP       `toml:"ip"`
	Warmup     Warmup     `toml:"warmup"`
	Providers  []Provider `toml:"provider"`

	// Path is the file the configuration was read from; "" for built-in defaults.
	Path string `toml:"-"`
}

// Submission configures the listeners that apps submit mail to.
type Submission struct {
	StartTLSListen      []string `toml:"starttls_listen"`
	TLSListen           []string `toml:"tls_listen"`
	TLSCertFile         string   `toml:"tls_cert_file"`
	TLSKeyFile          string   `toml:"tls_key_file"`
	MaxMessageBytes     int64    `toml:"max_message_bytes"`
	MaxRecipients       int      `toml:"max_recipients"`
	MaxConnections      int      `toml:"max_connections"`
	MaxConnectionsPerIP int      `toml:"max_connections_per_ip"`
	ReadTimeout         Duration `toml:"read_timeout"`
	WriteTimeout        Duration `toml:"write_timeout"`
	AuthCacheTTL        Duration `toml:"auth_cache_ttl"`

	MaxUnauthenticatedConnections      int      `toml:"max_unauthenticated_connections"`
	MaxUnauthenticatedConnectionsPerIP int      `toml:"max_unauthenticated_connections_per_ip"`
	UnauthenticatedReadTimeout         Duration `toml:"unauthenticated_read_timeout"`

	AuthFailuresPerConnection int      `toml:"auth_failures_per_connection"`
	AuthFailuresPerNetwork    int      `toml:"auth_failures_per_network"`
	AuthFailuresPerUsername   int      `toml:"auth_failures_per_username"`
	AuthFailureWindow         Duration `toml:"auth_failure_window"`
	AuthBlockTime             Duration `toml:"auth_block_time"`
	AuthFailureDelay          Duration `toml:"auth_failure_delay"`
	AuthFailureReportInterval Duration `toml:"auth_failure_report_interval"`

	// MaxInflightBytes bounds the memory of messages being received,
	// signed and queued at once; one client network may use a quarter.
	MaxInflightBytes int64 `toml:"max_inflight_bytes"`
}

// Relay configures what happens to mail after it is queued.
type Relay struct {
	Smarthost                     string   `toml:"smarthost"`
	DNSServers                    []string `toml:"dns_servers"`
	MXPort                        int      `toml:"mx_port"`
	SourceIPs                     []string `toml:"source_ips"`
	Workers                       int      `toml:"workers"`
	MemoryBudget                  int64    `toml:"memory_budget"`
	DomainConcurrency             int      `toml:"domain_concurrency"`
	DestinationConcurrency        int      `toml:"destination_concurrency"`
	InitialDestinationConcurrency int      `toml:"initial_destination_concurrency"`
	SmarthostConcurrency          int      `toml:"smarthost_concurrency"`
	RetryFirst                    Duration `toml:"retry_first"`
	RetryMax                      Duration `toml:"retry_max"`
	MaxLifetime                   Duration `toml:"max_lifetime"`
	DelayWarning                  Duration `toml:"delay_warning"`
	ConnectTimeout                Duration `toml:"connect_timeout"`
	CommandTimeout                Duration `toml:"command_timeout"`
	AllowPrivateDestinations      bool     `toml:"allow_private_destinations"`
}

// HTTP configures the HTTP listener (/healthz, verification links).
type HTTP struct {
	Listen              string   `toml:"listen"`
	PublicURL           string   `toml:"public_url"`
	Pprof               bool     `toml:"pprof"`
	MaxConnections      int      `toml:"max_connections"`
	MaxConnectionsPerIP int      `toml:"max_connections_per_ip"`
	ReadTimeout         Duration `toml:"read_timeout"`
	WriteTimeout        Duration `toml:"write_timeout"`
	IdleTimeout         Duration `toml:"idle_timeout"`
	MaxBodyBytes        int64    `toml:"max_body_bytes"`
}

// TLS configures certificates from an ACME CA (Let's Encrypt) for the TLS
// listeners, instead of submission.tls_cert_file.
type TLS struct {
	ACMEDomains    []string `toml:"acme_domains"`
	ACMEEmail      string   `toml:"acme_email"`
	ACMEDirectory  string   `toml:"acme_directory"`
	ACMECAFile     string   `toml:"acme_ca_file"`
	ACMEHTTPListen string   `toml:"acme_http_listen"`
	ACMETLSListen  string   `toml:"acme_tls_listen"`
}

// LetsEncryptDirectory is the default tls.acme_directory.
const LetsEncryptDirectory = "https://acme-v02.api.letsencrypt.org/directory"

// API configures the SES-compatible HTTP API.
type API struct {
	Listen string `toml:"listen"` // "" turns it off
	// TLS serves HTTPS (the default); false serves plain HTTP, allowed
	// only on a loopback address (a reverse proxy in front).
	TLS bool `toml:"tls"`
	// The certificate; empty: the submission service's.
	TLSCertFile         string   `toml:"tls_cert_file"`
	TLSKeyFile          string   `toml:"tls_key_file"`
	MaxConnections      int      `toml:"max_connections"`
	MaxConnectionsPerIP int      `toml:"max_connections_per_ip"`
	ReadTimeout         Duration `toml:"read_timeout"`
	WriteTimeout        Duration `toml:"write_timeout"`
	IdleTimeout         Duration `toml:"idle_timeout"`
}

// DKIM configures signing and key rotation.
type DKIM struct {
	Ed25519        bool     `toml:"ed25519"`
	FallbackDomain string   `toml:"fallback_domain"`
	SystemDomain   string   `toml:"system_domain"` // see Config.SystemDomain
	RotateEvery    Duration `toml:"rotate_every"`
	RotationGrace  Duration `toml:"rotation_grace"`
}

// Policy configures the sandbox and the sending quotas.
type Policy struct {
	SandboxNewUsers    bool    `toml:"sandbox_new_users"`
	DailyQuota         int     `toml:"daily_quota"`
	MaxSendRate        float64 `toml:"max_send_rate"`
	SandboxDailyQuota  int     `toml:"sandbox_daily_quota"`
	SandboxMaxSendRate float64 `toml:"sandbox_max_send_rate"`
	SimulatorDomain    string  `toml:"simulator_domain"`
	SuppressionScope   string  `toml:"suppression_scope"`
}

// Reputation configures the guard that pauses credentials whose bounce or
// complaint rate is too high.
type Reputation struct {
	Window           Duration `toml:"window"`
	MinVolume        int      `toml:"min_volume"`
	BounceWarning    float64  `toml:"bounce_warning"`
	BouncePause      float64  `toml:"bounce_pause"`
	ComplaintWarning float64  `toml:"complaint_warning"`
	ComplaintPause   float64  `toml:"complaint_pause"`
}

// Webhook is one endpoint events are POSTed to ([[webhook]] tables).
type Webhook struct {
	URL        string   `toml:"url"`
	Secret     string   `toml:"secret"`
	Events     []string `toml:"events"`
	Credential string   `toml:"credential"`
}

// Inbound configures the listener for bounces and feedback reports.
type Inbound struct {
	Listen              []string `toml:"listen"`
	FeedbackAddresses   []string `toml:"feedback_addresses"`
	MaxMessageBytes     int64    `toml:"max_message_bytes"`
	MaxConnections      int      `toml:"max_connections"`
	MaxConnectionsPerIP int      `toml:"max_connections_per_ip"`
	ReadTimeout         Duration `toml:"read_timeout"`
	WriteTimeout        Duration `toml:"write_timeout"`
	// FeedbackReporters are the addresses, or domains, whose DKIM-signed
	// complaints are believed; FeedbackReporterIPs the networks (CIDR or
	// single addresses) whose complaints are believed unsigned.
	FeedbackReporters   []string `toml:"feedback_reporters"`
	FeedbackReporterIPs []string `toml:"feedback_reporter_ips"`
	// What is kept of what arrives: the start of each message, and in
	// total, per client and per hour, bounded counts and bytes.
	KeepRawBytes          int64 `toml:"keep_raw_bytes"`
	MaxStoredMessages     int   `toml:"max_stored_messages"`
	MaxStoredBytes        int64 `toml:"max_stored_bytes"`
	ClientMessagesPerHour int   `toml:"client_messages_per_hour"` // 0: no per-client cap
	ClientBytesPerHour    int64 `toml:"client_bytes_per_hour"`    // 0: no per-client cap
	MinFreeBytes          int64 `toml:"min_free_bytes"`           // 0: no reserve
}

// DefaultFeedbackReporters are the feedback loops whose signed complaints
// are believed unless inbound.feedback_reporters says otherwise
// (docs/configuration.md says where each comes from): Yahoo's Complaint
// Feedback Loop, which also covers AOL and the other domains Yahoo hosts
// (from feedback@arf.mail.yahoo.com, signed d=arf.mail.yahoo.com);
// Microsoft's JMRP for Outlook.com and Hotmail (staff@hotmail.com);
// Comcast's, run by Validity (feedbackloop@comcastfbl.senderscore.net);
// and AOL's former loop (scomp@aol.net). Gmail sends no ARF reports.
var DefaultFeedbackReporters = []string{
	"arf.mail.yahoo.com",
	"staff@hotmail.com",
	"comcastfbl.senderscore.net",
	"scomp@aol.net",
}

// IP is one outbound address ([[ip]] tables).
type IP struct {
	Address     string `toml:"address"`
	Pool        string `toml:"pool"`
	WarmupStart string `toml:"warmup_start"`
}

// Warmup configures the warm-up schedule of new IPs and the suspensions
// after a provider's throttling.
type Warmup struct {
	Schedule           []int    `toml:"schedule"`
	SpreadHours        int      `toml:"spread_hours"`
	ThrottleBackoff    Duration `toml:"throttle_backoff"`
	ThrottleBackoffMax Duration `toml:"throttle_backoff_max"`
	DefaultProviders   bool     `toml:"default_providers"`
}

// Provider is a group of destinations known by their MX host names, with
// per-IP limits ([[provider]] tables).
type Provider struct {
	Name          string   `toml:"name"`
	MX            []string `toml:"mx"`
	WarmupHourly  int      `toml:"warmup_hourly"`
	Hourly        int      `toml:"hourly"`
	PerConnection int      `toml:"per_connection"`
}

// DefaultPool is the IP pool of credentials that were given none.
const DefaultPool = "default"

// Pools lists the IP pools the configuration defines, "default" first.
func (c *Config) Pools() []string {
	out := []string{DefaultPool}
	for _, ip := range c.IPs {
		if p := ip.poolName(); !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

func (ip IP) poolName() string {
	if ip.Pool == "" {
		return DefaultPool
	}
	return ip.Pool
}

// Events configures the event log.
type Events struct {
	Retention Duration `toml:"retention"`
}

// Identity configures the verification of domains and addresses.
type Identity struct {
	PendingCheckInterval  Duration `toml:"pending_check_interval"`
	VerifiedCheckInterval Duration `toml:"verified_check_interval"`
	PendingTimeout        Duration `toml:"pending_timeout"`
	FailedAfterChecks     int      `toml:"failed_after_checks"`
	AddressLinkTTL        Duration `toml:"address_link_ttl"`
	MailFromSubdomain     string   `toml:"mail_from_subdomain"`
	DMARCReportAddress    string   `toml:"dmarc_report_address"`
	BulkSender            bool     `toml:"bulk_sender"`
	// Let verified addresses send whatever their domain's DMARC policy.
	AllowDMARCProtectedAddresses bool `toml:"allow_dmarc_protected_addresses"`
}

// Duration is a time.Duration written as a Go duration string ("90s", "5m").
type Duration struct{ time.Duration }

// UnmarshalText parses a duration string: Go's ("90s", "5m", "36h"), or
// a whole number of days first ("180d", "1d12h").
func (d *Duration) UnmarshalText(b []byte) error {
	s := string(b)
	var days time.Duration
	if n, rest, ok := strings.Cut(s, "d"); ok {
		v, err := strconv.ParseUint(n, 10, 16)
		if err != nil {
			return fmt.Errorf("%q is not a duration such as \"30s\", \"5m\" or \"7d\"", b)
		}
		days, s = time.Duration(v)*24*time.Hour, rest
		if s == "" {
			d.Duration = days
			return nil
		}
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration such as \"30s\", \"5m\" or \"7d\"", b)
	}
	d.Duration = days + v
	return nil
}

// MarshalText writes the duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// eventTypes are the event types a webhook may ask for (store.EventTypes;
// repeated here so that config does not depend on the store).
var eventTypes = []string{"send", "delivery", "deferral", "bounce", "expired", "reject", "suppressed", "complaint", "dkim_rotation"}

// SystemDomain is the domain whose keys sign the mail Sesame writes itself
// (address verification, DSNs): dkim.system_domain, or the domain of
// hostname, which is hostname without its first label when it has three or
// more (mail.example.com → example.com), else hostname itself. "" when
// neither names a domain.
func (c *Config) SystemDomain() string {
	if c.DKIM.SystemDomain != "" {
		return strings.ToLower(c.DKIM.SystemDomain)
	}
	h := strings.ToLower(strings.TrimSuffix(c.Hostname, "."))
	switch strings.Count(h, ".") {
	case 0:
		return "" // "localhost": no domain to sign for
	case 1:
		return h
	}
	_, d, _ := strings.Cut(h, ".")
	return d
}

// PublicURL is the base of links Sesame puts in mail: http.public_url, or
// https://HOSTNAME.
func (c *Config) PublicURL() string {
	if c.HTTP.PublicURL != "" {
		return c.HTTP.PublicURL
	}
	return "https://" + c.Hostname
}

// Default returns the built-in configuration: data in ./sesame-data and every
// listener on loopback, enough for a first try on one machine.
func Default() *Config {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return &Config{
		Hostname:  host,
		DataDir:   "sesame-data",
		LogLevel:  "info",
		LogFormat: "text",
		Submission: Submission{
			StartTLSListen:      []string{"127.0.0.1:587"},
			TLSListen:           []string{"127.0.0.1:465"},
			MaxMessageBytes:     40 << 20, // 40 MiB, as SES
			MaxRecipients:       50,       // as SES
			MaxConnections:      1000,
			MaxConnectionsPerIP: 100,
			ReadTimeout:         Duration{5 * time.Minute}, // RFC 5321 §4.5.3.2.7 server timeout
			WriteTimeout:        Duration{time.Minute},
			AuthCacheTTL:        Duration{5 * time.Minute},
			// A quarter of the slots for clients that have not logged in
			// yet (deriveDefaults); an app logs in within a second.
			MaxUnauthenticatedConnections:      250,
			MaxUnauthenticatedConnectionsPerIP: 25,
			UnauthenticatedReadTimeout:         Duration{30 * time.Second},

			AuthFailuresPerConnection: 3,
			AuthFailuresPerNetwork:    10,
			AuthFailuresPerUsername:   20,
			AuthFailureWindow:         Duration{15 * time.Minute},
			AuthBlockTime:             Duration{15 * time.Minute},
			AuthFailureDelay:          Duration{250 * time.Millisecond},
			AuthFailureReportInterval: Duration{10 * time.Second},

			MaxInflightBytes: 512 << 20, // a dozen messages of the maximum size
		},
		Relay: Relay{
			MXPort:       25,
			MemoryBudget: 256 << 20,
			// As Postfix's default_destination_concurrency_limit and
			// initial_destination_concurrency.
			DomainConcurrency:             20,
			DestinationConcurrency:        20,
			InitialDestinationConcurrency: 5,
			SmarthostConcurrency:          32,
			// Backoff and lifetime close to Postfix's (minimal_backoff_time,
			// maximal_backoff_time, maximal_queue_lifetime, delay_warning_time).
			RetryFirst:     Duration{5 * time.Minute},
			RetryMax:       Duration{time.Hour},
			MaxLifetime:    Duration{5 * 24 * time.Hour},
			DelayWarning:   Duration{4 * time.Hour},
			ConnectTimeout: Duration{30 * time.Second},
			CommandTimeout: Duration{5 * time.Minute}, // RFC 5321 §4.5.3.2
		},
		HTTP: HTTP{
			Listen:              "127.0.0.1:8025",
			MaxConnections:      256,
			MaxConnectionsPerIP: 64,
			ReadTimeout:         Duration{30 * time.Second},
			WriteTimeout:        Duration{time.Minute},
			IdleTimeout:         Duration{time.Minute},
			MaxBodyBytes:        1 << 20,
		},
		TLS: TLS{ACMEDirectory: LetsEncryptDirectory},
		// A replaced key's record stays published a week: mail signed with
		// it may sit in queues for days, and receivers check again later.
		DKIM: DKIM{RotationGrace: Duration{7 * 24 * time.Hour}},
		API: API{
			Listen:              "127.0.0.1:8443",
			TLS:                 true,
			MaxConnections:      512,
			MaxConnectionsPerIP: 128,
			// A request carries a whole message: 40 MiB, base64-encoded,
			// over a slow uplink takes a while.
			ReadTimeout:  Duration{5 * time.Minute},
			WriteTimeout: Duration{5 * time.Minute},
			IdleTimeout:  Duration{2 * time.Minute},
		},
		// As SES: new credentials start in the sandbox (200 a day, 1 a
		// second); production starts at 50,000 a day and 14 a second.
		Policy: Policy{
			SandboxNewUsers:    true,
			DailyQuota:         50000,
			MaxSendRate:        14,
			SandboxDailyQuota:  200,
			SandboxMaxSendRate: 1,
			SimulatorDomain:    "simulator.sesame.test",
			SuppressionScope:   "shared",
		},
		Identity: Identity{
			PendingCheckInterval:  Duration{5 * time.Minute},
			VerifiedCheckInterval: Duration{24 * time.Hour},
			PendingTimeout:        Duration{72 * time.Hour},
			FailedAfterChecks:     3,
			AddressLinkTTL:        Duration{24 * time.Hour},
			MailFromSubdomain:     "bounce",
			// Held to the bulk-sender rules unless the operator says it
			// sends little: a user should meet them without knowing them.
			BulkSender: true,
		},
		Events: Events{Retention: Duration{30 * 24 * time.Hour}},
		Inbound: Inbound{
			FeedbackReporters: slices.Clone(DefaultFeedbackReporters),
			// Reports are small (a DSN is a few KiB, an ARF report with
			// the original message rarely over a few hundred), and anyone
			// may send them: 1 MiB taken, the first 64 KiB of each kept,
			// 64 MiB in all, and 256 MiB of the disk left to the queue.
			MaxMessageBytes:       1 << 20,
			KeepRawBytes:          64 << 10,
			MaxStoredMessages:     10000,
			MaxStoredBytes:        64 << 20,
			ClientMessagesPerHour: 100,
			ClientBytesPerHour:    4 << 20,
			MinFreeBytes:          256 << 20,
			MaxConnections:        200,
			MaxConnectionsPerIP:   20,
			ReadTimeout:           Duration{5 * time.Minute}, // RFC 5321 §4.5.3.2.7
			WriteTimeout:          Duration{time.Minute},
		},
		Warmup: Warmup{
			SpreadHours:        12,
			ThrottleBackoff:    Duration{15 * time.Minute},
			ThrottleBackoffMax: Duration{4 * time.Hour},
			DefaultProviders:   true,
		},
		// Bounces: SES's thresholds, warning at 5%, sending paused at 10%.
		// Complaints: the mailbox providers' (Gmail's and Yahoo's sender
		// rules of 2024): under 0.1% is healthy, 0.3% and over gets mail
		// refused or junked, so pause there, before SES's 0.5% would.
		Reputation: Reputation{
			Window:           Duration{7 * 24 * time.Hour},
			MinVolume:        200,
			BounceWarning:    0.05,
			BouncePause:      0.10,
			ComplaintWarning: 0.001,
			ComplaintPause:   0.003,
		},
	}
}

// Error lists every problem found in a configuration.
type Error struct {
	Path     string
	Problems []string
}

func (e *Error) Error() string {
	where := e.Path
	if where == "" {
		where = "built-in defaults"
	}
	return fmt.Sprintf("config %s:\n  %s", where, strings.Join(e.Problems, "\n  "))
}

// Load reads the file at path over the defaults. When explicit is false
// (no --config flag) and the file does not exist, the defaults are used.
func Load(path string, explicit bool) (*Config, error) {
	cfg := Default()
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !explicit {
		return cfg, cfg.Validate()
	}
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg.Path = path
	return cfg, cfg.parse(data)
}

// Parse reads TOML text over the defaults and validates the result.
func Parse(text string) (*Config, error) {
	cfg := Default()
	return cfg, cfg.parse([]byte(text))
}

func (c *Config) parse(data []byte) error {
	md, err := toml.Decode(string(data), c)
	if err != nil {
		var perr toml.ParseError
		if errors.As(err, &perr) {
			return &Error{Path: c.Path, Problems: []string{parseErrorText(perr)}}
		}
		return &Error{Path: c.Path, Problems: []string{err.Error()}}
	}
	c.deriveDefaults(md)
	var problems []string
	for _, key := range md.Undecoded() {
		problems = append(problems, fmt.Sprintf("%s: unknown key; see docs/configuration.md for the keys Sesame knows", key))
	}
	if err := c.Validate(); err != nil {
		problems = append(problems, err.(*Error).Problems...)
	}
	if len(problems) > 0 {
		return &Error{Path: c.Path, Problems: problems}
	}
	return nil
}

// deriveDefaults sets the keys whose default follows another key the file
// set: the caps on clients not logged in are a quarter of the caps on all
// connections, and their read timeout at most read_timeout, so a file that
// lowers those still works.
func (c *Config) deriveDefaults(md toml.MetaData) {
	s := &c.Submission
	if !md.IsDefined("submission", "max_unauthenticated_connections") {
		s.MaxUnauthenticatedConnections = max(1, s.MaxConnections/4)
	}
	if !md.IsDefined("submission", "max_unauthenticated_connections_per_ip") {
		s.MaxUnauthenticatedConnectionsPerIP = max(1, s.MaxConnectionsPerIP/4)
	}
	if !md.IsDefined("submission", "unauthenticated_read_timeout") {
		s.UnauthenticatedReadTimeout.Duration = min(s.UnauthenticatedReadTimeout.Duration, s.ReadTimeout.Duration)
	}
}

// parseErrorText shows a TOML syntax error with the lines around it. The
// library's formatter panics on some inputs (a file ending inside a quoted
// string, found by FuzzParse); the plain message is used then.
func parseErrorText(perr toml.ParseError) (text string) {
	defer func() {
		if recover() != nil {
			text = perr.Error()
		}
	}()
	return strings.TrimSpace(perr.ErrorWithPosition())
}

// Validate checks every value and reports all problems at once.
func (c *Config) Validate() error {
	var p []string
	bad := func(key, format string, args ...any) {
		p = append(p, key+": "+fmt.Sprintf(format, args...))
	}

	if !validHostname(c.Hostname) {
		bad("hostname", "%q is not a host name; set the fully qualified name clients and receivers see, e.g. \"relay.example.com\"", c.Hostname)
	}
	if c.DataDir == "" {
		bad("data_dir", "must name a directory, e.g. \"/var/lib/sesame\"")
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log_level", "%q: expected \"debug\", \"info\", \"warn\" or \"error\"", c.LogLevel)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		bad("log_format", "%q: expected \"text\" or \"json\"", c.LogFormat)
	}

	s := &c.Submission
	if len(s.StartTLSListen)+len(s.TLSListen) == 0 {
		bad("submission", "no listener: set starttls_listen and/or tls_listen")
	}
	for i, a := range s.StartTLSListen {
		if err := checkListen(a); err != nil {
			bad(fmt.Sprintf("submission.starttls_listen[%d]", i), "%v", err)
		}
	}
	for i, a := range s.TLSListen {
		if err := checkListen(a); err != nil {
			bad(fmt.Sprintf("submission.tls_listen[%d]", i), "%v", err)
		}
	}
	if (s.TLSCertFile == "") != (s.TLSKeyFile == "") {
		bad("submission.tls_cert_file", "tls_cert_file and tls_key_file go together: set both, or neither for a self-signed certificate")
	}
	if s.MaxMessageBytes < 1024 || s.MaxMessageBytes > 1<<30 {
		bad("submission.max_message_bytes", "%d: expected a size in bytes from 1024 to 1073741824", s.MaxMessageBytes)
	}
	if s.MaxInflightBytes < 4*s.MaxMessageBytes {
		bad("submission.max_inflight_bytes", "%d: expected at least 4 times max_message_bytes (%d): one client network may use a quarter of it, and that must hold the largest message",
			s.MaxInflightBytes, 4*s.MaxMessageBytes)
	}
	if s.MaxRecipients < 1 || s.MaxRecipients > 10000 {
		bad("submission.max_recipients", "%d: expected 1 to 10000", s.MaxRecipients)
	}
	if s.MaxConnections < 1 {
		bad("submission.max_connections", "%d: expected at least 1", s.MaxConnections)
	}
	if s.MaxConnectionsPerIP < 1 {
		bad("submission.max_connections_per_ip", "%d: expected at least 1", s.MaxConnectionsPerIP)
	}
	positive := func(key string, d Duration) {
		if d.Duration <= 0 {
			bad(key, "%s: expected a positive duration such as \"30s\"", d)
		}
	}
	positive("submission.read_timeout", s.ReadTimeout)
	positive("submission.write_timeout", s.WriteTimeout)
	if s.MaxUnauthenticatedConnections < 1 || s.MaxUnauthenticatedConnections > s.MaxConnections {
		bad("submission.max_unauthenticated_connections", "%d: expected 1 to max_connections (%d)", s.MaxUnauthenticatedConnections, s.MaxConnections)
	}
	if s.MaxUnauthenticatedConnectionsPerIP < 1 || s.MaxUnauthenticatedConnectionsPerIP > s.MaxConnectionsPerIP {
		bad("submission.max_unauthenticated_connections_per_ip", "%d: expected 1 to max_connections_per_ip (%d)",
			s.MaxUnauthenticatedConnectionsPerIP, s.MaxConnectionsPerIP)
	}
	positive("submission.unauthenticated_read_timeout", s.UnauthenticatedReadTimeout)
	if s.UnauthenticatedReadTimeout.Duration > s.ReadTimeout.Duration {
		bad("submission.unauthenticated_read_timeout", "%s is longer than read_timeout (%s): a client that has not logged in gets the shorter wait", s.UnauthenticatedReadTimeout, s.ReadTimeout)
	}
	for key, v := range map[string]int{"submission.auth_failures_per_connection": s.AuthFailuresPerConnection,
		"submission.auth_failures_per_network": s.AuthFailuresPerNetwork, "submission.auth_failures_per_username": s.AuthFailuresPerUsername} {
		if v < 1 {
			bad(key, "%d: expected at least 1", v)
		}
	}
	positive("submission.auth_failure_window", s.AuthFailureWindow)
	positive("submission.auth_block_time", s.AuthBlockTime)
	positive("submission.auth_failure_delay", s.AuthFailureDelay)
	positive("submission.auth_failure_report_interval", s.AuthFailureReportInterval)
	if s.AuthCacheTTL.Duration < 0 {
		bad("submission.auth_cache_ttl", "%s: expected 0 (no cache) or a positive duration", s.AuthCacheTTL)
	}

	r := &c.Relay
	if r.Smarthost != "" {
		if host, port, err := net.SplitHostPort(r.Smarthost); err != nil || host == "" || !validPort(port) || port == "0" {
			bad("relay.smarthost", "%q: expected \"host:port\", e.g. \"smtp.example.net:587\"", r.Smarthost)
		}
	}
	for i, a := range r.DNSServers {
		if _, err := DNSServerAddr(a); err != nil {
			bad(fmt.Sprintf("relay.dns_servers[%d]", i), "%v", err)
		}
	}
	if r.MXPort < 1 || r.MXPort > 65535 {
		bad("relay.mx_port", "%d: expected a port from 1 to 65535", r.MXPort)
	}
	for i, a := range r.SourceIPs {
		if _, err := netip.ParseAddr(a); err != nil {
			bad(fmt.Sprintf("relay.source_ips[%d]", i), "%q is not an IP address", a)
		}
	}
	if r.Workers < 0 || r.Workers > 100000 {
		bad("relay.workers", "%d: expected 0 (no cap but memory_budget) to 100000", r.Workers)
	}
	if r.MemoryBudget < 1<<20 {
		bad("relay.memory_budget", "%d: expected a size in bytes of at least 1048576 (1 MiB)", r.MemoryBudget)
	}
	if r.DomainConcurrency < 1 {
		bad("relay.domain_concurrency", "%d: expected at least 1", r.DomainConcurrency)
	}
	if r.DestinationConcurrency < 1 {
		bad("relay.destination_concurrency", "%d: expected at least 1", r.DestinationConcurrency)
	}
	if r.InitialDestinationConcurrency < 1 || r.InitialDestinationConcurrency > r.DestinationConcurrency {
		bad("relay.initial_destination_concurrency", "%d: expected 1 to destination_concurrency (%d)",
			r.InitialDestinationConcurrency, r.DestinationConcurrency)
	}
	if r.SmarthostConcurrency < 1 {
		bad("relay.smarthost_concurrency", "%d: expected at least 1", r.SmarthostConcurrency)
	}
	positive("relay.retry_first", r.RetryFirst)
	positive("relay.retry_max", r.RetryMax)
	if r.RetryMax.Duration < r.RetryFirst.Duration {
		bad("relay.retry_max", "%s is shorter than retry_first (%s)", r.RetryMax, r.RetryFirst)
	}
	positive("relay.max_lifetime", r.MaxLifetime)
	if r.DelayWarning.Duration < 0 {
		bad("relay.delay_warning", "%s: expected 0 (no warnings) or a positive duration", r.DelayWarning)
	}
	positive("relay.connect_timeout", r.ConnectTimeout)
	positive("relay.command_timeout", r.CommandTimeout)

	c.validateIPs(bad, positive)
	if sc := c.Policy.SuppressionScope; sc != "shared" && sc != "credential" {
		bad("policy.suppression_scope", "%q: expected \"shared\" (hard bounces and complaints stop everyone's mail to the address) or \"credential\" (only the mail of the credential that caused them)", sc)
	}
	if d := c.Policy.SimulatorDomain; d != "" && (!validHostname(d) || !strings.Contains(d, ".")) {
		bad("policy.simulator_domain", "%q: expected a domain name such as \"simulator.sesame.test\", or \"\" to turn the simulator off", d)
	}
	for i, a := range c.Inbound.Listen {
		if err := checkListen(a); err != nil {
			bad(fmt.Sprintf("inbound.listen[%d]", i), "%v", err)
		}
	}
	for i, a := range c.Inbound.FeedbackAddresses {
		if local, domain, ok := strings.Cut(a, "@"); !ok || local == "" || !validHostname(domain) {
			bad(fmt.Sprintf("inbound.feedback_addresses[%d]", i), "%q is not an email address", a)
		}
	}
	c.validateInbound(bad)
	connCaps("inbound", c.Inbound.MaxConnections, c.Inbound.MaxConnectionsPerIP, bad)
	positive("inbound.read_timeout", c.Inbound.ReadTimeout)
	positive("inbound.write_timeout", c.Inbound.WriteTimeout)

	if c.HTTP.Listen != "" {
		if err := checkListen(c.HTTP.Listen); err != nil {
			bad("http.listen", "%v (or \"\" to turn the HTTP listener off)", err)
		}
	}
	connCaps("http", c.HTTP.MaxConnections, c.HTTP.MaxConnectionsPerIP, bad)
	c.validateAPI(bad, positive)
	positive("http.read_timeout", c.HTTP.ReadTimeout)
	positive("http.write_timeout", c.HTTP.WriteTimeout)
	positive("http.idle_timeout", c.HTTP.IdleTimeout)
	if c.HTTP.MaxBodyBytes < 1024 {
		bad("http.max_body_bytes", "%d: expected a size in bytes of at least 1024", c.HTTP.MaxBodyBytes)
	}
	if u := c.HTTP.PublicURL; u != "" {
		if pu, err := url.Parse(u); err != nil || (pu.Scheme != "https" && pu.Scheme != "http") || pu.Host == "" ||
			pu.RawQuery != "" || strings.HasSuffix(u, "/") {
			bad("http.public_url", "%q: expected a base URL such as \"https://relay.example.com\" (no trailing slash)", u)
		}
	}
	c.validateTLS(bad)
	if d := c.DKIM.FallbackDomain; d != "" && !validHostname(d) {
		bad("dkim.fallback_domain", "%q is not a domain name", d)
	}
	if d := c.DKIM.SystemDomain; d != "" && (!validHostname(d) || !strings.Contains(d, ".")) {
		bad("dkim.system_domain", "%q is not a domain name; set the domain whose keys sign Sesame's own mail, e.g. \"example.com\"", d)
	}
	positive("dkim.rotation_grace", c.DKIM.RotationGrace)
	if r := c.DKIM.RotateEvery; r.Duration != 0 && r.Duration <= c.DKIM.RotationGrace.Duration {
		bad("dkim.rotate_every", "%s: expected 0 (no scheduled rotation) or longer than dkim.rotation_grace (%s), such as \"180d\"", r, c.DKIM.RotationGrace)
	}

	pol := &c.Policy
	if pol.DailyQuota < 1 {
		bad("policy.daily_quota", "%d: expected at least 1 (recipients per 24 hours)", pol.DailyQuota)
	}
	if pol.MaxSendRate <= 0 {
		bad("policy.max_send_rate", "%v: expected a positive number of recipients per second", pol.MaxSendRate)
	}
	if pol.SandboxDailyQuota < 1 {
		bad("policy.sandbox_daily_quota", "%d: expected at least 1", pol.SandboxDailyQuota)
	}
	if pol.SandboxMaxSendRate <= 0 {
		bad("policy.sandbox_max_send_rate", "%v: expected a positive number", pol.SandboxMaxSendRate)
	}

	for i, w := range c.Webhooks {
		key := fmt.Sprintf("webhook[%d]", i)
		if u, err := url.Parse(w.URL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			bad(key+".url", "%q: expected an http(s) URL", w.URL)
		}
		if len(w.Secret) < 16 {
			bad(key+".secret", "expected at least 16 characters (it signs the requests; generate one with: openssl rand -hex 32)")
		}
		for _, t := range w.Events {
			if !slices.Contains(eventTypes, t) {
				bad(key+".events", "%q: expected some of %s", t, strings.Join(eventTypes, ", "))
			}
		}
	}
	rep := &c.Reputation
	positive("reputation.window", rep.Window)
	if rep.Window.Duration > c.Events.Retention.Duration {
		bad("reputation.window", "%s is longer than events.retention (%s): the events it needs would be gone", rep.Window, c.Events.Retention)
	}
	if rep.MinVolume < 1 {
		bad("reputation.min_volume", "%d: expected at least 1", rep.MinVolume)
	}
	rate := func(key string, v float64) {
		if v <= 0 || v > 1 {
			bad(key, "%v: expected a fraction between 0 and 1, e.g. 0.05 for 5%%", v)
		}
	}
	rate("reputation.bounce_warning", rep.BounceWarning)
	rate("reputation.bounce_pause", rep.BouncePause)
	rate("reputation.complaint_warning", rep.ComplaintWarning)
	rate("reputation.complaint_pause", rep.ComplaintPause)
	if c.Events.Retention.Duration < 24*time.Hour {
		bad("events.retention", "%s: expected at least \"24h\" (statistics cover the last day)", c.Events.Retention)
	}

	id := &c.Identity
	positive("identity.pending_check_interval", id.PendingCheckInterval)
	positive("identity.verified_check_interval", id.VerifiedCheckInterval)
	positive("identity.pending_timeout", id.PendingTimeout)
	positive("identity.address_link_ttl", id.AddressLinkTTL)
	if id.FailedAfterChecks < 1 {
		bad("identity.failed_after_checks", "%d: expected at least 1", id.FailedAfterChecks)
	}
	if sub := id.MailFromSubdomain; sub == "" || strings.Contains(sub, ".") || !validHostname(sub) {
		bad("identity.mail_from_subdomain", "%q: expected one DNS label such as \"bounce\"", sub)
	}
	if a := id.DMARCReportAddress; a != "" && !strings.Contains(a, "@") {
		bad("identity.dmarc_report_address", "%q: expected an email address", a)
	}

	if len(p) > 0 {
		return &Error{Path: c.Path, Problems: p}
	}
	return nil
}

// ParsePrefix reads a network ("192.0.2.0/24") or one address
// ("192.0.2.7", a /32).
func ParsePrefix(s string) (netip.Prefix, error) {
	if ip, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return p.Masked(), nil
}

// connCaps checks a listener's max_connections and max_connections_per_ip.
func connCaps(section string, total, perIP int, bad func(key, format string, args ...any)) {
	if total < 1 {
		bad(section+".max_connections", "%d: expected at least 1", total)
	}
	if perIP < 1 || perIP > total {
		bad(section+".max_connections_per_ip", "%d: expected 1 to max_connections (%d)", perIP, total)
	}
}

// DNSServerAddr turns "192.0.2.1" or "192.0.2.1:5353" or "[2001:db8::1]:53"
// into an "ip:port" address.
func DNSServerAddr(s string) (string, error) {
	if ip, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(ip, 53).String(), nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil || ap.Port() == 0 {
		return "", fmt.Errorf("%q: expected an IP address, optionally with a port (\"127.0.0.1:5353\")", s)
	}
	return ap.String(), nil
}

func checkListen(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil || !validPort(port) {
		return fmt.Errorf("%q: expected \"address:port\", e.g. \"0.0.0.0:587\"", a)
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil && host != "localhost" {
			return fmt.Errorf("%q: the address must be an IP address (or empty for all)", a)
		}
	}
	return nil
}

func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n >= 0 && n <= 65535
}

func validHostname(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// Diff lists the keys (dotted, as in the file) whose values differ between
// a and b, for a reload to say what it applied and what needs a restart.
func Diff(a, b *Config) []string {
	var out []string
	diffStruct(reflect.ValueOf(*a), reflect.ValueOf(*b), "", &out)
	return out
}

func diffStruct(a, b reflect.Value, prefix string, out *[]string) {
	for i := 0; i < a.NumField(); i++ {
		f := a.Type().Field(i)
		tag := f.Tag.Get("toml")
		if tag == "" || tag == "-" {
			continue
		}
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(Duration{}) {
			diffStruct(a.Field(i), b.Field(i), prefix+tag+".", out)
			continue
		}
		if !reflect.DeepEqual(a.Field(i).Interface(), b.Field(i).Interface()) {
			*out = append(*out, prefix+tag)
		}
	}
}

var poolOrProviderName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)

// validateIPs checks [[ip]], [warmup] and [[provider]].
func (c *Config) validateIPs(bad func(key, format string, args ...any), positive func(string, Duration)) {
	seen := map[netip.Addr]string{}
	for i, a := range c.Relay.SourceIPs {
		if ip, err := netip.ParseAddr(a); err == nil {
			seen[ip.Unmap()] = fmt.Sprintf("relay.source_ips[%d]", i)
		}
	}
	inDefault := len(c.Relay.SourceIPs) > 0
	for i, ip := range c.IPs {
		key := fmt.Sprintf("ip[%d]", i)
		a, err := netip.ParseAddr(ip.Address)
		switch {
		case err != nil:
			bad(key+".address", "%q is not an IP address", ip.Address)
		case seen[a.Unmap()] != "":
			bad(key+".address", "%s is listed twice (also as %s)", ip.Address, seen[a.Unmap()])
		default:
			seen[a.Unmap()] = key
		}
		if ip.Pool != "" && !poolOrProviderName.MatchString(ip.Pool) {
			bad(key+".pool", "%q: expected lower-case letters, digits, - and _ (at most 32)", ip.Pool)
		}
		inDefault = inDefault || ip.poolName() == DefaultPool
		if ip.WarmupStart != "" {
			if _, err := time.Parse(time.DateOnly, ip.WarmupStart); err != nil {
				bad(key+".warmup_start", "%q: expected a date as YYYY-MM-DD (or no key for an IP that is already warm)", ip.WarmupStart)
			}
		}
	}
	if len(c.IPs) > 0 && !inDefault {
		bad("ip", "no IP is in pool %q, which sends the mail of every credential without a pool and Sesame's own notices; put one there", DefaultPool)
	}
	w := c.Warmup
	for i, n := range w.Schedule {
		if n < 1 {
			bad(fmt.Sprintf("warmup.schedule[%d]", i), "%d: expected a daily cap of at least 1", n)
		}
	}
	if w.SpreadHours < 1 || w.SpreadHours > 24 {
		bad("warmup.spread_hours", "%d: expected 1 to 24", w.SpreadHours)
	}
	positive("warmup.throttle_backoff", w.ThrottleBackoff)
	if w.ThrottleBackoffMax.Duration < w.ThrottleBackoff.Duration {
		bad("warmup.throttle_backoff_max", "%s is shorter than throttle_backoff (%s)", w.ThrottleBackoffMax, w.ThrottleBackoff)
	}
	names := map[string]bool{}
	for i, p := range c.Providers {
		key := fmt.Sprintf("provider[%d]", i)
		switch {
		case !poolOrProviderName.MatchString(p.Name) || p.Name == "other":
			bad(key+".name", "%q: expected lower-case letters, digits, - and _ (at most 32), not \"other\"", p.Name)
		case names[p.Name]:
			bad(key+".name", "%q is defined twice", p.Name)
		}
		names[p.Name] = true
		if len(p.MX) == 0 {
			bad(key+".mx", "expected at least one MX host name suffix, such as \"google.com\"")
		}
		for j, h := range p.MX {
			if !validHostname(strings.TrimSuffix(h, ".")) {
				bad(fmt.Sprintf("%s.mx[%d]", key, j), "%q is not a host name", h)
			}
		}
		for _, f := range []struct {
			key string
			v   int
		}{{"warmup_hourly", p.WarmupHourly}, {"hourly", p.Hourly}, {"per_connection", p.PerConnection}} {
			if f.v < 0 {
				bad(key+"."+f.key, "%d: expected 0 (no cap) or more", f.v)
			}
		}
	}
}

// validateTLS checks [tls]: the ACME keys matter only with acme_domains,
// which replaces the certificate files and needs a challenge listener.
func (c *Config) validateTLS(bad func(key, format string, args ...any)) {
	t := c.TLS
	if len(t.ACMEDomains) == 0 {
		for _, kv := range [][2]string{{"acme_email", t.ACMEEmail}, {"acme_ca_file", t.ACMECAFile},
			{"acme_http_listen", t.ACMEHTTPListen}, {"acme_tls_listen", t.ACMETLSListen}} {
			if kv[1] != "" {
				bad("tls."+kv[0], "set without tls.acme_domains, which turns ACME on: add the names of the certificate, or remove the key")
			}
		}
		return
	}
	for i, d := range t.ACMEDomains {
		if !validHostname(d) || !strings.Contains(d, ".") {
			bad(fmt.Sprintf("tls.acme_domains[%d]", i), "%q: expected a host name such as \"mail.example.com\" (no wildcards: HTTP-01 and TLS-ALPN-01 cannot prove them)", d)
		}
	}
	if c.Submission.TLSCertFile != "" || c.Submission.TLSKeyFile != "" {
		bad("tls.acme_domains", "set together with submission.tls_cert_file and tls_key_file: remove those (Sesame gets its certificate from the ACME CA) or remove acme_domains")
	}
	if e := t.ACMEEmail; e != "" {
		if local, domain, ok := strings.Cut(e, "@"); !ok || local == "" || !validHostname(domain) {
			bad("tls.acme_email", "%q is not an email address", e)
		}
	}
	if u, err := url.Parse(t.ACMEDirectory); err != nil || u.Scheme != "https" || u.Host == "" {
		bad("tls.acme_directory", "%q: expected the https URL of an ACME directory, such as %q", t.ACMEDirectory, LetsEncryptDirectory)
	}
	if t.ACMEHTTPListen == "" && t.ACMETLSListen == "" {
		bad("tls.acme_domains", "needs a listener the CA can reach to check that the names are this server's: set tls.acme_http_listen = \"0.0.0.0:80\" (HTTP-01) or tls.acme_tls_listen = \"0.0.0.0:443\" (TLS-ALPN-01)")
	}
	if a := t.ACMEHTTPListen; a != "" {
		if err := checkListen(a); err != nil {
			bad("tls.acme_http_listen", "%v", err)
		}
	}
	if a := t.ACMETLSListen; a != "" {
		if err := checkListen(a); err != nil {
			bad("tls.acme_tls_listen", "%v", err)
		}
	}
}

// maxInboundMessageBytes is the most the report parser reads (package
// report's MaxSize).
const maxInboundMessageBytes = 10 << 20

func (c *Config) validateInbound(bad func(key, format string, args ...any)) {
	in := c.Inbound
	for i, r := range in.FeedbackReporters {
		domain := r
		if local, d, ok := strings.Cut(r, "@"); ok {
			if local == "" {
				domain = ""
			} else {
				domain = d
			}
		}
		if !validHostname(domain) || !strings.Contains(domain, ".") {
			bad(fmt.Sprintf("inbound.feedback_reporters[%d]", i), "%q: expected a reporter's address (\"staff@hotmail.com\") or a domain all its addresses are the reporter's (\"arf.mail.yahoo.com\")", r)
		}
	}
	for i, n := range in.FeedbackReporterIPs {
		if _, err := ParsePrefix(n); err != nil {
			bad(fmt.Sprintf("inbound.feedback_reporter_ips[%d]", i), "%q: expected a network such as \"192.0.2.0/24\" or \"2001:db8::/32\", or one address", n)
		}
	}
	if in.MaxMessageBytes < 64<<10 || in.MaxMessageBytes > maxInboundMessageBytes {
		bad("inbound.max_message_bytes", "%d: expected a size in bytes from 65536 (a report carries the original message's header) to %d (the most a report is read)",
			in.MaxMessageBytes, maxInboundMessageBytes)
	}
	if in.KeepRawBytes < 1024 || in.KeepRawBytes > in.MaxMessageBytes {
		bad("inbound.keep_raw_bytes", "%d: expected a size in bytes from 1024 to inbound.max_message_bytes (%d)", in.KeepRawBytes, in.MaxMessageBytes)
	}
	if in.MaxStoredMessages < 1 {
		bad("inbound.max_stored_messages", "%d: expected a positive number (what the inbound listener keeps must be bounded)", in.MaxStoredMessages)
	}
	if in.MaxStoredBytes < 1<<20 {
		bad("inbound.max_stored_bytes", "%d: expected a size in bytes of at least 1048576 (what the inbound listener keeps must be bounded)", in.MaxStoredBytes)
	}
	if in.ClientMessagesPerHour < 0 {
		bad("inbound.client_messages_per_hour", "%d: expected a positive number, or 0 for no per-client cap", in.ClientMessagesPerHour)
	}
	if in.ClientBytesPerHour != 0 && in.ClientBytesPerHour < in.KeepRawBytes {
		bad("inbound.client_bytes_per_hour", "%d: expected at least inbound.keep_raw_bytes (%d), so one message fits, or 0 for no per-client cap",
			in.ClientBytesPerHour, in.KeepRawBytes)
	}
	if in.MinFreeBytes < 0 {
		bad("inbound.min_free_bytes", "%d: expected a size in bytes, or 0 for no reserve", in.MinFreeBytes)
	}
}

// validateAPI checks [api].
func (c *Config) validateAPI(bad func(key, format string, args ...any), positive func(string, Duration)) {
	a := c.API
	if a.Listen != "" {
		if err := checkListen(a.Listen); err != nil {
			bad("api.listen", "%v (or \"\" to turn the API off)", err)
		} else if !a.TLS && !loopbackListen(a.Listen) {
			bad("api.tls", "false is allowed only on a loopback address (api.listen is %q): access keys and mail would cross the network in the clear; "+
				"keep tls = true, or listen on 127.0.0.1 behind a reverse proxy that terminates TLS", a.Listen)
		}
	}
	if (a.TLSCertFile == "") != (a.TLSKeyFile == "") {
		bad("api.tls_cert_file", "tls_cert_file and tls_key_file go together: set both, or neither for the submission certificate")
	}
	connCaps("api", a.MaxConnections, a.MaxConnectionsPerIP, bad)
	positive("api.read_timeout", a.ReadTimeout)
	positive("api.write_timeout", a.WriteTimeout)
	positive("api.idle_timeout", a.IdleTimeout)
}

// loopbackListen reports whether a listen address binds only loopback.
func loopbackListen(a string) bool {
	host, _, err := net.SplitHostPort(a)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}
