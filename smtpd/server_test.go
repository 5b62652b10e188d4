package smtpd

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/sesame-mail/sesame/account"
	sesamedkim "github.com/sesame-mail/sesame/dkim"
	"github.com/sesame-mail/sesame/identity"
	"github.com/sesame-mail/sesame/store"
	"github.com/sesame-mail/sesame/testkit"
)

// testEnv is a submission server on loopback with a real store, real
// credentials and real DKIM keys for example.com.
type testEnv struct {
	srv      *Server
	st       *store.SQLite
	starttls string // address of the STARTTLS listener
	implicit string // address of the implicit-TLS listener
	username string
	password string
	txt      map[string]string // DKIM records by name
}

func newTestEnv(t *testing.T, tweak func(*Config)) *testEnv {
	t.Helper()
	return newTestEnvDeps(t, tweak, nil)
}

// newTestEnvDeps is newTestEnv with the dependencies changed by tweakDeps
// (fakes standing in for parts of the store).
func newTestEnvDeps(t *testing.T, tweak func(*Config), tweakDeps func(*Deps)) *testEnv {
	t.Helper()
	dir := t.TempDir()
	st, err := store.OpenSQLite(filepath.Join(dir, "sesame.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := context.Background()

	te := &testEnv{st: st, username: account.NewUsername(), password: account.NewPassword(), txt: map[string]string{}}
	hash, err := account.HashPassword(te.password)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if err := st.CreateCredential(ctx, store.Credential{Name: "app", Username: te.username, PasswordHash: hash, CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	key, err := sesamedkim.NewKey(store.AlgRSA, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.CreateDomain(ctx, store.Domain{Name: "example.com", CreatedAt: now, Keys: []store.DKIMKey{key},
		Status: store.IdentityVerified}); err != nil {
		t.Fatal(err)
	}
	rec, err := sesamedkim.DNSRecord("example.com", key)
	if err != nil {
		t.Fatal(err)
	}
	te.txt[rec.Name] = rec.Value

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	cert, err := LoadCertificate("", "", dir, "sesame.test", log)
	if err != nil {
		t.Fatal(err)
	}
	tlsConfig := cert.TLSConfig()
	cfg := Config{
		Hostname:            "sesame.test",
		StartTLSListen:      []string{"127.0.0.1:0"},
		TLSListen:           []string{"127.0.0.1:0"},
		TLS:                 tlsConfig,
		MaxMessageBytes:     64 << 10,
		MaxRecipients:       5,
		MaxConnections:      100,
		MaxConnectionsPerIP: 100,
		ReadTimeout:         10 * time.Second,
		WriteTimeout:        10 * time.Second,
		Logger:              log,
	}
	if tweak != nil {
		tweak(&cfg)
	}
	deps := Deps{
		Auth:     account.NewAuthenticator(st, time.Now, time.Minute),
		Signer:   sesamedkim.NewDomainSigner(st),
		Queue:    st,
		Policy:   identity.NewAuthorizer(st),
		Quotas:   account.NewQuotas(st, account.QuotaDefaults{Daily: 1000, Rate: 1000, SandboxDaily: 200, SandboxRate: 1}, time.Now),
		Standing: st,
	}
	if tweakDeps != nil {
		tweakDeps(&deps)
	}
	te.srv = New(cfg, deps)
	addrs := serveUntilCleanup(t, te.srv)
	te.starttls, te.implicit = addrs[0], addrs[1]
	return te
}

// serveUntilCleanup listens with srv, serves until the test ends (then shuts
// it down), and returns its listeners' addresses.
func serveUntilCleanup(tb testing.TB, srv *Server) []string {
	tb.Helper()
	if err := srv.Listen(); err != nil {
		tb.Fatal(err)
	}
	var addrs []string
	for _, a := range srv.Addrs() {
		addrs = append(addrs, a.String())
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	})
	return addrs
}

var clientTLS = &tls.Config{InsecureSkipVerify: true, ServerName: "sesame.test"}

// dial connects with STARTTLS, and logs in unless username is "".
func (te *testEnv) dial(t *testing.T, username, password string) *smtp.Client {
	t.Helper()
	c, err := smtp.DialStartTLS(te.starttls, clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if username != "" {
		if err := c.Auth(sasl.NewPlainClient("", username, password)); err != nil {
			t.Fatalf("auth: %v", err)
		}
	}
	return c
}

func message(from, to, subject, body string) string {
	return "From: Shop <" + from + ">\r\nTo: " + to + "\r\nSubject: " + subject +
		"\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + body
}

func send(c *smtp.Client, from string, to []string, msg string) (*smtp.DataResponse, error) {
	if err := c.Mail(from, nil); err != nil {
		return nil, err
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return nil, err
		}
	}
	w, err := c.Data()
	if err != nil {
		return nil, err
	}
	if _, err := io.WriteString(w, msg); err != nil {
		return nil, err
	}
	return w.CloseWithResponse()
}

func code(err error) int {
	var e *smtp.SMTPError
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

func TestAcceptSignQueue(t *testing.T) {
	te := newTestEnv(t, nil)
	c := te.dial(t, te.username, te.password)
	msg := message("shop@example.com", "a@example.net", "Order 42", "Thank you \u00e9\r\n.leading dot\r\n")
	resp, err := send(c, "shop@example.com", []string{"a@example.net", "B@Example.NET"}, msg)
	if err != nil {
		t.Fatal(err)
	}
	_, id, ok := strings.Cut(resp.StatusText, "Ok: queued as ")
	if !ok || len(id) != 16 {
		t.Fatalf("reply %q", resp.StatusText)
	}

	entries, err := te.st.QueueMessages(context.Background())
	if err != nil || len(entries) != 1 || entries[0].ID != id {
		t.Fatalf("queue = %+v, %v", entries, err)
	}
	e := entries[0]
	if e.Sender != "shop@example.com" || e.Credential != "app" || len(e.Recipients) != 2 ||
		e.Recipients[0].Address != "B@example.net" || e.MessageID != "<"+id+"@sesame.test>" {
		t.Fatalf("entry = %+v", e)
	}
	raw, err := te.st.MessageData(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	data := string(raw)
	if !strings.HasPrefix(data, "Received: from localhost ([127.0.0.1])\r\n\tby sesame.test (Sesame) with ESMTPSA id "+id) {
		t.Fatalf("no Received on top:\n%s", data)
	}
	if !strings.HasSuffix(data, msg) || !strings.Contains(data, "\r\nMessage-ID: <"+id+"@sesame.test>\r\nDate: ") {
		t.Fatalf("message changed or not completed:\n%s", data)
	}
	verify(t, te, raw)
}

// verify checks the DKIM signature with go-msgauth (the end-to-end tests
// verify with python3-dkim as well).
func verify(t *testing.T, te *testEnv, msg []byte) {
	t.Helper()
	vs, err := dkim.VerifyWithOptions(strings.NewReader(string(msg)), &dkim.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) {
			if v, ok := te.txt[name]; ok {
				return []string{v}, nil
			}
			return nil, fmt.Errorf("no record %s", name)
		},
	})
	if err != nil || len(vs) != 1 || vs[0].Err != nil || vs[0].Domain != "example.com" {
		t.Fatalf("dkim: %+v %v", vs, err)
	}
}

func TestImplicitTLSAndLogin(t *testing.T) {
	te := newTestEnv(t, nil)
	c, err := smtp.DialTLS(te.implicit, clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewLoginClient(te.username, te.password)); err != nil {
		t.Fatal(err)
	}
	if _, err := send(c, "shop@example.com", []string{"a@example.net"}, message("shop@example.com", "a@example.net", "x", "y\r\n")); err != nil {
		t.Fatal(err)
	}
}

// rawSession speaks SMTP by hand, for the replies a library client hides.
type rawSession struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawSession {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	s := &rawSession{t: t, conn: conn, r: bufio.NewReader(conn)}
	s.expect("220")
	return s
}

func (s *rawSession) starttls() {
	s.cmd("EHLO client.test", "250")
	s.cmd("STARTTLS", "220")
	tc := tls.Client(s.conn, clientTLS)
	if err := tc.Handshake(); err != nil {
		s.t.Fatal(err)
	}
	s.conn, s.r = tc, bufio.NewReader(tc)
}

// dialAuthed is a raw session on the STARTTLS listener, after STARTTLS,
// EHLO and a successful AUTH PLAIN.
func (te *testEnv) dialAuthed(t *testing.T) *rawSession {
	t.Helper()
	s := dialRaw(t, te.starttls)
	s.starttls()
	s.cmd("EHLO client.test", "250")
	s.cmd("AUTH PLAIN "+plainIR(te.username, te.password), "235")
	return s
}

// reply reads one (possibly multi-line) reply.
func (s *rawSession) reply() string {
	s.t.Helper()
	var all []string
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			s.t.Fatalf("read reply: %v (so far %q)", err, all)
		}
		all = append(all, strings.TrimRight(line, "\r\n"))
		if len(line) < 4 || line[3] != '-' {
			return strings.Join(all, "\n")
		}
	}
}

func (s *rawSession) expect(prefix string) string {
	s.t.Helper()
	r := s.reply()
	if !strings.HasPrefix(r[strings.LastIndex(r, "\n")+1:], prefix) {
		s.t.Fatalf("reply %q, want %s", r, prefix)
	}
	return r
}

func (s *rawSession) cmd(line, want string) string {
	s.t.Helper()
	s.write(line + "\r\n")
	return s.expect(want)
}

func (s *rawSession) write(b string) {
	if _, err := io.WriteString(s.conn, b); err != nil {
		s.t.Fatal(err)
	}
}

func plainIR(user, pass string) string {
	return base64Std("\x00" + user + "\x00" + pass)
}

func base64Std(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestBeforeTLS(t *testing.T) {
	te := newTestEnv(t, nil)
	s := dialRaw(t, te.starttls)
	ehlo := s.cmd("EHLO client.test", "250")
	if strings.Contains(ehlo, "AUTH") || !strings.Contains(ehlo, "STARTTLS") {
		t.Fatalf("EHLO before TLS: %q", ehlo)
	}
	s.cmd("AUTH PLAIN "+plainIR(te.username, te.password), "530 5.7.0 Must issue a STARTTLS command first")
	s.cmd("MAIL FROM:<shop@example.com>", "530 5.7.0 Authentication required")

	s.cmd("STARTTLS", "220")
	tc := tls.Client(s.conn, clientTLS)
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	s.conn, s.r = tc, bufio.NewReader(tc)
	ehlo = s.cmd("EHLO client.test", "250")
	for _, want := range []string{"AUTH PLAIN LOGIN", "SIZE 65536", "8BITMIME", "SMTPUTF8", "PIPELINING"} {
		if !strings.Contains(ehlo, want) {
			t.Errorf("EHLO after TLS lacks %q: %q", want, ehlo)
		}
	}
	s.cmd("MAIL FROM:<shop@example.com>", "530 5.7.0 Authentication required")
}

func TestRefusals(t *testing.T) {
	te := newTestEnv(t, nil)
	authed := te.dialAuthed
	data := func(t *testing.T, s *rawSession, body, want string) {
		s.cmd("MAIL FROM:<shop@example.com>", "250")
		s.cmd("RCPT TO:<a@example.net>", "250")
		s.cmd("DATA", "354")
		s.write(body)
		s.expect(want)
	}

	t.Run("wrong password", func(t *testing.T) {
		s := dialRaw(t, te.starttls)
		s.starttls()
		s.cmd("EHLO client.test", "250")
		s.cmd("AUTH PLAIN "+plainIR(te.username, "wrong"), "535 5.7.8 Authentication credentials invalid")
		s.cmd("AUTH PLAIN "+plainIR("SMNOSUCHUSER", te.password), "535 5.7.8 Authentication credentials invalid")
		s.cmd("AUTH PLAIN "+base64Std("other\x00"+te.username+"\x00"+te.password), "535 5.7.8")
		// The third failed password on one connection closes it.
		s.cmd("AUTH PLAIN "+plainIR(te.username, "wrong again"), "421 4.7.0 Too many failed login attempts")
		if _, err := s.r.ReadString('\n'); err == nil {
			t.Error("connection still open after the third failure")
		}
	})
	t.Run("unknown from domain", func(t *testing.T) {
		s := authed(t)
		data(t, s, message("x@unknown.example", "a@example.net", "s", "b\r\n")+".\r\n",
			`554 5.7.1 Message rejected: Email address is not verified. The following identities failed the check: x@unknown.example`)
		// The session goes on: the next message is fine.
		data(t, s, message("shop@example.com", "a@example.net", "s", "b\r\n")+".\r\n", "250 2.0.0 Ok: queued as ")
	})
	t.Run("verified address without keys", func(t *testing.T) {
		ctx := context.Background()
		te.st.CreateAddress(ctx, store.Address{Address: "solo@webmail.example", Status: store.IdentityVerified, CreatedAt: time.Now()})
		s := authed(t)
		data(t, s, message("solo@webmail.example", "a@example.net", "s", "b\r\n")+".\r\n",
			`554 5.7.1 Message rejected: sending domain webmail.example is not set up; run "sesame domain add webmail.example"`)
	})
	t.Run("oversize", func(t *testing.T) {
		s := authed(t)
		s.cmd("MAIL FROM:<shop@example.com> SIZE=70000", "552 5.3.4")
		big := strings.Repeat(strings.Repeat("x", 70)+"\r\n", 1000)
		data(t, s, message("shop@example.com", "a@example.net", "s", big)+".\r\n", "552 5.3.4")
	})
	t.Run("too many recipients", func(t *testing.T) {
		s := authed(t)
		s.cmd("MAIL FROM:<shop@example.com>", "250")
		for i := 0; i < 5; i++ {
			s.cmd(fmt.Sprintf("RCPT TO:<r%d@example.net>", i), "250")
		}
		s.cmd("RCPT TO:<r5@example.net>", "452 4.5.3")
	})
	t.Run("smuggling", func(t *testing.T) {
		before, _ := te.st.QueueMessages(context.Background())
		for _, tt := range []struct{ name, body, want string }{
			{"bare LF", "From: shop@example.com\r\n\r\nline\n.\nMAIL FROM:<x@example.com>\r\n.\r\n", "554 5.6.0 Message refused: it contains a bare LF"},
			{"bare CR", "From: shop@example.com\r\n\r\nline\r.\rMAIL FROM:<x@example.com>\r\n.\r\n", "554 5.6.0 Message refused: it contains a bare CR"},
			{"LF in header", "From: shop@example.com\nTo: a@example.net\r\n\r\nx\r\n.\r\n", "554 5.6.0 Message refused: it contains a bare LF"},
			{"NUL", "From: shop@example.com\r\n\r\nx\x00y\r\n.\r\n", "554 5.6.0 Message refused: it contains a NUL"},
			// "\r\r\n.\r\n" ends the data (TestEndOfData has every variant).
			{"CR before end", "From: shop@example.com\r\n\r\nx\r\r\n.\r\n", "554 5.6.0 Message refused: it contains a bare CR"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				s := authed(t)
				data(t, s, tt.body, tt.want)
				// Exactly one reply: the connection is in sync for the next command.
				s.cmd("NOOP", "250")
			})
		}
		after, _ := te.st.QueueMessages(context.Background())
		if len(after) != len(before) {
			t.Fatalf("smuggled message queued: %d → %d", len(before), len(after))
		}
	})
	t.Run("BDAT", func(t *testing.T) {
		s := authed(t)
		good := message("shop@example.com", "a@example.net", "chunked", "part one\r\n")
		s.cmd("MAIL FROM:<shop@example.com>", "250")
		s.cmd("RCPT TO:<a@example.net>", "250")
		s.write(fmt.Sprintf("BDAT %d\r\n%s", 20, good[:20]))
		s.expect("250")
		s.write(fmt.Sprintf("BDAT %d LAST\r\n%s", len(good)-20, good[20:]))
		s.expect("250 2.0.0 Ok: queued as ")

		bad := "From: shop@example.com\r\n\r\nline\n.\nsmuggled\r\n"
		s.cmd("MAIL FROM:<shop@example.com>", "250")
		s.cmd("RCPT TO:<a@example.net>", "250")
		s.write(fmt.Sprintf("BDAT %d LAST\r\n%s", len(bad), bad))
		s.expect("554 5.6.0 Message refused: it contains a bare LF")
		s.cmd("NOOP", "250")
	})
	t.Run("bad headers", func(t *testing.T) {
		s := authed(t)
		data(t, s, "Subject: no from\r\n\r\nx\r\n.\r\n", "554 5.6.0 Message refused: it has no From header")
		data(t, s, "From: a@example.com\r\nFrom: b@example.com\r\n\r\nx\r\n.\r\n", "554 5.6.0 Message refused: it has more than one From header")
		data(t, s, "not a header\r\n\r\nx\r\n.\r\n", "554 5.6.0 Message refused: malformed header line")
	})
	t.Run("addresses", func(t *testing.T) {
		s := authed(t)
		s.cmd("MAIL FROM:<>", "553 5.1.7")
		s.cmd("MAIL FROM:<shop@example.com>", "250")
		for _, bad := range []string{`<"u@x"@example.net>`, "<u%x@example.net>", "<x!u@example.net>", "<u@[127.0.0.1]>", "<u@localhost>", "<nodomain>", "<\u00fc@example.net>"} {
			// go-smtp's parser refuses some forms itself (501 5.5.2); the rest are ours (553).
			if r := s.cmd("RCPT TO:"+bad, "5"); !strings.HasPrefix(r, "553 5.") && !strings.HasPrefix(r, "501 5.5.2") {
				t.Errorf("RCPT TO:%s got %q", bad, r)
			}
		}
	})
}

func TestDeletedAndRotatedCredentials(t *testing.T) {
	te := newTestEnv(t, nil)
	ctx := context.Background()
	te.dial(t, te.username, te.password).Quit() // now cached

	newPass := account.NewPassword()
	hash, _ := account.HashPassword(newPass)
	if err := te.st.SetPassword(ctx, "app", hash, time.Now()); err != nil {
		t.Fatal(err)
	}
	c, err := smtp.DialStartTLS(te.starttls, clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", te.username, te.password)); code(err) != 535 {
		t.Fatalf("old password after rotate: %v", err)
	}
	te.dial(t, te.username, newPass).Quit()

	if err := te.st.DeleteCredential(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	c2, err := smtp.DialStartTLS(te.starttls, clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if err := c2.Auth(sasl.NewPlainClient("", te.username, newPass)); code(err) != 535 {
		t.Fatalf("deleted credential: %v", err)
	}
}

func TestConnectionCap(t *testing.T) {
	te := newTestEnv(t, func(c *Config) { c.MaxConnectionsPerIP = 2 })
	a, b := dialRaw(t, te.starttls), dialRaw(t, te.starttls)
	conn, err := net.Dial("tcp", te.starttls)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	line, _ := bufio.NewReader(conn).ReadString('\n')
	if !strings.HasPrefix(line, "421 4.7.0") {
		t.Fatalf("third connection got %q", line)
	}
	a.cmd("QUIT", "221")
	a.conn.Close()
	b.cmd("NOOP", "250")
	// The slot a held is free again once its connection is gone.
	deadline := time.Now().Add(5 * time.Second)
	for {
		conn, err := net.Dial("tcp", te.starttls)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		line, _ := bufio.NewReader(conn).ReadString('\n')
		conn.Close()
		if strings.HasPrefix(line, "220") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot never freed: %q", line)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Many clients at once: every message is queued once, with its own id.
func TestConcurrentSubmissions(t *testing.T) {
	te := newTestEnv(t, nil)
	const clients, each = 8, 10
	var wg sync.WaitGroup
	ids := make(chan string, clients*each)
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c, err := smtp.DialStartTLS(te.starttls, clientTLS)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			if err := c.Auth(sasl.NewPlainClient("", te.username, te.password)); err != nil {
				t.Error(err)
				return
			}
			for j := 0; j < each; j++ {
				resp, err := send(c, "shop@example.com", []string{"a@example.net"},
					message("shop@example.com", "a@example.net", fmt.Sprintf("%d-%d", i, j), "x\r\n"))
				if err != nil {
					t.Error(err)
					return
				}
				ids <- resp.StatusText
			}
		}(i)
	}
	wg.Wait()
	close(ids)
	seen := map[string]bool{}
	for id := range ids {
		seen[id] = true
	}
	entries, _ := te.st.QueueMessages(context.Background())
	if len(seen) != clients*each || len(entries) != clients*each {
		t.Fatalf("%d distinct replies, %d queued; want %d", len(seen), len(entries), clients*each)
	}
}

// Who may send as whom, the sandbox, and the quotas.
func TestPolicy(t *testing.T) {
	te := newTestEnv(t, nil)
	ctx := context.Background()
	now := time.Now()
	for _, d := range []store.Domain{
		{Name: "pending.example", CreatedAt: now},
		{Name: "other.example", CreatedAt: now, Status: store.IdentityVerified},
	} {
		key, _ := sesamedkim.NewKey(store.AlgRSA, now)
		d.Keys = []store.DKIMKey{key}
		if err := te.st.CreateDomain(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	addUser := func(name string, edit func(*store.Credential)) string {
		pass := account.NewPassword()
		hash, _ := account.HashPassword(pass)
		c := store.Credential{Name: name, Username: account.NewUsername(), PasswordHash: hash, CreatedAt: now, UpdatedAt: now}
		edit(&c)
		if err := te.st.CreateCredential(ctx, c); err != nil {
			t.Fatal(err)
		}
		if len(c.Allowed) > 0 {
			te.st.SetAllowed(ctx, name, c.Allowed)
		}
		return plainIR(c.Username, pass)
	}
	session := func(ir string) *rawSession {
		s := dialRaw(t, te.starttls)
		s.starttls()
		s.cmd("EHLO client.test", "250")
		s.cmd("AUTH PLAIN "+ir, "235")
		return s
	}
	data := func(s *rawSession, from, rcpt, want string) {
		s.cmd("MAIL FROM:<"+from+">", "250")
		s.cmd("RCPT TO:<"+rcpt+">", "250")
		s.cmd("DATA", "354")
		s.write(message(from, rcpt, "s", "b\r\n") + ".\r\n")
		s.expect(want)
	}

	t.Run("unverified sender", func(t *testing.T) {
		s := session(plainIR(te.username, te.password))
		s.cmd("MAIL FROM:<a@pending.example>", "554 5.7.1 Message rejected: Email address is not verified. The following identities failed the check: a@pending.example")
		s.cmd("MAIL FROM:<a@nowhere.example>", "554 5.7.1 Message rejected: Email address is not verified")
		// Envelope allowed, From header not.
		s.cmd("MAIL FROM:<shop@example.com>", "250")
		s.cmd("RCPT TO:<r@example.net>", "250")
		s.cmd("DATA", "354")
		s.write(message("a@pending.example", "r@example.net", "s", "b\r\n") + ".\r\n")
		s.expect("554 5.7.1 Message rejected: Email address is not verified. The following identities failed the check: a@pending.example")
	})
	t.Run("restricted credential", func(t *testing.T) {
		s := session(addUser("only-other", func(c *store.Credential) { c.Allowed = []string{"other.example"} }))
		s.cmd("MAIL FROM:<shop@example.com>", "554 5.7.1 Message rejected: Email address is not verified. The following identities failed the check: shop@example.com")
		data(s, "news@other.example", "r@example.net", "250 2.0.0 Ok: queued as ")
		// The reverse: envelope allowed, From header not.
		s.cmd("MAIL FROM:<news@other.example>", "250")
		s.cmd("RCPT TO:<r@example.net>", "250")
		s.cmd("DATA", "354")
		s.write(message("shop@example.com", "r@example.net", "s", "b\r\n") + ".\r\n")
		s.expect("554 5.7.1 Message rejected: Email address is not verified. The following identities failed the check: shop@example.com")
	})
	t.Run("sandbox", func(t *testing.T) {
		s := session(addUser("sandboxed", func(c *store.Credential) { c.Sandbox = true }))
		s.cmd("MAIL FROM:<shop@example.com>", "250")
		s.cmd("RCPT TO:<someone@example.net>", "554 5.7.1 Message rejected: Email address is not verified. The following identities failed the check: someone@example.net")
		s.cmd("RCPT TO:<team@other.example>", "250") // in a verified domain
		s.cmd("DATA", "354")
		s.write(message("shop@example.com", "team@other.example", "s", "b\r\n") + ".\r\n")
		s.expect("250 2.0.0 Ok: queued as ")
		// Sandbox rate: one per second.
		data(s, "shop@example.com", "team@other.example", "454 4.7.0 Throttling failure: Maximum sending rate exceeded.")
	})
	t.Run("paused", func(t *testing.T) {
		s := session(addUser("paused", func(*store.Credential) {}))
		data(s, "shop@example.com", "a@example.net", "250 2.0.0 Ok: queued as ")
		if err := te.st.SetPaused(ctx, "paused", "bounce rate 11.2% is over 10%", time.Now()); err != nil {
			t.Fatal(err)
		}
		// The open session is paused at once.
		s.cmd("MAIL FROM:<shop@example.com>", `554 5.7.1 Sending paused for this credential: bounce rate 11.2% is over 10%; see "sesame user show paused"`)
		te.st.SetPaused(ctx, "paused", "", time.Now())
		data(s, "shop@example.com", "a@example.net", "250 2.0.0 Ok: queued as ")
	})
	t.Run("daily quota", func(t *testing.T) {
		s := session(addUser("small", func(c *store.Credential) { c.DailyQuota = 2 }))
		data(s, "shop@example.com", "a@example.net", "250 2.0.0 Ok: queued as ")
		data(s, "shop@example.com", "b@example.net", "250 2.0.0 Ok: queued as ")
		data(s, "shop@example.com", "c@example.net", "454 4.7.0 Throttling failure: Daily message quota exceeded.")
	})
}

// A verified address whose domain has no keys is signed for the fallback
// domain, as SES signs such mail for amazonses.com.
func TestFallbackSigningDomain(t *testing.T) {
	te := newTestEnv(t, func(c *Config) { c.FallbackSigningDomain = "example.com" })
	ctx := context.Background()
	if err := te.st.CreateAddress(ctx, store.Address{Address: "solo@webmail.example", Status: store.IdentityVerified, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	c := te.dial(t, te.username, te.password)
	resp, err := send(c, "solo@webmail.example", []string{"a@example.net"}, message("solo@webmail.example", "a@example.net", "s", "b\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	_, id, _ := strings.Cut(resp.StatusText, "queued as ")
	raw, err := te.st.MessageData(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	verify(t, te, raw) // d=example.com
}

// Password guessing from one network is slowed, then refused at connect;
// guessing one username from many networks blocks those networks for that
// username, never the real owner, whose network did not fail.
func TestPasswordGuessing(t *testing.T) {
	limits := AuthLimits{PerConnection: 100, PerNetwork: 4, PerUsername: 6, Window: time.Minute, BlockFor: time.Minute,
		Delay: 20 * time.Millisecond}
	te := newTestEnv(t, func(c *Config) { c.AuthLimits = limits })
	guess := func(from string, user string) (string, time.Duration) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		conn, err := d.Dial("tcp", te.starttls)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		s := &rawSession{t: t, conn: conn, r: bufio.NewReader(conn)}
		greeting := s.reply()
		if !strings.HasPrefix(greeting, "220") {
			return greeting, 0
		}
		s.starttls()
		s.cmd("EHLO client.test", "250")
		start := time.Now()
		s.write("AUTH PLAIN " + plainIR(user, "guess") + "\r\n")
		return s.reply(), time.Since(start)
	}
	for i := 0; i < 5; i++ {
		if r, d := guess("127.0.0.5", te.username); !strings.HasPrefix(r, "535 5.7.8") || d < 20*time.Millisecond {
			t.Fatalf("guess %d: %q after %s", i+1, r, d)
		}
	}
	// Over the network's limit: refused at connect.
	if r, _ := guess("127.0.0.5", te.username); !strings.HasPrefix(r, "421 4.7.0") || !strings.Contains(r, "Too many failed logins") {
		t.Fatalf("after the limit: %q", r)
	}
	// Another network may still connect; the username is not blocked yet.
	if r, _ := guess("127.0.0.6", "SMOTHERUSER"); !strings.HasPrefix(r, "535") {
		t.Fatalf("other network: %q", r)
	}
	// Two more failures for the username from a third network take it
	// over its limit: the networks that failed as it are refused as it
	// even with the right password, with the same reply.
	guess("127.0.0.7", te.username)
	guess("127.0.0.7", te.username)
	login := func(from string) error {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 20 * time.Second}
		conn, err := d.Dial("tcp", te.starttls)
		if err != nil {
			t.Fatal(err)
		}
		c, err := smtp.NewClientStartTLS(conn, clientTLS)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.Auth(sasl.NewPlainClient("", te.username, te.password))
	}
	if err := login("127.0.0.7"); code(err) != 535 {
		t.Fatalf("the right password from a network that failed as the username under attack: %v, want 535", err)
	}
	// The owner, from a network that did not fail as it, logs in; so does
	// 127.0.0.6, which guessed another username.
	for _, from := range []string{"127.0.0.8", "127.0.0.6"} {
		if err := login(from); err != nil {
			t.Fatalf("the right password from %s during the attack: %v", from, err)
		}
	}
}

// The guard's arithmetic, with a test clock: growing delays, blocks past
// the limits, and forgetting after the window.
func TestAuthGuard(t *testing.T) {
	clock := testkit.NewClock(t)
	g := newAuthGuard(AuthLimits{PerNetwork: 3, PerUsername: 5, Window: time.Minute, BlockFor: 10 * time.Minute}.withDefaults(),
		clock.Now)
	failed := func(ip, user string) time.Duration {
		d, _ := g.failed(ip, user, wrongPassword)
		return d
	}
	var delays []time.Duration
	for i := 0; i < 4; i++ {
		delays = append(delays, failed("192.0.2.1", "SMUSER"))
	}
	if want := []time.Duration{250, 500, 1000, 1500}; delays[0] != want[0]*time.Millisecond ||
		delays[1] != want[1]*time.Millisecond || delays[2] != want[2]*time.Millisecond {
		t.Errorf("delays %v", delays)
	}
	if !g.networkBlocked("192.0.2.1") || g.networkBlocked("192.0.2.2") {
		t.Error("the 4th failure within the window must block that network only")
	}
	// IPv6: the whole /64 is one network.
	for i := 0; i < 4; i++ {
		failed("2001:db8:1:2::a", "other")
	}
	if !g.networkBlocked("2001:db8:1:2::ffff") || g.networkBlocked("2001:db8:1:3::a") {
		t.Error("IPv6 blocks must cover the /64 and only it")
	}
	// Failures for one username from many networks: the networks that
	// failed as it are blocked for it, no other network, and no other
	// username.
	failed("198.51.100.1", "SMUSER")
	if _, attack := g.failed("198.51.100.2", "SMUSER", wrongPassword); !attack {
		t.Error("the 6th failure as SMUSER did not report the attack")
	}
	for _, ip := range []string{"192.0.2.1", "198.51.100.1", "198.51.100.2"} {
		if !g.blocked(ip, "smuser") {
			t.Errorf("%s failed as SMUSER during the attack but is not blocked for it", ip)
		}
	}
	if g.blocked("203.0.113.1", "SMUSER") || g.blocked("198.51.100.1", "other") {
		t.Error("a network that did not fail as the username is blocked for it")
	}
	if d := failed("203.0.113.9", "SMUSER"); d < 4*time.Second || d > maxAuthDelay {
		t.Errorf("delay %s for a username under attack, want 4s to %s", d, maxAuthDelay)
	}
	if !g.blocked("203.0.113.9", "SMUSER") {
		t.Error("a network failing as a username under attack is not blocked at once")
	}
	// Blocks end; old failures are forgotten.
	clock.Advance(11 * time.Minute)
	if g.networkBlocked("192.0.2.1") || g.blocked("198.51.100.1", "SMUSER") {
		t.Error("blocks did not end")
	}
	if d := failed("192.0.2.1", "fresh"); d != 250*time.Millisecond {
		t.Errorf("after the window the delay starts again: %s", d)
	}
}

// TestAuthFailureLogsNoPassword: a client that swaps the fields sends its
// password as the username. The log names a wrong password's username,
// which is a real credential's, but only a hash of an unknown one.
func TestAuthFailureLogsNoPassword(t *testing.T) {
	var logs testkit.Buffer
	te := newTestEnv(t, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	s := dialRaw(t, te.starttls)
	s.starttls()
	s.cmd("EHLO client.test", "250")
	s.cmd("AUTH PLAIN "+plainIR(te.password, te.username), "535 5.7.8")
	s.cmd("AUTH PLAIN "+plainIR(te.username, "not-the-password"), "535 5.7.8")
	out := logs.String()
	if strings.Contains(out, te.password) {
		t.Errorf("the log holds the password typed as a username:\n%s", out)
	}
	sum := sha256.Sum256([]byte(te.password))
	if want := "username_hash=" + hex.EncodeToString(sum[:6]); !strings.Contains(out, want) {
		t.Errorf("the log lacks %s for the unknown username:\n%s", want, out)
	}
	if want := "username=" + te.username; !strings.Contains(out, want) {
		t.Errorf("the log lacks %s for the wrong password:\n%s", want, out)
	}
}
