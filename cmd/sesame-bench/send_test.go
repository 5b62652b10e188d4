package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log"
	"net"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// standIn is a submission server in the shape of Sesame's: TLS, AUTH
// required, accepts everything and forwards nothing. It checks what it is
// sent so the tests can assert on the messages, not only on the counts.
type standIn struct {
	user, password string
	failEvery      int64 // answer 451 to every failEvery-th DATA; 0 never

	data     atomic.Int64
	mu       sync.Mutex
	subjects map[string]int
	problems []string
}

var (
	subjectRE = regexp.MustCompile(`(?m)^Subject: (sesame-bench \S+ \d+-\d+)\r$`)
	rcptRE    = regexp.MustCompile(`^rcpt\d{3}@example\.net$`)
)

func (si *standIn) NewSession(*smtp.Conn) (smtp.Session, error) { return &standInSession{si: si}, nil }

func (si *standIn) problem(s string) {
	si.mu.Lock()
	si.problems = append(si.problems, s)
	si.mu.Unlock()
}

type standInSession struct {
	si     *standIn
	authed bool
}

var _ smtp.AuthSession = (*standInSession)(nil)

func (s *standInSession) AuthMechanisms() []string { return []string{sasl.Plain, sasl.Login} }

func (s *standInSession) Auth(mech string) (sasl.Server, error) {
	check := func(user, pass string) error {
		if user != s.si.user || pass != s.si.password {
			return smtp.ErrAuthFailed
		}
		s.authed = true
		return nil
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(_, user, pass string) error { return check(user, pass) }), nil
	case sasl.Login:
		return &loginServer{check: check}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

func (s *standInSession) Mail(string, *smtp.MailOptions) error {
	if !s.authed {
		return smtp.ErrAuthRequired
	}
	return nil
}

func (s *standInSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if !rcptRE.MatchString(to) {
		s.si.problem("recipient " + to)
	}
	return nil
}

func (s *standInSession) Data(r io.Reader) error {
	msg, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if bytes.Count(msg, []byte("\n")) != bytes.Count(msg, []byte("\r\n")) ||
		bytes.Count(msg, []byte("\r")) != bytes.Count(msg, []byte("\r\n")) {
		s.si.problem("bare CR or LF in message")
	}
	m := subjectRE.FindSubmatch(msg)
	if m == nil {
		s.si.problem("no bench Subject")
	} else {
		s.si.mu.Lock()
		s.si.subjects[string(m[1])]++
		s.si.mu.Unlock()
	}
	if n := s.si.data.Add(1); s.si.failEvery > 0 && n%s.si.failEvery == 0 {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}
	}
	return nil
}

func (s *standInSession) Reset()        {}
func (s *standInSession) Logout() error { return nil }

// loginServer is the server side of SASL LOGIN, which go-sasl lacks.
type loginServer struct {
	step  int
	user  string
	check func(user, pass string) error
}

func (l *loginServer) Next(resp []byte) ([]byte, bool, error) {
	switch l.step {
	case 0:
		if resp == nil {
			l.step = 1
			return []byte("Username:"), false, nil
		}
		l.user, l.step = string(resp), 2
		return []byte("Password:"), false, nil
	case 1:
		l.user, l.step = string(resp), 2
		return []byte("Password:"), false, nil
	default:
		return nil, true, l.check(l.user, string(resp))
	}
}

