package smtpd

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sesame-mail/sesame/account"
	sesamedkim "github.com/sesame-mail/sesame/dkim"
	"github.com/sesame-mail/sesame/identity"
	"github.com/sesame-mail/sesame/store"
)

// The one credential the fuzz server accepts. The harness (afterLogin) and
// some seeds log in with it, so the fuzzer reaches MAIL, DATA and BDAT;
// fuzzAuth tells each run whether a login succeeded, so that queued mail
// can be held to one.
const (
	fuzzUsername = "SMFUZZUSERNAME000001"
	fuzzPassword = "fuzz-password-known-to-the-seeds"
)

// hangLimit is how long a run may take before the server counts as hung.
// Runs end in about a millisecond, as the client half-closes after its
// bytes; the server's read timeout is a backstop, not what ends a run. It
// is not shorter because a fuzzing machine is busy (CI runs it with -race
// beside every other package): a server-side handshake timing out under
// load would fail the harness, not the input.
const (
	hangLimit       = 15 * time.Second
	fuzzReadTimeout = 3 * time.Second
)

// fuzzAuth stands in for account.Authenticator: argon2 (tens of
// milliseconds a try) would make the fuzzer spend its time hashing
// guesses, and the login check itself is not what is fuzzed here.
type fuzzAuth struct {
	cred store.Credential

	mu        sync.Mutex
	calls, ok int
}

func (a *fuzzAuth) Authenticate(_ context.Context, username, password string) (store.Credential, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls++
	if username == fuzzUsername && password == fuzzPassword {
		a.ok++
		return a.cred, nil
	}
	return store.Credential{}, account.ErrInvalidCredentials
}

// fuzzQueue records what the session queues, in memory: an fsync per
// message would dominate each run.
type fuzzQueue struct {
	mu   sync.Mutex
	msgs []*store.Message
}

func (q *fuzzQueue) Enqueue(_ context.Context, m *store.Message) error {
	c := *m
	c.Data = bytes.Clone(m.Data)
	c.Recipients = append([]string(nil), m.Recipients...)
	q.mu.Lock()
	q.msgs = append(q.msgs, &c)
	q.mu.Unlock()
	return nil
}

// fuzzServer is a submission server on loopback, built as newTestEnv
// builds one (real store, DKIM keys, policy and quotas) except for the
// authenticator and the queue, and with short timeouts.
type fuzzServer struct {
	addr  string
	auth  *fuzzAuth
	queue *fuzzQueue
}

