package test

import (
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"
)

// rawClient speaks SMTP line by line, so a test can send what a real client
// would refuse to (AUTH before STARTTLS) and read the exact reply code.
type rawClient struct {
	t    *testing.T
	conn net.Conn
	tp   *textproto.Conn
}

func insecureTLS() *tls.Config {
	// Sesame's certificate is self-signed in these tests.
	return &tls.Config{InsecureSkipVerify: true, ServerName: "sesame.test"}
}

// dialRaw connects, reads the greeting and says EHLO.
func dialRaw(t *testing.T, addr string, implicitTLS bool) *rawClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if implicitTLS {
		conn = tls.Client(conn, insecureTLS())
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	c := &rawClient{t: t, conn: conn, tp: textproto.NewConn(conn)}
	t.Cleanup(func() { c.conn.Close() })
	if code, msg := c.reply(); code != 220 {
		t.Fatalf("greeting: %d %s", code, msg)
	}
	c.must(250, "EHLO raw.client.test")
	return c
}

func (c *rawClient) reply() (int, string) {
	c.t.Helper()
	code, msg, err := c.tp.ReadResponse(0)
	if err != nil {
		c.t.Fatalf("reading reply: %v", err)
	}
	return code, msg
}

func (c *rawClient) do(format string, args ...any) (int, string) {
	c.t.Helper()
	if err := c.tp.PrintfLine(format, args...); err != nil {
		c.t.Fatalf("sending %q: %v", fmt.Sprintf(format, args...), err)
	}
	return c.reply()
}

func (c *rawClient) must(want int, format string, args ...any) string {
	c.t.Helper()
	code, msg := c.do(format, args...)
	if code != want {
		c.t.Fatalf("%s: got %d %s, want %d", fmt.Sprintf(format, args...), code, msg, want)
	}
	return msg
}

func (c *rawClient) startTLS() {
	c.t.Helper()
	c.must(220, "STARTTLS")
	c.conn = tls.Client(c.conn, insecureTLS())
	c.conn.SetDeadline(time.Now().Add(30 * time.Second))
	c.tp = textproto.NewConn(c.conn)
	c.must(250, "EHLO raw.client.test")
}

func (c *rawClient) authPlain(user, pass string) (int, string) {
	c.t.Helper()
	return c.do("AUTH PLAIN %s", base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+pass)))
}

func (c *rawClient) authLogin(user, pass string) (int, string) {
	c.t.Helper()
	if code, msg := c.do("AUTH LOGIN"); code != 334 {
		return code, msg
	}
	if code, msg := c.do("%s", base64.StdEncoding.EncodeToString([]byte(user))); code != 334 {
		return code, msg
	}
	return c.do("%s", base64.StdEncoding.EncodeToString([]byte(pass)))
}

// send runs one transaction and returns the first reply that is not a
// success: the refusal, or the final reply to the data.
func (c *rawClient) send(from, to string, data []byte) (int, string) {
	c.t.Helper()
	if code, msg := c.do("MAIL FROM:<%s>", from); code != 250 {
		return code, msg
	}
	if code, msg := c.do("RCPT TO:<%s>", to); code != 250 {
		return code, msg
	}
	if code, msg := c.do("DATA"); code != 354 {
		return code, msg
	}
	w := c.tp.DotWriter()
	if _, err := w.Write(data); err != nil {
		c.t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		c.t.Fatal(err)
	}
	return c.reply()
}

// notVerifiedText is the text (after the code) of Sesame's refusal of a
// sender identity, worded as SES words it.
func notVerifiedText(identity string) string {
	return "5.7.1 Message rejected: Email address is not verified. The following identities failed the check: " + identity
}

// expectReply checks a reply's code and exact text (multi-line replies
// joined with spaces).
func expectReply(t *testing.T, what string, wantCode int, wantText string, code int, msg string) {
	t.Helper()
	msg = strings.ReplaceAll(msg, "\n", " ")
	if code != wantCode || msg != wantText {
		t.Errorf("%s: got\n\t%d %s\nwant\n\t%d %s", what, code, msg, wantCode, wantText)
		return
	}
	t.Logf("%s: %d %s", what, code, msg)
}