// startStandIn serves si on 127.0.0.1:0 with STARTTLS, or implicit TLS, and
// returns its address.
func startStandIn(t *testing.T, si *standIn, implicit bool) string {
	t.Helper()
	si.subjects = map[string]int{}
	cert, err := selfSignedCert()
	if err != nil {
		t.Fatal(err)
	}
	srv := smtp.NewServer(si)
	srv.Domain = "stand-in.localhost"
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	srv.ErrorLog = log.New(io.Discard, "", 0)
	var ln net.Listener
	ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if implicit {
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func testSendConfig(addr string) sendConfig {
	return sendConfig{
		Addr: addr, TLS: "starttls", Auth: "plain", User: "app", Password: "secret",
		Connections: 4, Messages: 25, Size: 2048, Recipients: 1,
		From: "sender@example.com", ToDomain: "example.net", Timeout: 10 * time.Second,
	}
}

func TestSendToStandIn(t *testing.T) {
	si := &standIn{user: "app", password: "secret"}
	addr := startStandIn(t, si, false)
	rep, err := runSend(context.Background(), testSendConfig(addr))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Accepted != 100 || len(rep.Errors) != 0 {
		t.Fatalf("accepted %d, errors %v (%v); want 100 and none", rep.Accepted, rep.Errors, rep.ErrorSamples)
	}
	if rep.Sessions != 4 {
		t.Errorf("sessions = %d, want 4 persistent sessions", rep.Sessions)
	}
	if rep.P50ms <= 0 || rep.P50ms > rep.P90ms || rep.P90ms > rep.P99ms || rep.P99ms > rep.MaxMs {
		t.Errorf("percentiles out of order: %+v", rep)
	}
	if rep.Scenario != "persistent-starttls-plain" {
		t.Errorf("scenario = %q", rep.Scenario)
	}
	si.mu.Lock()
	defer si.mu.Unlock()
	if len(si.problems) > 0 {
		t.Errorf("stand-in saw problems: %q", si.problems)
	}
	if len(si.subjects) != 100 {
		t.Errorf("stand-in saw %d distinct subjects, want 100", len(si.subjects))
	}
	for s := range si.subjects {
		if !strings.Contains(s, " "+rep.RunID+" ") {
			t.Errorf("subject %q lacks run id %q", s, rep.RunID)
			break
		}
	}

	var buf bytes.Buffer
	if err := writeJSON(&buf, rep); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"scenario", "connections", "messages_per_connection", "size", "accepted",
		"errors", "seconds", "msgs_per_sec", "p50_ms", "p90_ms", "p99_ms", "max_ms"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON lacks %q: %s", k, buf.String())
		}
	}
	if m["accepted"] != 100.0 || m["connections"] != 4.0 || m["messages_per_connection"] != 25.0 {
		t.Errorf("JSON figures wrong: %s", buf.String())
	}
	if e, ok := m["errors"].(map[string]any); !ok || len(e) != 0 {
		t.Errorf("JSON errors = %v, want {}", m["errors"])
	}
}

func TestSendModes(t *testing.T) {
	tests := []struct {
		name         string
		implicit     bool
		tls, auth    string
		newConn      bool
		recipients   int
		wantSessions int
	}{
		{"implicit login", true, "implicit", "login", false, 1, 2},
		{"starttls new connection", false, "starttls", "plain", true, 1, 10},
		{"many recipients", false, "starttls", "plain", false, 30, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			si := &standIn{user: "app", password: "secret"}
			cfg := testSendConfig(startStandIn(t, si, tt.implicit))
			cfg.TLS, cfg.Auth, cfg.NewConnection, cfg.Recipients = tt.tls, tt.auth, tt.newConn, tt.recipients
			cfg.Connections, cfg.Messages = 2, 5
			rep, err := runSend(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Accepted != 10 || len(rep.Errors) != 0 || rep.Sessions != tt.wantSessions {
				t.Errorf("accepted %d, errors %v %v, sessions %d; want 10, none, %d",
					rep.Accepted, rep.Errors, rep.ErrorSamples, rep.Sessions, tt.wantSessions)
			}
			si.mu.Lock()
			defer si.mu.Unlock()
			if len(si.problems) > 0 {
				t.Errorf("stand-in saw problems: %q", si.problems)
			}
		})
	}
}

func TestSendCountsErrorsAndReconnects(t *testing.T) {
	si := &standIn{user: "app", password: "secret", failEvery: 5}
	rep, err := runSend(context.Background(), testSendConfig(startStandIn(t, si, false)))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Accepted != 80 || rep.Errors["451"] != 20 || len(rep.Errors) != 1 {
		t.Errorf("accepted %d, errors %v; want 80 and 451=20", rep.Accepted, rep.Errors)
	}
	// Every 451 drops the session and the next message opens a new one,
	// except after a client's last message: 4 + 20 less up to 4.
	if rep.Sessions < 20 || rep.Sessions > 24 {
		t.Errorf("sessions = %d, want 20 to 24", rep.Sessions)
	}
}

