package smtpd

import (
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

// A client that has not logged in gets UnauthenticatedReadTimeout; one
// that has, ReadTimeout.
func TestUnauthenticatedReadTimeout(t *testing.T) {
	te := newTestEnv(t, func(c *Config) {
		c.UnauthenticatedReadTimeout = 300 * time.Millisecond
		c.ReadTimeout = 10 * time.Second
	})
	loggedIn := te.dial(t, te.username, te.password)
	silent := dialRaw(t, te.starttls)
	if line, _ := silent.r.ReadString('\n'); !strings.HasPrefix(line, "421 4.4.2") {
		t.Fatalf("a silent client that has not logged in got %q, want 421 4.4.2 (idle timeout)", line)
	}
	time.Sleep(600 * time.Millisecond) // twice the timeout before AUTH
	if err := loggedIn.Noop(); err != nil {
		t.Fatalf("the logged-in client was cut off after the timeout for strangers: %v", err)
	}
}

// With the unauthenticated cap full, a newcomer gets in and the stranger
// silent longest is closed; the logged-in client is not counted, and stays.
func TestUnauthenticatedCap(t *testing.T) {
	te := newTestEnv(t, func(c *Config) { c.MaxUnauthenticatedConnections = 2 })
	loggedIn := te.dial(t, te.username, te.password)
	first, second := dialRaw(t, te.starttls), dialRaw(t, te.starttls)
	third := dialRaw(t, te.starttls) // the cap was full: first, silent longest, made room
	first.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, first.r); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("the stranger silent longest was not closed to make room")
	}
	second.cmd("NOOP", "250")
	third.cmd("NOOP", "250")
	if err := loggedIn.Noop(); err != nil {
		t.Fatalf("the logged-in client was closed: %v", err)
	}
	if st := te.srv.ConnStats(); st.Authenticated != 1 || st.Unauthenticated != 2 {
		t.Errorf("ConnStats %+v, want 1 authenticated and 2 not", st)
	}
}
