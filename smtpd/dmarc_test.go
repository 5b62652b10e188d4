package smtpd

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sesame-mail/sesame/store"
)

// A verified address whose domain publishes DMARC p=reject may not send,
// in MAIL FROM or in From:, with a reply that says why and what to do;
// once the operator allowed it (--force), it may.
func TestDMARCProtectedSender(t *testing.T) {
	te := newTestEnv(t, func(c *Config) { c.FallbackSigningDomain = "example.com" })
	ctx := context.Background()
	now := time.Now()
	if err := te.st.CreateAddress(ctx, store.Address{Address: "me@gmail.test", Status: store.IdentityVerified, CreatedAt: now,
		DMARCPolicy: "reject", DMARCCheckedAt: now}); err != nil {
		t.Fatal(err)
	}
	const want = `554 5.7.1 Message rejected: gmail.test publishes DMARC p=reject, so receivers refuse mail from me@gmail.test that ` +
		`gmail.test's own servers did not send; send from an address in a domain verified on this server, ` +
		`or ask the operator to allow this address ("sesame address add me@gmail.test --force")`

	s := te.dialAuthed(t)
	if got := s.cmd("MAIL FROM:<me@gmail.test>", "554"); !strings.HasPrefix(got, want) {
		t.Errorf("MAIL FROM a DMARC-protected address: %q, want %q", got, want)
	}
	// In From: with an envelope sender of a verified domain.
	s.cmd("MAIL FROM:<shop@example.com>", "250")
	s.cmd("RCPT TO:<a@example.net>", "250")
	s.cmd("DATA", "354")
	s.write(message("me@gmail.test", "a@example.net", "s", "b\r\n") + ".\r\n")
	if got := s.expect("554"); !strings.HasPrefix(got, want) {
		t.Errorf("From: a DMARC-protected address: %q, want %q", got, want)
	}

	if err := te.st.SetAddressForced(ctx, "me@gmail.test", true); err != nil {
		t.Fatal(err)
	}
	c := te.dial(t, te.username, te.password)
	if _, err := send(c, "me@gmail.test", []string{"a@example.net"}, message("me@gmail.test", "a@example.net", "s", "b\r\n")); err != nil {
		t.Errorf("sending as the address once allowed: %v", err)
	}
}
