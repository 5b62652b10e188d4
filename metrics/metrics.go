// Package metrics is Sesame's Prometheus instrumentation: the counters,
// gauges and histograms the other packages feed through small interfaces of
// their own, and the /metrics handler.
//
// Names follow Prometheus conventions (sesame_..._total for counters, base
// units: seconds, bytes). Every label takes values from a small fixed set,
// or from the configuration (source IPs): never a recipient, a message, a
// credential name or anything else a client chooses, so cardinality stays
// bounded however much mail flows.
package metrics

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sesame-mail/sesame/netguard"
	"github.com/sesame-mail/sesame/warmup"
)

// Metrics holds every metric Sesame exports.
type Metrics struct {
	reg *prometheus.Registry

	connections   prometheus.Counter
	handshakes    *prometheus.CounterVec
	authFailures  prometheus.Counter
	submissions   *prometheus.CounterVec
	recipients    *prometheus.CounterVec
	latency       prometheus.Histogram
	outboundConns *prometheus.CounterVec
	rejectsCapped prometheus.Counter
	inbound       inboundMetrics
	acme          acmeMetrics
	refused       *prometheus.CounterVec
	shed          *prometheus.CounterVec
	acceptErrors  *prometheus.CounterVec
}

// QueueStats is what the queue gauges read at each scrape.
type QueueStats interface {
	// QueueDepth returns the number of recipients per state still in the
	// queue, and the age of the oldest message.
	QueueDepth(ctx context.Context) (map[string]int, time.Duration, error)
}

// New registers every metric; queue, when not nil, backs the queue gauges.
func New(queue QueueStats) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		reg: reg,
		connections: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sesame_smtp_connections_total",
			Help: "Submission connections accepted (within the connection caps).",
		}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sesame_smtp_tls_handshakes_total",
			Help: "TLS handshakes on the submission listeners (STARTTLS and implicit TLS), by version.",
		}, []string{"tls_version"}),
		authFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sesame_auth_failures_total",
			Help: "Failed AUTH attempts (wrong username or password).",
		}),
		submissions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sesame_submissions_total",
			Help: "Messages submitted, by result (accepted, rejected) and reason for rejections.",
		}, []string{"result", "reason"}),
		recipients: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sesame_recipients_total",
			Help: "Recipient delivery outcomes by state (delivered, deferred, bounced, expired), destination provider group and source IP.",
		}, []string{"state", "provider", "source_ip"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sesame_delivery_latency_seconds",
			Help:    "Time from acceptance to delivery, per delivered recipient.",
			Buckets: []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600},
		}),
		outboundConns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sesame_outbound_connections_total",
			Help: "Outbound SMTP connections opened, by TLS version (none: plain text).",
		}, []string{"tls_version"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sesame_listener_refused_connections_total",
			Help: "Connections refused at accept, by listener (submission, inbound, http) and cap reached (per_ip, unauthenticated_per_ip, total).",
		}, []string{"listener", "reason"}),
		shed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sesame_listener_shed_connections_total",
			Help: "Unauthenticated connections closed to make room for new ones (caps reached, or out of file descriptors), by listener.",
		}, []string{"listener"}),
		acceptErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sesame_listener_accept_errors_total",
			Help: "Failed accepts (e.g. out of file descriptors: EMFILE), by listener; each is retried after a backoff.",
		}, []string{"listener"}),
		rejectsCapped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sesame_reject_events_suppressed_total",
			Help: "Refused submissions not recorded as reject events of their own: their credential was over its cap of reject events a minute. A later event's count includes them.",
		}),
	}
	reg.MustRegister(m.connections, m.handshakes, m.authFailures, m.submissions, m.recipients, m.latency, m.outboundConns,
		m.refused, m.shed, m.acceptErrors, m.rejectsCapped,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.registerInbound()
	m.registerACME()
	if queue != nil {
		reg.MustRegister(&queueCollector{queue: queue})
	}
	return m
}