func TestSendWrongPassword(t *testing.T) {
	cfg := testSendConfig(startStandIn(t, &standIn{user: "app", password: "other"}, false))
	cfg.Connections, cfg.Messages = 2, 3
	rep, err := runSend(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Accepted != 0 || rep.Errors["535"] != 6 {
		t.Errorf("accepted %d, errors %v; want 0 and 535=6", rep.Accepted, rep.Errors)
	}
}

func TestSendNetworkErrors(t *testing.T) {
	// A port that was just free: connections are refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	ln.Close()

	// A server that accepts and never greets: session setup times out.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()

	tests := []struct {
		addr, class string
	}{
		{refused, "conn"},
		{silent.Addr().String(), "timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.class, func(t *testing.T) {
			cfg := testSendConfig(tt.addr)
			cfg.Connections, cfg.Messages, cfg.Timeout = 2, 2, 50*time.Millisecond
			rep, err := runSend(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Accepted != 0 || rep.Errors[tt.class] != 4 || len(rep.Errors) != 1 {
				t.Errorf("accepted %d, errors %v (%v); want %s=4", rep.Accepted, rep.Errors, rep.ErrorSamples, tt.class)
			}
		})
	}
}

func TestSendCancelStopsStalledSetup(t *testing.T) {
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := silent.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		// Cancel once the client is stuck waiting for a greeting that
		// never comes; the test hangs if cancelling does not unblock it.
		c := <-accepted
		defer c.Close()
		cancel()
	}()
	cfg := testSendConfig(silent.Addr().String())
	cfg.Connections, cfg.Messages, cfg.Timeout = 1, 1000, time.Hour
	rep, err := runSend(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Accepted != 0 || len(rep.Errors) != 0 {
		t.Errorf("accepted %d, errors %v; cancelling should count nothing", rep.Accepted, rep.Errors)
	}
}

func TestSendConfigValidate(t *testing.T) {
	good := testSendConfig("127.0.0.1:587")
	tests := []struct {
		name  string
		edit  func(*sendConfig)
		wants []string
	}{
		{"good", func(*sendConfig) {}, nil},
		{"localhost", func(c *sendConfig) { c.Addr = "localhost:587" }, nil},
		{"ipv6 loopback", func(c *sendConfig) { c.Addr = "[::1]:587" }, nil},
		{"127/8", func(c *sendConfig) { c.Addr = "127.3.4.5:587" }, nil},
		{"remote ip", func(c *sendConfig) { c.Addr = "192.0.2.1:587" }, []string{"not loopback", "--allow-remote"}},
		{"remote name", func(c *sendConfig) { c.Addr = "mail.example.com:587" }, []string{"not loopback"}},
		{"remote allowed", func(c *sendConfig) { c.Addr, c.AllowRemote = "192.0.2.1:587", true }, nil},
		{"no port", func(c *sendConfig) { c.Addr = "127.0.0.1" }, []string{"--addr"}},
		{"everything wrong at once", func(c *sendConfig) {
			*c = sendConfig{Addr: "10.0.0.1:25", TLS: "ssl", Auth: "cram-md5", RunID: "a b"}
		}, []string{"--addr", "--tls", "--auth", "--connections", "--messages", "--size",
			"--recipients", "--from", "--to-domain", "--timeout", "--run-id"}},
		{"user required", func(c *sendConfig) { c.User = "" }, []string{"--user is required"}},
		{"no user with auth none", func(c *sendConfig) { c.User, c.Auth = "", "none" }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.edit(&cfg)
			err := cfg.validate()
			if len(tt.wants) == 0 {
				if err != nil {
					t.Errorf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", tt.wants)
			}
			for _, w := range tt.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestErrorClass(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{&smtp.SMTPError{Code: 451}, "451"},
		{io.EOF, "conn"},
		{&net.OpError{Op: "dial", Err: io.ErrUnexpectedEOF}, "conn"},
		{errTimeout, "timeout"},
		{context.DeadlineExceeded, "timeout"},
	}
	for _, tt := range tests {
		if got := errorClass(tt.err); got != tt.want {
			t.Errorf("errorClass(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

// TestTxConnDataStuffsDots checks the load tool's own data writer: lines
// that start with a dot get another, a missing final CRLF is added, and the
// message ends with the lone dot.
func TestTxConnDataStuffsDots(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	got := make(chan string, 1)
	go func() {
		defer server.Close()
		r := bufio.NewReader(server)
		var b strings.Builder
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				got <- "read error: " + err.Error()
				return
			}
			if line == ".\r\n" {
				break
			}
			b.WriteString(line)
		}
		got <- b.String()
		io.WriteString(server, "250 2.0.0 queued\r\n")
	}()
	tx := newTxConn(client, 10*time.Second)
	if err := tx.data([]byte(".first\r\nmiddle\r\n..two\r\n.\r\nlast")); err != nil {
		t.Fatalf("data: %v", err)
	}
	if s, want := <-got, "..first\r\nmiddle\r\n...two\r\n..\r\nlast\r\n"; s != want {
		t.Errorf("server read %q, want %q", s, want)
	}
}