func newFuzzServer(tb testing.TB) *fuzzServer {
	tb.Helper()
	dir := tb.TempDir()
	st, err := store.OpenSQLite(filepath.Join(dir, "sesame.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	ctx := context.Background()
	now := time.Now()
	cred := store.Credential{Name: "fuzz", Username: fuzzUsername, PasswordHash: "checked by fuzzAuth", CreatedAt: now, UpdatedAt: now}
	if err := st.CreateCredential(ctx, cred); err != nil {
		tb.Fatal(err)
	}
	key, err := sesamedkim.NewKey(store.AlgRSA, now)
	if err != nil {
		tb.Fatal(err)
	}
	if err := st.CreateDomain(ctx, store.Domain{Name: "example.com", CreatedAt: now, Keys: []store.DKIMKey{key},
		Status: store.IdentityVerified}); err != nil {
		tb.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cert, err := LoadCertificate("", "", dir, "sesame.test", log)
	if err != nil {
		tb.Fatal(err)
	}
	fs := &fuzzServer{auth: &fuzzAuth{cred: cred}, queue: &fuzzQueue{}}
	srv := New(Config{
		Hostname:            "sesame.test",
		StartTLSListen:      []string{"127.0.0.1:0"},
		TLS:                 cert.TLSConfig(),
		MaxMessageBytes:     64 << 10,
		MaxRecipients:       5,
		MaxConnections:      100,
		MaxConnectionsPerIP: 100,
		ReadTimeout:         fuzzReadTimeout,
		WriteTimeout:        time.Second,
		// Three failures still close a connection, but the network and
		// username blocks are out of reach and the delays are nanoseconds:
		// otherwise the fuzzer's wrong passwords would soon lock 127.0.0.1
		// out and every later run would test only the 421 at connect.
		AuthLimits: AuthLimits{PerConnection: 3, PerNetwork: 1 << 30, PerUsername: 1 << 30,
			Window: 10 * time.Millisecond, BlockFor: time.Millisecond, Delay: time.Nanosecond},
		Logger: log,
	}, Deps{
		Auth:     fs.auth,
		Signer:   sesamedkim.NewDomainSigner(st),
		Queue:    fs.queue,
		Policy:   identity.NewAuthorizer(st),
		Quotas:   account.NewQuotas(st, account.QuotaDefaults{Daily: 1 << 30, Rate: 1e9}, time.Now),
		Standing: st,
	})
	fs.addr = serveUntilCleanup(tb, srv)[0]
	return fs
}

// reset forgets the previous run. Runs do not overlap: each waits until
// the server has closed its connection, after its last Enqueue.
func (fs *fuzzServer) reset() {
	fs.auth.mu.Lock()
	fs.auth.calls, fs.auth.ok = 0, 0
	fs.auth.mu.Unlock()
	fs.queue.mu.Lock()
	fs.queue.msgs = nil
	fs.queue.mu.Unlock()
}

// Where a run's fuzzed bytes start. AUTH needs TLS, and no fuzzer finds a
// TLS handshake by mutation, so the harness does the upgrade (and, for
// the deepest mode, the login) and the fuzzer writes what follows.
const (
	fromGreeting = iota // in the clear, after the 220 greeting
	afterTLS            // after EHLO, STARTTLS and the handshake
	afterLogin          // after that, EHLO and AUTH PLAIN with the known credential
	modes
)

// harness performs the steps of mode on conn and returns the connection
// to write the fuzzed bytes on.
func (fs *fuzzServer) harness(conn net.Conn, mode int) (net.Conn, error) {
	if mode == fromGreeting {
		return conn, nil
	}
	// Nothing follows the 220 until our ClientHello (nor the 235 until our
	// next command), so the buffered readers swallow nothing of what
	// comes after.
	if err := exchange(conn, "EHLO fuzz.test\r\nSTARTTLS\r\n", "220 2.0.0"); err != nil {
		return nil, fmt.Errorf("before STARTTLS: %w", err)
	}
	tc := tls.Client(conn, clientTLS)
	if err := tc.Handshake(); err != nil {
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	if mode == afterLogin {
		if err := exchange(tc, "EHLO fuzz.test\r\nAUTH PLAIN "+plainIR(fuzzUsername, fuzzPassword)+"\r\n", "235 "); err != nil {
			return nil, fmt.Errorf("login: %w", err)
		}
	}
	return tc, nil
}

// exchange writes cmds and reads replies up to the line starting with want.
func exchange(conn net.Conn, cmds, want string) error {
	if _, err := io.WriteString(conn, cmds); err != nil {
		return err
	}
	r := bufio.NewReader(conn)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		if strings.HasPrefix(line, want) {
			return nil
		}
		if line[0] >= '4' {
			return fmt.Errorf("reply %q", line)
		}
	}
}

// FuzzSession writes the fuzzer's bytes as the client side of one whole
// session with a real submission server (starting in the clear, after
// STARTTLS, or logged in: see the modes), reads every reply until the
// server hangs up, and checks what must hold whatever a client sends:
//   - no panic, and the server ends the session promptly once the client
//     has stopped sending (no hang);
//   - in the clear no password is ever checked and nothing is queued;
//   - nothing is queued without a successful login in the same session,
//     and only as the credential that logged in;
//   - every queued message is one the client was told about with
//     "250 2.0.0 Ok: queued as ID", and holds no bare CR, bare LF or NUL
//     (what a smuggled second message needs), nor do its envelope
//     addresses;
//   - the reply stream is CRLF-framed SMTP replies: no input makes the
//     server write a line that is not a reply.
func FuzzSession(f *testing.F) {
	const (
		env    = "MAIL FROM:<shop@example.com>\r\nRCPT TO:<a@example.net>\r\n"
		msg    = "From: shop@example.com\r\n\r\nx\r\n..dot\r\n"
		second = "MAIL FROM:<shop@example.com>\r\nRCPT TO:<v@example.org>\r\nDATA\r\nFrom: shop@example.com\r\n\r\nsmuggled\r\n.\r\n"
		// spoof is second with lines of its own, which checkQueuedAsSent
		// can tell from the first message's.
		spoof = "MAIL FROM:<spoof@example.com>\r\nRCPT TO:<v@example.org>\r\nDATA\r\nFrom: spoof@example.com\r\n\r\nspoofed\r\n.\r\n"
	)
	login := "EHLO x\r\nAUTH PLAIN " + plainIR(fuzzUsername, fuzzPassword) + "\r\n"
	for _, s := range []string{
		// Two submissions on one connection, pipelined.
		env + "DATA\r\n" + msg + ".\r\n" + env + "DATA\r\n" + msg + ".\r\nQUIT\r\n",
		// Smuggling: end-of-data look-alikes with a second transaction
		// behind them (server_test.go's TestRefusals/smuggling).
		env + "DATA\r\nFrom: shop@example.com\r\n\r\nx\n.\n" + strings.ReplaceAll(second, "\r\n", "\n") + "\r\n.\r\n",
		env + "DATA\r\nFrom: shop@example.com\r\n\r\nx\r.\r" + strings.ReplaceAll(second, "\r\n", "\r") + "\r\n.\r\n",
		env + "DATA\r\nFrom: shop@example.com\r\n\r\nx\r\n.\n" + second + "\r\n.\r\n",
		env + "DATA\r\nFrom: shop@example.com\r\n\r\nx\n.\r\n" + second,
		env + "DATA\r\nFrom: shop@example.com\r\n\r\nx\r\r\n.\r\n" + second + "\r\n.\r\n",
		env + "DATA\r\nFrom: shop@example.com\nTo: a@example.net\r\n\r\nx\r\n.\r\n",
		env + "DATA\r\nFrom: shop@example.com\r\n\r\nx\x00y\r\n.\r\n" + second,
		// Dot lines (TestEndOfData): go-smtp's own reader drops the ".\r"
		// of "\r\n.\rX" (a different message, its bare CR unseen) and
		// misses the end after "\r\r\n".
		env + "DATA\r\nFrom: shop@example.com\r\n\r\nx\r\n.\r" + spoof,
		env + "DATA\r\n.\rFrom: shop@example.com\r\n\r\nx\r\n.\r\n",
		env + "DATA\r\nFrom: shop@example.com\r\n\r\nx\r\n.\r\r\n.\r\n" + spoof,
		env + "DATA\r\nFrom: shop@example.com\r\n\r\nx\r\n.\rmore\r\n.\r\n" + spoof,
		env + "DATA\r\n..X-Dot: yes\r\nFrom: shop@example.com\r\n\r\n..\r\n...x\r\n.\r\n" + spoof,
		env + "DATA\r\n.\r\n" + spoof,
		env + fmt.Sprintf("BDAT %d LAST\r\n", len(msg)+3) + msg + ".\rX" + spoof,
		// BDAT: in chunks, smuggling inside a chunk, sizes that lie, BDAT
		// mixed with DATA, an empty LAST chunk.
		env + "BDAT 10\r\n" + msg[:10] + fmt.Sprintf("BDAT %d LAST\r\n", len(msg)-10) + msg[10:] + "QUIT\r\n",
		env + "BDAT 40 LAST\r\nFrom: shop@example.com\r\n\r\nx\n.\nMAIL FR",
		env + "BDAT 5 LAST\r\n" + msg,
		env + "BDAT 10\r\n0123456789DATA\r\n" + msg + ".\r\n",
		env + fmt.Sprintf("BDAT %d\r\n%sBDAT 0 LAST\r\n", len(msg), msg),
		"BDAT 4 LAST\r\nabcd" + env + "DATA\r\n" + msg + ".\r\n",
		// Refusals in a pipeline, RSET, EHLO mid-transaction, a second AUTH.
		"MAIL FROM:<x@unknown.example>\r\nRCPT TO:<a@example.net>\r\nDATA\r\n" + msg + ".\r\n",
		env + "RSET\r\nDATA\r\n" + msg + ".\r\n",
		env + "EHLO y\r\nDATA\r\n" + msg + ".\r\n",
		login + env + "DATA\r\n" + msg + ".\r\n",
		// Envelope and header refusals, limits.
		"MAIL FROM:<>\r\nMAIL FROM:<shop@example.com> SIZE=70000\r\nMAIL FROM:<shop@example.com> BODY=BINARYMIME\r\n" + env +
			"RCPT TO:<\"u@x\"@example.net>\r\nRCPT TO:<u%x@example.net>\r\nRCPT TO:<u@[127.0.0.1]>\r\nRCPT TO:<\xc3\xbc@example.net>\r\n",
		"MAIL FROM:<shop@example.com> SMTPUTF8\r\nRCPT TO:<\xc3\xbc@example.net>\r\nDATA\r\n" + msg + ".\r\n",
		env + "RCPT TO:<b@example.net>\r\nRCPT TO:<c@example.net>\r\nRCPT TO:<d@example.net>\r\nRCPT TO:<e@example.net>\r\nRCPT TO:<f@example.net>\r\n",
		env + "DATA\r\nSubject: no from\r\n\r\nx\r\n.\r\n" + env + "DATA\r\nFrom: a@example.com\r\nFrom: b@example.com\r\n\r\nx\r\n.\r\n",
		env + "DATA\r\nnot a header\r\n\r\nx\r\n.\r\n" + env + "DATA\r\nFrom: x@unknown.example\r\n\r\nx\r\n.\r\n",
		env + "DATA\r\nFrom: shop@example.com\r\n\r\n" + strings.Repeat("x", 2100) + "\r\n.\r\n",
		"MAIL FROM:<shop@example.com>\r\nDATA\r\nBDAT 1 LAST\r\nx",
		"STARTTLS\r\nHELO x\r\n" + env + "DATA\r\n" + msg + ".\r\n",
	} {
		f.Add(uint8(afterLogin), []byte(s))
	}
	for _, s := range []string{
		// After TLS: logging in (PLAIN, LOGIN in steps and with an initial
		// response), cancelled and failed logins, no login at all.
		login + env + "DATA\r\n" + msg + ".\r\n",
		"EHLO x\r\nAUTH LOGIN\r\n" + base64Std(fuzzUsername) + "\r\n" + base64Std(fuzzPassword) + "\r\n" + env + "DATA\r\n" + msg + ".\r\n",
		"EHLO x\r\nAUTH LOGIN " + base64Std(fuzzUsername) + "\r\n" + base64Std(fuzzPassword) + "\r\n" + env + fmt.Sprintf("BDAT %d LAST\r\n%s", len(msg), msg),
		"EHLO x\r\nAUTH PLAIN\r\n*\r\nAUTH PLAIN =\r\n" + env,
		"EHLO x\r\nAUTH PLAIN " + plainIR(fuzzUsername, "wrong") + "\r\nAUTH PLAIN " + plainIR("x", "y") +
			"\r\nAUTH PLAIN " + base64Std("other\x00"+fuzzUsername+"\x00"+fuzzPassword) + "\r\n" + login + env + "DATA\r\n" + msg + ".\r\n",
		"EHLO x\r\n" + env + "DATA\r\n" + msg + ".\r\n",
		"MAIL FROM:<shop@example.com>\r\nHELO x\r\n" + env,
		"\r\n\r\nNOOP\r\nVRFY a\r\nHELP\r\nxx\r\nEHLO\r\nEHLO a\rb\x00c\r\n",
	} {
		f.Add(uint8(afterTLS), []byte(s))
	}
	for _, s := range []string{
		// In the clear: AUTH is refused unchecked (530), MAIL too.
		login + env + "DATA\r\n" + msg + ".\r\n",
		"EHLO x\r\nAUTH LOGIN\r\n" + base64Std(fuzzUsername) + "\r\n" + base64Std(fuzzPassword) + "\r\n" + env,
		// Commands pipelined behind STARTTLS (the CVE-2011-0411 pattern)
		// go into the TLS handshake, which fails; go-smtp answers 550 and
		// carries on in the clear, where AUTH is still refused.
		"EHLO x\r\nSTARTTLS\r\n" + login + env + "DATA\r\n" + msg + ".\r\n",
		"STARTTLS\r\n\x16\x03\x01\x00\x05hello" + login,
		"EHLO x\r\n" + env + fmt.Sprintf("BDAT %d LAST\r\n%s", len(msg), msg),
		"",
	} {
		f.Add(uint8(fromGreeting), []byte(s))
	}

	fs := newFuzzServer(f)
	f.Fuzz(func(t *testing.T, mode uint8, input []byte) {
		m := int(mode % modes)
		fs.reset()
		replies, err := fs.run(m, input)
		if err != nil {
			t.Fatal(err)
		}
		if testing.Verbose() {
			t.Logf("replies:\n%s", replies)
		}
		fs.check(t, m, input, replies)
	})
}

// run plays one session and returns everything the server wrote after the
// harness's own steps.
func (fs *fuzzServer) run(mode int, input []byte) ([]byte, error) { return fs.play(mode, input, false) }

// play is run; abrupt ends the input as a killed client does, with a TCP
// FIN and no TLS close_notify.
func (fs *fuzzServer) play(mode int, input []byte, abrupt bool) ([]byte, error) {
	raw, err := net.DialTimeout("tcp", fs.addr, hangLimit)
	if err != nil {
		return nil, err
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(hangLimit))
	conn, err := fs.harness(raw, mode)
	if err != nil {
		return nil, fmt.Errorf("harness (before any fuzzed byte): %w", err)
	}
	// Read while writing: a server answering a long pipelined input
	// would otherwise block on a full socket buffer, and so would we.
	type result struct {
		b   []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		b, err := io.ReadAll(conn)
		done <- result{b, err}
	}()
	// The server may hang up in the middle (421, QUIT, too many errors):
	// write errors are expected then.
	conn.Write(input)
	// End of input, so the server ends the session at once rather than
	// after its read timeout.
	switch c := conn.(type) {
	case *tls.Conn:
		if abrupt {
			raw.(*net.TCPConn).CloseWrite()
		} else {
			c.CloseWrite()
		}
	case *net.TCPConn:
		c.CloseWrite()
	}
	res := <-done
	if errors.Is(res.err, os.ErrDeadlineExceeded) {
		return nil, fmt.Errorf("hang: the server neither answered nor closed the connection within %s of the end of input; replies so far:\n%q", hangLimit, res.b)
	}
	// Any other error is the server closing: a reset when it hung up with
	// input unread.
	return res.b, nil
}

var queuedReply = regexp.MustCompile(`(?m)^250 2\.0\.0 Ok: queued as ([A-Z0-9]{16})\r$`)

func (fs *fuzzServer) check(t *testing.T, mode int, input, replies []byte) {
	fs.auth.mu.Lock()
	calls, logins := fs.auth.calls, fs.auth.ok
	fs.auth.mu.Unlock()
	fs.queue.mu.Lock()
	msgs := fs.queue.msgs
	fs.queue.mu.Unlock()

	if mode == fromGreeting {
		// The fuzzer cannot complete a TLS handshake, so this whole
		// session was in the clear.
		if calls > 0 {
			t.Fatalf("a password was checked in the clear (%d calls); replies:\n%q", calls, replies)
		}
		if len(msgs) > 0 {
			t.Fatalf("%d messages queued in a session without TLS; replies:\n%q", len(msgs), replies)
		}
		// After a STARTTLS the server writes TLS records (an alert), not
		// replies; the clear-text part must still be well framed.
		if i := bytes.Index(replies, []byte("220 2.0.0 Ready to start TLS\r\n")); i >= 0 {
			replies = replies[:i]
		}
	}
	if err := checkReplyFraming(replies); err != nil {
		t.Fatalf("%v; replies:\n%q", err, replies)
	}
	if logins == 0 && len(msgs) > 0 {
		t.Fatalf("%d messages queued without a successful login; replies:\n%q", len(msgs), replies)
	}
	acked := map[string]bool{}
	for _, m := range queuedReply.FindAllSubmatch(replies, -1) {
		acked[string(m[1])] = true
	}
	if len(acked) != len(msgs) {
		t.Fatalf("%d messages queued but %d acknowledged with 250; replies:\n%q", len(msgs), len(acked), replies)
	}
	for _, m := range msgs {
		if !acked[m.ID] {
			t.Fatalf("message %s queued but never acknowledged; replies:\n%q", m.ID, replies)
		}
		if m.Credential != "fuzz" {
			t.Fatalf("message %s queued as credential %q", m.ID, m.Credential)
		}
		if err := checkLineEndsCRLF(m.Data); err != nil {
			t.Fatalf("message %s queued with %v:\n%q", m.ID, err, m.Data)
		}
		if err := checkQueuedAsSent(m, input); err != nil {
			t.Fatalf("message %s queued with %v:\n%q", m.ID, err, m.Data)
		}
		if len(m.Recipients) == 0 || len(m.Recipients) > 5 {
			t.Fatalf("message %s queued with %d recipients", m.ID, len(m.Recipients))
		}
		for _, a := range append([]string{m.Sender}, m.Recipients...) {
			if strings.Count(a, "@") != 1 || strings.ContainsFunc(a, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
				t.Fatalf("message %s queued with envelope address %q", m.ID, a)
			}
		}
	}
}

// checkLineEndsCRLF is the test's own statement of the rule (not the
// code under test): every CR is followed by LF, every LF preceded by CR,
// no NUL.
func checkLineEndsCRLF(b []byte) error {
	for i, c := range b {
		switch {
		case c == 0:
			return fmt.Errorf("a NUL at offset %d", i)
		case c == '\r' && (i+1 == len(b) || b[i+1] != '\n'):
			return fmt.Errorf("a bare CR at offset %d", i)
		case c == '\n' && (i == 0 || b[i-1] != '\r'):
			return fmt.Errorf("a bare LF at offset %d", i)
		}
	}
	return nil
}

// addedFeedbackID is the Feedback-ID Sesame adds: whatever the client
// sent, its parts hold no colon, white space or control character.
var addedFeedbackID = regexp.MustCompile(`^Feedback-ID: [A-Za-z0-9._+=@-]{1,64}:fuzz:[a-z0-9.-]{1,64}:sesame$`)

// checkQueuedAsSent checks that every line of a queued message, below the
// fields Sesame adds, is a line of the input without its transparency dot:
// a message changed on its way in (go-smtp's reader turns "\r\n.\rX" into
// "\r\nX") is not the one the client sent, and hides what the client did.
// The lines are compared as a set, and not for BDAT, whose chunks need not
// end at line ends.
func checkQueuedAsSent(m *store.Message, input []byte) error {
	if bytes.Contains(bytes.ToUpper(input), []byte("BDAT")) {
		return nil
	}
	sent := map[string]bool{}
	for _, l := range strings.Split(string(input), "\n") { // go-smtp takes commands ending in LF alone
		sent[strings.TrimPrefix(strings.TrimSuffix(l, "\r"), ".")] = true
	}
	lines := strings.Split(strings.TrimSuffix(string(m.Data), "\r\n"), "\r\n")
	i := 0
	for i < len(lines) && (strings.HasPrefix(lines[i], "Received:") || strings.HasPrefix(lines[i], "DKIM-Signature:") ||
		strings.HasPrefix(lines[i], " ") || strings.HasPrefix(lines[i], "\t")) {
		i++
	}
	for _, l := range lines[i:] {
		if !sent[l] && l != "Message-ID: <"+m.ID+"@sesame.test>" && !strings.HasPrefix(l, "Date: ") && !addedFeedbackID.MatchString(l) {
			return fmt.Errorf("the line %q, which the client never sent", l)
		}
	}
	return nil
}

// checkReplyFraming checks that b is a sequence of CRLF-terminated reply
// lines, each starting with a three-digit code and a space or hyphen: no
// input makes the server write a line that is not a reply. A bare CR or
// a NUL inside a line is not refused here, because go-smtp echoes what the
// client sent, as it came, in two replies (the EHLO argument in "250-Hello
// NAME", the verb in "500 5.5.2 Syntax errors, VERB command
// unrecognized"); that goes back only to the client that sent it, and
// Sesame sanitizes the EHLO name before it goes into a Received field.
func checkReplyFraming(b []byte) error {
	lines := bytes.Split(b, []byte("\r\n"))
	if last := lines[len(lines)-1]; len(last) > 0 {
		return fmt.Errorf("reply stream ends inside a line: %q", last)
	}
	for _, l := range lines[:len(lines)-1] {
		if len(l) < 4 || l[0] < '2' || l[0] > '5' || l[1] < '0' || l[1] > '9' || l[2] < '0' || l[2] > '9' || (l[3] != ' ' && l[3] != '-') {
			return fmt.Errorf("not a reply line: %q", l)
		}
		if bytes.IndexByte(l, '\n') >= 0 {
			return fmt.Errorf("LF inside a reply line: %q", l)
		}
	}
	return nil
}

// A BDAT chunk cut short by the end of the connection must not be queued:
// the client never finished it, and will send it again. go-smtp copies a
// chunk with io.Copy, which takes EOF for the end of the chunk, so the
// truncated message is signed, queued and delivered (FuzzSession cannot
// see this: the 250 is written on the half-closed connection).
func TestBDATCutShort(t *testing.T) {
	fs := newFuzzServer(t)
	good := message("shop@example.com", "a@example.net", "cut", "line one\r\nline two\r\n")
	// The client dies in the middle of the chunk: the kernel sends a FIN.
	// (A TLS close_notify mid-chunk is a deliberate act go-smtp hides from
	// us; a dying client does not send one.)
	replies, err := fs.play(afterLogin, []byte("MAIL FROM:<shop@example.com>\r\nRCPT TO:<a@example.net>\r\nBDAT 4000 LAST\r\n"+good), true)
	if err != nil {
		t.Fatal(err)
	}
	fs.queue.mu.Lock()
	n := len(fs.queue.msgs)
	fs.queue.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d message queued from a chunk of %d of its 4000 octets; replies:\n%s", n, len(good), replies)
	}
}
