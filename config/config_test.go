package config

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestDefaultsAreValid(t *testing.T) {
	cfg, err := Load(filepath.Join(t.TempDir(), "missing.toml"), false)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "sesame-data" || cfg.Submission.StartTLSListen[0] != "127.0.0.1:587" ||
		cfg.Submission.MaxMessageBytes != 41943040 || cfg.Submission.MaxRecipients != 50 || cfg.Relay.MXPort != 25 ||
		cfg.Submission.MaxInflightBytes != 512<<20 {
		t.Fatalf("defaults: %+v", cfg)
	}
	// Inbound mail is bounded well below submission's: reports are small,
	// and anyone may send them.
	if in := cfg.Inbound; in.MaxMessageBytes != 1<<20 || in.KeepRawBytes != 64<<10 || in.MaxStoredBytes != 64<<20 ||
		in.MaxStoredMessages != 10000 || in.ClientMessagesPerHour != 100 || in.ClientBytesPerHour != 4<<20 || in.MinFreeBytes != 256<<20 {
		t.Fatalf("inbound defaults: %+v", in)
	}
}

func TestExplicitMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "missing.toml"), true)
	if err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("err = %v", err)
	}
}

func TestFullFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sesame.toml")
	text := `
hostname = "relay.example.com"
data_dir = "/var/lib/sesame"
log_level = "debug"
log_format = "json"
[submission]
starttls_listen = ["0.0.0.0:587", "[::]:587"]
tls_listen      = ["0.0.0.0:465"]
tls_cert_file = "/etc/ssl/c.pem"
tls_key_file  = "/etc/ssl/k.pem"
max_message_bytes = 10485760
max_recipients = 10
read_timeout = "2m"
[relay]
smarthost = "smtp.example.net:587"
dns_servers = ["127.0.0.1:5353", "::1"]
mx_port = 2525
source_ips = ["127.0.0.2", "::1"]
retry_first = "10s"
[http]
listen = ""
[dkim]
ed25519 = true
`
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path, true)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Path != path || cfg.Hostname != "relay.example.com" || cfg.Submission.ReadTimeout.Duration != 2*time.Minute ||
		cfg.Relay.MXPort != 2525 || !cfg.DKIM.Ed25519 || cfg.HTTP.Listen != "" || len(cfg.Relay.SourceIPs) != 2 ||
		cfg.Submission.WriteTimeout.Duration != time.Minute {
		t.Fatalf("parsed %+v", cfg)
	}
	if a, _ := DNSServerAddr(cfg.Relay.DNSServers[1]); a != "[::1]:53" {
		t.Fatalf("dns server addr %q", a)
	}
}