// TestRefusals checks the exact reply code for each way a submission must be
// refused, against the running binary.
func TestRefusals(t *testing.T) {
	inst := newInstance(t)
	user := inst.standard(senderDomain, "refusals")
	var refusedTokens []string

	msgFrom := func(from, token string) []byte {
		s := &submission{from: from, to: recipient, token: token}
		return s.message("the refusal test")
	}
	expectCode := func(t *testing.T, what string, want, code int, msg string) {
		t.Helper()
		if code != want {
			t.Errorf("%s: got %d %s, want %d", what, code, msg, want)
			return
		}
		t.Logf("%s: %d %s", what, code, msg)
	}

	t.Run("wrong password PLAIN", func(t *testing.T) {
		c := dialRaw(t, inst.smtpAddr, false)
		c.startTLS()
		code, msg := c.authPlain(user.Username, user.Password+"x")
		expectCode(t, "AUTH PLAIN with a wrong password", 535, code, msg)
	})
	t.Run("wrong password LOGIN", func(t *testing.T) {
		c := dialRaw(t, inst.tlsAddr, true)
		code, msg := c.authLogin(user.Username, "not-"+user.Password)
		expectCode(t, "AUTH LOGIN with a wrong password", 535, code, msg)
	})
	t.Run("unknown user", func(t *testing.T) {
		c := dialRaw(t, inst.smtpAddr, false)
		c.startTLS()
		code, msg := c.authPlain("no-such-user", user.Password)
		expectCode(t, "AUTH PLAIN as an unknown user", 535, code, msg)
	})
	t.Run("AUTH before STARTTLS", func(t *testing.T) {
		c := dialRaw(t, inst.smtpAddr, false)
		code, msg := c.authPlain(user.Username, user.Password)
		expectCode(t, "AUTH PLAIN before STARTTLS", 530, code, msg)
	})
	t.Run("MAIL without AUTH", func(t *testing.T) {
		c := dialRaw(t, inst.smtpAddr, false)
		c.startTLS()
		code, msg := c.do("MAIL FROM:<%s>", sender)
		expectCode(t, "MAIL after STARTTLS without AUTH", 530, code, msg)
	})
	t.Run("MAIL without TLS or AUTH", func(t *testing.T) {
		c := dialRaw(t, inst.smtpAddr, false)
		code, msg := c.do("MAIL FROM:<%s>", sender)
		expectCode(t, "MAIL without STARTTLS or AUTH", 530, code, msg)
	})
	t.Run("From domain never added", func(t *testing.T) {
		c := dialRaw(t, inst.smtpAddr, false)
		c.startTLS()
		if code, msg := c.authPlain(user.Username, user.Password); code != 235 {
			t.Fatalf("AUTH: %d %s", code, msg)
		}
		// Refused at MAIL FROM, as SES refuses an identity that is not
		// verified.
		tok := newToken()
		refusedTokens = append(refusedTokens, tok)
		code, msg := c.send("app@never-added.example", recipient, msgFrom("app@never-added.example", tok))
		expectReply(t, "envelope and From in a domain never added", 554, notVerifiedText("app@never-added.example"), code, msg)

		// The envelope may pass; the From header is what recipients see:
		// refused at the end of DATA.
		c.must(250, "RSET")
		tok = newToken()
		refusedTokens = append(refusedTokens, tok)
		code, msg = c.send(sender, recipient, msgFrom("ceo@never-added.example", tok))
		expectReply(t, "From header in a domain never added", 554, notVerifiedText("ceo@never-added.example"), code, msg)
	})
	t.Run("user deleted while serving", func(t *testing.T) {
		doomed := inst.createUser(t, "doomed")
		c := dialRaw(t, inst.smtpAddr, false)
		c.startTLS()
		if code, msg := c.authPlain(doomed.Username, doomed.Password); code != 235 {
			t.Fatalf("AUTH before delete: %d %s", code, msg)
		}
		inst.deleteUser(t, "doomed")
		c = dialRaw(t, inst.smtpAddr, false)
		c.startTLS()
		code, msg := c.authPlain(doomed.Username, doomed.Password)
		expectCode(t, "AUTH after `user delete`", 535, code, msg)
	})
	t.Run("user rotated while serving", func(t *testing.T) {
		old := inst.createUser(t, "rotor")
		fresh := inst.rotateUser(t, "rotor")
		if fresh.Username != old.Username || fresh.Password == old.Password {
			t.Fatalf("rotate: got %+v after %+v; want the same username and a new password", fresh, old)
		}
		c := dialRaw(t, inst.smtpAddr, false)
		c.startTLS()
		code, msg := c.authPlain(old.Username, old.Password)
		expectCode(t, "AUTH with the password from before `user rotate`", 535, code, msg)

		c = dialRaw(t, inst.smtpAddr, false)
		c.startTLS()
		if code, msg := c.authPlain(fresh.Username, fresh.Password); code != 235 {
			t.Fatalf("AUTH with the rotated password: %d %s", code, msg)
		}
		tok := newToken()
		code, msg = c.send(sender, recipient, msgFrom(sender, tok))
		if code != 250 || !queuedRE.MatchString(fmt.Sprintf("%d %s", code, msg)) {
			t.Fatalf("send with the rotated password: %d %s", code, msg)
		}
		inst.expectDelivered(t, tok, senderDomain)
	})

	// Checked last, after a later accepted message went through, so a
	// refused message that had been queued anyway would likely be there.
	for _, tok := range refusedTokens {
		if n := len(inst.sink.Keyed(tok)); n != 0 {
			t.Errorf("refused message %s reached the smarthost %d times", tok, n)
		}
	}
}