// WebhookBacklog exports, at each scrape, the events waiting per webhook
// endpoint (keyed by the endpoint's short hash: never its URL).
func (m *Metrics) WebhookBacklog(backlog func(context.Context) (map[string]int, error)) {
	m.reg.MustRegister(&backlogCollector{backlog: backlog})
}

// SubmissionInflight exports, at each scrape, the memory held by large
// messages being signed and queued, and the bound it is kept under
// ([submission] max_inflight_bytes); a message that waits for room in vain
// is refused with 452 4.3.1, counted in
// sesame_submissions_total{reason="inflight_limit"}.
func (m *Metrics) SubmissionInflight(bytes func() int64, limit int64) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sesame_smtp_inflight_bytes",
		Help: "Memory held by large messages being signed and queued (submission.max_inflight_bytes bounds it).",
	}, func() float64 { return float64(bytes()) }))
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sesame_smtp_inflight_limit_bytes",
		Help: "submission.max_inflight_bytes: large messages wait for room under it, and get 452 4.3.1 after two minutes.",
	}, func() float64 { return float64(limit) }))
}

var webhookBacklogDesc = prometheus.NewDesc("sesame_webhook_backlog_events",
	"Events recorded but not yet delivered to a webhook endpoint.", []string{"endpoint"}, nil)

type backlogCollector struct {
	backlog func(context.Context) (map[string]int, error)
}

func (c *backlogCollector) Describe(ch chan<- *prometheus.Desc) { ch <- webhookBacklogDesc }