// A broken file gets every problem reported, each naming its key.
func TestBadConfigs(t *testing.T) {
	tests := []struct {
		name, text string
		want       []string
	}{
		{"unknown keys", "hostnme = \"x\"\n[submission]\nmax_recipient = 3\n",
			[]string{"hostnme: unknown key", "submission.max_recipient: unknown key"}},
		{"syntax", "hostname = \n", []string{"line 1"}},
		{"wrong type", "[submission]\nmax_recipients = \"ten\"\n", []string{"max_recipients"}},
		{"bad duration", "[submission]\nread_timeout = \"soon\"\n", []string{"read_timeout", "not a duration"}},
		{"many at once", `
hostname = "bad host"
log_level = "loud"
[submission]
starttls_listen = ["587"]
tls_listen = ["10.0.0.1:99999"]
tls_cert_file = "/c.pem"
max_message_bytes = 10
max_recipients = 0
[relay]
smarthost = "nohostport"
dns_servers = ["dns.example"]
mx_port = 0
source_ips = ["1.2.3"]
retry_first = "2h"
[http]
listen = "somewhere"
`, []string{
			`hostname: "bad host" is not a host name`,
			`log_level: "loud"`,
			`submission.starttls_listen[0]: "587"`,
			`submission.tls_listen[0]`,
			"submission.tls_cert_file: tls_cert_file and tls_key_file go together",
			"submission.max_message_bytes: 10",
			"submission.max_recipients: 0",
			`relay.smarthost: "nohostport"`,
			`relay.dns_servers[0]: "dns.example"`,
			"relay.mx_port: 0",
			`relay.source_ips[0]: "1.2.3" is not an IP address`,
			"relay.retry_max: 1h0m0s is shorter than retry_first",
			`http.listen: "somewhere"`,
		}},
		{"in-flight budget below four messages", "[submission]\nmax_message_bytes = 41943040\nmax_inflight_bytes = 104857600\n",
			[]string{"submission.max_inflight_bytes: 104857600: expected at least 4 times max_message_bytes (167772160)"}},
		{"api in the clear off loopback", "[api]\nlisten = \"0.0.0.0:8443\"\ntls = false\ntls_key_file = \"/k.pem\"\n",
			[]string{"api.tls: false is allowed only on a loopback address", "api.tls_cert_file: tls_cert_file and tls_key_file go together"}},
		{"no listeners", "[submission]\nstarttls_listen = []\ntls_listen = []\n", []string{"submission: no listener"}},
		{"delivery concurrency", `
[relay]
workers = -1
memory_budget = 1000
destination_concurrency = 4
initial_destination_concurrency = 5
smarthost_concurrency = 0
`, []string{
			"relay.workers: -1: expected 0",
			"relay.memory_budget: 1000: expected a size in bytes of at least 1048576",
			"relay.initial_destination_concurrency: 5: expected 1 to destination_concurrency (4)",
			"relay.smarthost_concurrency: 0: expected at least 1",
		}},
		{"feedback reporters", `
[inbound]
feedback_reporters = ["arf.mail.yahoo.com", "com", "@hotmail.com", "bad host"]
feedback_reporter_ips = ["192.0.2.0/24", "2001:db8::1", "192.0.2.0/33", "mail.example"]
`, []string{
			`inbound.feedback_reporters[1]: "com"`,
			`inbound.feedback_reporters[2]: "@hotmail.com"`,
			`inbound.feedback_reporters[3]: "bad host"`,
			`inbound.feedback_reporter_ips[2]: "192.0.2.0/33"`,
			`inbound.feedback_reporter_ips[3]: "mail.example"`,
		}},
		{"connection caps", `
[submission]
max_connections = 100
max_unauthenticated_connections = 101
max_unauthenticated_connections_per_ip = 0
read_timeout = "20s"
unauthenticated_read_timeout = "1m"
[inbound]
max_connections = 10
max_connections_per_ip = 11
read_timeout = "0s"
[http]
max_connections = 0
idle_timeout = "-1s"
max_body_bytes = 10
`, []string{
			"submission.max_unauthenticated_connections: 101: expected 1 to max_connections (100)",
			"submission.max_unauthenticated_connections_per_ip: 0: expected 1 to max_connections_per_ip (100)",
			"submission.unauthenticated_read_timeout: 1m0s is longer than read_timeout (20s)",
			"inbound.max_connections_per_ip: 11: expected 1 to max_connections (10)",
			"inbound.read_timeout: 0s",
			"http.max_connections: 0",
			"http.idle_timeout: -1s",
			"http.max_body_bytes: 10",
		}},
		{"inbound caps", `
[inbound]
max_message_bytes = 20971520
keep_raw_bytes = 100
max_stored_messages = 0
max_stored_bytes = 1000
client_messages_per_hour = -1
client_bytes_per_hour = -3
min_free_bytes = -5
`, []string{
			"inbound.max_message_bytes: 20971520",
			"inbound.keep_raw_bytes: 100",
			"inbound.max_stored_messages: 0",
			"inbound.max_stored_bytes: 1000",
			"inbound.client_messages_per_hour: -1",
			"inbound.client_bytes_per_hour: -3",
			"inbound.min_free_bytes: -5",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.text)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

// The big feedback loops are believed by default; a configured list
// replaces them, and an empty one believes no signature.
func TestFeedbackReporters(t *testing.T) {
	c, err := Parse("")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(c.Inbound.FeedbackReporters, "arf.mail.yahoo.com") || !slices.Contains(c.Inbound.FeedbackReporters, "staff@hotmail.com") {
		t.Errorf("default feedback reporters %q", c.Inbound.FeedbackReporters)
	}
	c, err = Parse("[inbound]\nfeedback_reporters = []\nfeedback_reporter_ips = [\"192.0.2.7\", \"2001:db8::/32\"]\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Inbound.FeedbackReporters) != 0 {
		t.Errorf("feedback_reporters = []: %q", c.Inbound.FeedbackReporters)
	}
	for _, tc := range []struct{ in, want string }{
		{"192.0.2.7", "192.0.2.7/32"}, {"192.0.2.7/24", "192.0.2.0/24"}, {"2001:db8::1/32", "2001:db8::/32"}, {"::ffff:192.0.2.7", "192.0.2.7/32"},
	} {
		if p, err := ParsePrefix(tc.in); err != nil || p.String() != tc.want {
			t.Errorf("ParsePrefix(%q) = %v, %v; want %s", tc.in, p, err, tc.want)
		}
	}
}

// The caps and the read timeout for clients not logged in follow the caps
// and read_timeout a file sets, unless it sets them too.
func TestDerivedDefaults(t *testing.T) {
	cfg, err := Parse("[submission]\nmax_connections = 40\nmax_connections_per_ip = 8\nread_timeout = \"10s\"\n")
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Submission
	if s.MaxUnauthenticatedConnections != 10 || s.MaxUnauthenticatedConnectionsPerIP != 2 || s.UnauthenticatedReadTimeout.Duration != 10*time.Second {
		t.Errorf("derived %d, %d, %s; want 10, 2, 10s", s.MaxUnauthenticatedConnections, s.MaxUnauthenticatedConnectionsPerIP, s.UnauthenticatedReadTimeout)
	}
	cfg, err = Parse("[submission]\nmax_connections = 40\nmax_unauthenticated_connections = 30\nunauthenticated_read_timeout = \"5s\"\n")
	if err != nil {
		t.Fatal(err)
	}
	if s := cfg.Submission; s.MaxUnauthenticatedConnections != 30 || s.UnauthenticatedReadTimeout.Duration != 5*time.Second {
		t.Errorf("set values not kept: %d, %s", s.MaxUnauthenticatedConnections, s.UnauthenticatedReadTimeout)
	}
	if d := Default().Submission; d.MaxUnauthenticatedConnections != d.MaxConnections/4 || d.MaxUnauthenticatedConnectionsPerIP != d.MaxConnectionsPerIP/4 {
		t.Errorf("the built-in defaults do not follow the rule deriveDefaults applies: %+v", d)
	}
}

// Every key the code knows is documented in docs/configuration.md, and the
// documentation names no key the code does not know.
func TestDocumentedKeys(t *testing.T) {
	doc, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	keys := tomlKeys(reflect.TypeOf(Config{}), "")
	for _, k := range keys {
		if !strings.Contains(string(doc), "`"+k+"`") {
			t.Errorf("docs/configuration.md does not document `%s`", k)
		}
	}
	known := map[string]bool{}
	for _, k := range keys {
		known[k] = true
	}
	for _, line := range strings.Split(string(doc), "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		k := strings.SplitN(strings.TrimPrefix(line, "| `"), "`", 2)[0]
		if !known[k] {
			t.Errorf("docs/configuration.md documents unknown key `%s`", k)
		}
	}
}

func tomlKeys(t reflect.Type, prefix string) []string {
	var out []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("toml")
		if tag == "" || tag == "-" {
			continue
		}
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(Duration{}) {
			out = append(out, tomlKeys(f.Type, prefix+tag+".")...)
			continue
		}
		if f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct {
			out = append(out, tomlKeys(f.Type.Elem(), prefix+tag+".")...)
			continue
		}
		out = append(out, prefix+tag)
	}
	return out
}

func TestDiff(t *testing.T) {
	a, _ := Parse("log_level = \"info\"\n[relay]\nmx_port = 25\n")
	b, _ := Parse("log_level = \"debug\"\n[relay]\nmx_port = 2525\nretry_first = \"5m\"\n")
	got := strings.Join(Diff(a, b), " ")
	if got != "log_level relay.mx_port" {
		t.Fatalf("Diff = %q", got)
	}
	if d := Diff(a, a); len(d) != 0 {
		t.Fatalf("Diff of a config with itself = %v", d)
	}
}

func TestWebhooks(t *testing.T) {
	cfg, err := Parse("[[webhook]]\nurl = \"https://hooks.example.com/x\"\nsecret = \"0123456789abcdef\"\nevents = [\"bounce\"]\n")
	if err != nil || len(cfg.Webhooks) != 1 || cfg.Webhooks[0].Events[0] != "bounce" {
		t.Fatalf("%+v %v", cfg, err)
	}
	_, err = Parse("[[webhook]]\nurl = \"ftp://x\"\nsecret = \"short\"\nevents = [\"opened\"]\n")
	for _, want := range []string{"webhook[0].url", "webhook[0].secret", `webhook[0].events: "opened"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}

// Any input gives a configuration or an error, never a panic; an accepted
// configuration validates.
func FuzzParse(f *testing.F) {
	f.Add("hostname = \"relay.example.com\"\n[submission]\nmax_recipients = 10\n")
	f.Add("[relay]\nsmarthost = \"h:25\"\nretry_first = \"1s\"\n[[webhook]]\nurl = \"https://x\"\nsecret = \"0123456789abcdef\"\n")
	f.Add("log_level = 3\n[policy]\ndaily_quota = -1\n")
	f.Fuzz(func(t *testing.T, text string) {
		cfg, err := Parse(text)
		if err == nil {
			if verr := cfg.Validate(); verr != nil {
				t.Fatalf("Parse accepted what Validate refuses: %v", verr)
			}
		}
	})
}
