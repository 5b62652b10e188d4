package smtpd

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sesame-mail/sesame/account"
	sesamedkim "github.com/sesame-mail/sesame/dkim"
	"github.com/sesame-mail/sesame/store"
)

// The Sender header (and the Resent- fields) name who sent a message as
// much as From does: a credential may only put there what it may put in
// From, and a message whose Sender Sesame cannot read is refused like one
// whose From it cannot read.
func TestSenderHeaderChecked(t *testing.T) {
	te := newTestEnv(t, nil)
	ctx := context.Background()
	now := time.Now()
	key, err := sesamedkim.NewKey(store.AlgRSA, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := te.st.CreateDomain(ctx, store.Domain{Name: "other.org", CreatedAt: now, Keys: []store.DKIMKey{key},
		Status: store.IdentityVerified}); err != nil {
		t.Fatal(err)
	}
	pass := account.NewPassword()
	hash, _ := account.HashPassword(pass)
	restricted := store.Credential{Name: "other-only", Username: account.NewUsername(), PasswordHash: hash,
		CreatedAt: now, UpdatedAt: now, Allowed: []string{"other.org"}}
	if err := te.st.CreateCredential(ctx, restricted); err != nil {
		t.Fatal(err)
	}
	if err := te.st.SetAllowed(ctx, restricted.Name, restricted.Allowed); err != nil {
		t.Fatal(err)
	}

	const notVerified = "554 5.7.1 Message rejected: Email address is not verified. The following identities failed the check: "
	for _, tt := range []struct {
		name   string
		header string // fields above From
		want   string
	}{
		{"sender it may not use", "Sender: x@example.com\r\n", notVerified + "x@example.com"},
		{"sender with display name, upper case", "SENDER: \"Boss\" <X@Example.COM>\r\n", notVerified + "X@example.com"},
		{"allowed sender", "Sender: Desk <desk@other.org>\r\n", "250 2.0.0 Ok: queued as "},
		{"sender same as from", "Sender: news@other.org\r\n", "250 2.0.0 Ok: queued as "},
		{"two senders", "Sender: desk@other.org\r\nSender: desk@other.org\r\n",
			"554 5.6.0 Message refused: it has more than one Sender header"},
		{"unparseable sender", "Sender: nobody\r\n",
			"554 5.6.0 Message refused: the Sender header must hold exactly one valid address"},
		{"two addresses in sender", "Sender: desk@other.org, x@example.com\r\n",
			"554 5.6.0 Message refused: the Sender header must hold exactly one valid address"},
		{"sender domain invalid", "Sender: desk@other_org\r\n",
			"554 5.6.0 Message refused: the Sender header's domain is not a valid domain name"},
		{"resent-from it may not use", "Resent-From: desk@other.org, ceo@example.com\r\n", notVerified + "ceo@example.com"},
		{"resent-sender it may not use", "Resent-Sender: ceo@example.com\r\nResent-From: desk@other.org\r\n", notVerified + "ceo@example.com"},
		{"older resent block it may not use", "Resent-From: desk@other.org\r\nResent-From: ceo@example.com\r\n", notVerified + "ceo@example.com"},
		{"allowed resent fields", "Resent-Sender: a@other.org\r\nResent-From: b@other.org\r\n", "250 2.0.0 Ok: queued as "},
		{"unparseable resent-from", "Resent-From: ;\r\n",
			"554 5.6.0 Message refused: a Resent-From or Resent-Sender header holds no valid address"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := queued(t, te)
			s := dialRaw(t, te.starttls)
			s.starttls()
			s.cmd("EHLO client.test", "250")
			s.cmd("AUTH PLAIN "+plainIR(restricted.Username, pass), "235")
			s.cmd("MAIL FROM:<news@other.org>", "250")
			s.cmd("RCPT TO:<r@example.net>", "250")
			s.cmd("DATA", "354")
			s.write(tt.header + message("news@other.org", "r@example.net", "s", "b\r\n") + ".\r\n")
			s.expect(tt.want)
			after := queued(t, te)
			if accepted := strings.HasPrefix(tt.want, "250"); accepted != (after == before+1) || after > before+1 {
				t.Errorf("queue held %d messages, now %d; want one more only when accepted", before, after)
			}
		})
	}
}

// queued is the number of messages in te's queue.
func queued(t *testing.T, te *testEnv) int {
	t.Helper()
	list, err := te.st.QueueMessages(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return len(list)
}

func TestOtherSendersBounded(t *testing.T) {
	var b strings.Builder
	for i := range maxOtherSenders + 1 {
		b.WriteString("Resent-From: a" + string(rune('a'+i)) + "@other.org\r\n")
	}
	h, err := parseHeader([]byte(b.String() + "From: a@other.org\r\n\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.otherSenders("a@other.org"); err == nil || !strings.Contains(err.Error(), "more than 20 addresses") {
		t.Errorf("%d resent addresses: err = %v, want a refusal", maxOtherSenders+1, err)
	}
	// Repeats count once; From is not counted.
	h, _ = parseHeader([]byte(strings.Repeat("Resent-From: A@other.org\r\nResent-Sender: a@OTHER.org\r\n", 30) +
		"Sender: a@other.org\r\n\r\n"))
	got, err := h.otherSenders("b@other.org")
	if err != nil || len(got) != 1 || got[0] != "a@other.org" { // Sender's, the first
		t.Errorf("otherSenders = %q, %v; want one address", got, err)
	}
	if got, err := h.otherSenders("a@other.org"); err != nil || len(got) != 0 {
		t.Errorf("otherSenders with the same From = %q, %v; want none", got, err)
	}
}