func (c *backlogCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := c.backlog(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(webhookBacklogDesc, err)
		return
	}
	for endpoint, n := range b {
		ch <- prometheus.MustNewConstMetric(webhookBacklogDesc, prometheus.GaugeValue, float64(n), endpoint)
	}
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Connection counts an accepted submission connection.
func (m *Metrics) Connection() { m.connections.Inc() }

// ConnRefused counts a connection refused at accept.
func (m *Metrics) ConnRefused(listener, reason string) {
	m.refused.WithLabelValues(listener, reason).Inc()
}

// ConnShed counts an unauthenticated connection closed to make room.
func (m *Metrics) ConnShed(listener string) { m.shed.WithLabelValues(listener).Inc() }

// AcceptError counts a failed accept.
func (m *Metrics) AcceptError(listener string) { m.acceptErrors.WithLabelValues(listener).Inc() }

// Listeners exports, at each scrape, the open connections of each guarded
// listener, logged in and not.
func (m *Metrics) Listeners(stats func() []netguard.Stats) {
	m.reg.MustRegister(&listenerCollector{stats: stats})
}

var listenerConnsDesc = prometheus.NewDesc("sesame_listener_open_connections",
	"Open connections by listener and whether the client has authenticated (SMTP AUTH; the inbound and HTTP listeners have no login).",
	[]string{"listener", "state"}, nil)

type listenerCollector struct{ stats func() []netguard.Stats }

func (c *listenerCollector) Describe(ch chan<- *prometheus.Desc) { ch <- listenerConnsDesc }

func (c *listenerCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.stats() {
		ch <- prometheus.MustNewConstMetric(listenerConnsDesc, prometheus.GaugeValue, float64(s.Authenticated), s.Listener, "authenticated")
		ch <- prometheus.MustNewConstMetric(listenerConnsDesc, prometheus.GaugeValue, float64(s.Unauthenticated), s.Listener, "unauthenticated")
	}
}

// LoginGuardStats is what the failed-login guard blocks now.
type LoginGuardStats struct {
	UsernameAttacks         int // credentials' usernames over the per-username limit
	BlockedNetworks         int // networks refused at connect
	BlockedUsernameNetworks int // (network, username) pairs refused without a check
}

// LoginGuard exports, at each scrape, the usernames under attack and the
// networks blocked. No label names a username or a network: an attacker
// chooses those.
func (m *Metrics) LoginGuard(stats func() LoginGuardStats) {
	m.reg.MustRegister(&loginGuardCollector{stats: stats})
}

var (
	usernameAttacksDesc = prometheus.NewDesc("sesame_auth_username_attacks",
		"Usernames of credentials with more failed logins, from any networks, than auth_failures_per_username within auth_failure_window.",
		nil, nil)
	blockedNetworksDesc = prometheus.NewDesc("sesame_auth_blocked_networks",
		"Client networks blocked for failed logins: refused at connect (scope all), or refused without a check as one username under attack (scope username; one per network and username).",
		[]string{"scope"}, nil)
)

type loginGuardCollector struct{ stats func() LoginGuardStats }

func (c *loginGuardCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- usernameAttacksDesc
	ch <- blockedNetworksDesc
}

func (c *loginGuardCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	ch <- prometheus.MustNewConstMetric(usernameAttacksDesc, prometheus.GaugeValue, float64(s.UsernameAttacks))
	ch <- prometheus.MustNewConstMetric(blockedNetworksDesc, prometheus.GaugeValue, float64(s.BlockedNetworks), "all")
	ch <- prometheus.MustNewConstMetric(blockedNetworksDesc, prometheus.GaugeValue, float64(s.BlockedUsernameNetworks), "username")
}

// TLSHandshake counts an inbound TLS handshake.
func (m *Metrics) TLSHandshake(version string) {
	m.handshakes.WithLabelValues(tlsLabel(version)).Inc()
}

// AuthFailure counts a failed login.
func (m *Metrics) AuthFailure() { m.authFailures.Inc() }

// Submission counts a message accepted (reason "") or rejected for reason,
// one of a fixed set chosen by the caller.
func (m *Metrics) Submission(accepted bool, reason string) {
	result := "rejected"
	if accepted {
		result = "accepted"
	}
	m.submissions.WithLabelValues(result, reason).Inc()
}

// RejectEventsSuppressed counts n refusals whose reject event was not
// written because their credential was over its cap.
func (m *Metrics) RejectEventsSuppressed(n int) { m.rejectsCapped.Add(float64(n)) }

// Delivery counts one recipient's outcome. latency is the time since
// acceptance, observed for delivered recipients.
func (m *Metrics) Delivery(state, mxHost, sourceIP string, latency time.Duration) {
	m.recipients.WithLabelValues(state, ProviderGroup(mxHost), sourceIP).Inc()
	if state == "delivered" {
		m.latency.Observe(latency.Seconds())
	}
}

// OutboundConnection counts a new outbound connection.
func (m *Metrics) OutboundConnection(tlsVersion string) {
	m.outboundConns.WithLabelValues(tlsLabel(tlsVersion)).Inc()
}

// tlsLabel is "1.3" for "TLS 1.3", "none" for "".
func tlsLabel(v string) string {
	if v == "" || v == "none" {
		return "none"
	}
	return strings.TrimPrefix(v, "TLS ")
}

// ProviderGroup is the provider group of a mail exchanger host name, as
// package warmup's built-in groups know it: google, microsoft, yahoo,
// apple, other, or none when no server answered.
func ProviderGroup(mxHost string) string {
	if mxHost == "" {
		return "none"
	}
	return warmup.Classify(builtinProviders, []string{mxHost})
}

var builtinProviders = warmup.DefaultProviders()

// OutboundIPs exports, at each scrape, every outbound IP's warm-up day,
// caps and use, pauses and suspensions, and the recipients waiting for
// capacity per pool and provider.
func (m *Metrics) OutboundIPs(status func() []warmup.IPStatus, parked func(context.Context) (map[string]int, error)) {
	m.reg.MustRegister(&ipCollector{status: status, parked: parked})
}

var (
	ipWarmupDayDesc = prometheus.NewDesc("sesame_ip_warmup_day",
		"The outbound IP's warm-up day (1 on its start date); 0 when it is warm.", []string{"ip", "pool"}, nil)
	ipCapDesc = prometheus.NewDesc("sesame_ip_cap_messages",
		"The outbound IP's cap for the current window (day or hour); absent when unlimited.", []string{"ip", "pool", "window"}, nil)
	ipSentDesc = prometheus.NewDesc("sesame_ip_sent_messages",
		"Messages the outbound IP sent in the current window (day or hour, UTC).", []string{"ip", "pool", "window"}, nil)
	ipPausedDesc = prometheus.NewDesc("sesame_ip_paused",
		"1 when the operator paused the outbound IP.", []string{"ip", "pool"}, nil)
	ipSuspendedDesc = prometheus.NewDesc("sesame_ip_suspended_until_seconds",
		"Unix time until which the IP sends nothing to the provider, after its throttling; absent when not suspended.",
		[]string{"ip", "provider"}, nil)
	ipProviderSentDesc = prometheus.NewDesc("sesame_ip_provider_sent_messages",
		"Messages the outbound IP sent to the provider group this hour.", []string{"ip", "provider"}, nil)
	waitingDesc = prometheus.NewDesc("sesame_waiting_for_capacity_recipients",
		"Recipients waiting for warm-up or provider capacity, per pool and provider group.", []string{"pool", "provider"}, nil)
)

type ipCollector struct {
	status func() []warmup.IPStatus
	parked func(context.Context) (map[string]int, error)
}

func (c *ipCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{ipWarmupDayDesc, ipCapDesc, ipSentDesc, ipPausedDesc, ipSuspendedDesc, ipProviderSentDesc, waitingDesc} {
		ch <- d
	}
}

func (c *ipCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, s := range c.status() {
		gauge(ipWarmupDayDesc, float64(s.Day), s.IP, s.Pool)
		gauge(ipSentDesc, float64(s.SentToday), s.IP, s.Pool, "day")
		gauge(ipSentDesc, float64(s.SentHour), s.IP, s.Pool, "hour")
		if s.DailyCap >= 0 {
			gauge(ipCapDesc, float64(s.DailyCap), s.IP, s.Pool, "day")
			gauge(ipCapDesc, float64(s.HourlyCap), s.IP, s.Pool, "hour")
		}
		paused := 0.0
		if s.Paused {
			paused = 1
		}
		gauge(ipPausedDesc, paused, s.IP, s.Pool)
		for _, p := range s.Providers {
			gauge(ipProviderSentDesc, float64(p.SentHour), s.IP, p.Provider)
			if p.SuspendedUntil != nil {
				gauge(ipSuspendedDesc, float64(p.SuspendedUntil.Unix()), s.IP, p.Provider)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	parked, err := c.parked(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(waitingDesc, err)
		return
	}
	for line, n := range parked {
		pool, provider, _ := strings.Cut(line, "/")
		gauge(waitingDesc, float64(n), pool, provider)
	}
}

// queueCollector reads the queue's depth at each scrape.
type queueCollector struct{ queue QueueStats }

var (
	queueDepthDesc = prometheus.NewDesc("sesame_queue_recipients",
		"Recipients in the queue by state.", []string{"state"}, nil)
	queueAgeDesc = prometheus.NewDesc("sesame_queue_oldest_message_age_seconds",
		"Age of the oldest message still in the queue (0 when empty).", nil, nil)
)

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- queueDepthDesc
	ch <- queueAgeDesc
}

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	depth, oldest, err := c.queue.QueueDepth(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(queueDepthDesc, err)
		return
	}
	for _, state := range []string{"queued", "deferred", "quarantined"} {
		ch <- prometheus.MustNewConstMetric(queueDepthDesc, prometheus.GaugeValue, float64(depth[state]), state)
	}
	ch <- prometheus.MustNewConstMetric(queueAgeDesc, prometheus.GaugeValue, oldest.Seconds())
}
