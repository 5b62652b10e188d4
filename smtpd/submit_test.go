package smtpd

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sesame-mail/sesame/store"
)

// TestSubmit runs another door's submissions through the SMTP path's
// policy: each refusal comes with the reason the door translates, and the
// message accepted is signed and queued as over SMTP.
func TestSubmit(t *testing.T) {
	te := newTestEnv(t, nil)
	ctx := context.Background()
	now := time.Now()
	cred := func(name string, edit func(*store.Credential)) store.Credential {
		c := store.Credential{Name: name, Username: name + "-user", PasswordHash: "x", CreatedAt: now, UpdatedAt: now}
		edit(&c)
		if err := te.st.CreateCredential(ctx, c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	app, err := te.st.Credential(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	sub := func(c store.Credential, from string, to ...string) Submission {
		return Submission{Cred: c, RemoteIP: "127.0.0.1", Protocol: "HTTPS", Sender: from, Recipients: to,
			Message: []byte(message(from, to[0], "s", "body\r\n"))}
	}

	id, err := te.srv.Submit(ctx, sub(app, "shop@example.com", "a@example.net", "b@example.net"))
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	m, err := te.st.QueueMessage(ctx, id)
	if err != nil {
		t.Fatalf("the queued message %s: %v", id, err)
	}
	data, err := te.st.MessageData(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if m.Credential != "app" || len(m.Recipients) != 2 || !strings.HasPrefix(string(data), "Received: from api ([127.0.0.1])") ||
		!strings.Contains(string(data), "(Sesame) with HTTPS id "+id) {
		t.Errorf("queued %+v:\n%s", m, data)
	}
	verify(t, te, data)

	sandboxed := cred("sandboxed", func(c *store.Credential) { c.Sandbox = true })
	small := cred("small", func(c *store.Credential) { c.DailyQuota = 1 })
	cred("paused", func(c *store.Credential) {})
	te.st.SetPaused(ctx, "paused", "bounce rate 11% is over 10%", now)
	paused, _ := te.st.Credential(ctx, "paused")
	if _, err := te.srv.Submit(ctx, sub(small, "shop@example.com", "a@example.net")); err != nil {
		t.Fatal(err)
	}
	bad := sub(app, "shop@example.com", "a@example.net")
	bad.Message = []byte("From: shop@example.com\nTo: a@example.net\n\nbare LF\n")
	tooMany := sub(app, "shop@example.com", "1@example.net", "2@example.net", "3@example.net", "4@example.net", "5@example.net", "6@example.net")
	headerFrom := sub(app, "shop@example.com", "a@example.net")
	headerFrom.Message = []byte(message("a@nowhere.example", "a@example.net", "s", "b\r\n"))
	for _, tc := range []struct {
		name   string
		sub    Submission
		reason string
		reply  string
	}{
		{"unverified sender", sub(app, "a@nowhere.example", "a@example.net"), ReasonNotVerified, "Email address is not verified"},
		{"unverified From field", headerFrom, ReasonNotVerified, "a@nowhere.example"},
		{"sandbox", sub(sandboxed, "shop@example.com", "someone@example.net"), ReasonSandbox, "is in the sandbox"},
		{"paused", sub(paused, "shop@example.com", "a@example.net"), ReasonPaused, "Sending paused"},
		{"daily quota", sub(small, "shop@example.com", "b@example.net"), ReasonQuotaDaily, "Daily message quota exceeded"},
		{"bare LF", bad, ReasonBadMessage, "bare LF"},
		{"bad recipient", sub(app, "shop@example.com", "not an address"), ReasonBadAddress, ""},
		{"too many recipients", tooMany, ReasonBadAddress, "Too many recipients"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := te.srv.Submit(ctx, tc.sub)
			var r *Refusal
			if !errors.As(err, &r) {
				t.Fatalf("Submit = %q, %v; want a *Refusal", id, err)
			}
			if r.Reason != tc.reason || !strings.Contains(r.Reply.Message, tc.reply) {
				t.Errorf("refused for %s: %d %s; want %s, saying %q", r.Reason, r.Reply.Code, r.Reply.Message, tc.reason, tc.reply)
			}
		})
	}
}
