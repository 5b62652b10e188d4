package identity

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/mail"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sesame-mail/sesame/store"
	"github.com/sesame-mail/sesame/testkit"
)

var linkRE = regexp.MustCompile(`https://relay\.example\.net/verify/([A-Za-z0-9_-]+)`)

type addressSetup struct {
	clock *testkit.Clock
	log   *testkit.Buffer
	st    *store.SQLite
	dir   string
	av    *AddressVerifier
}

func newAddressSetup(t *testing.T) *addressSetup {
	t.Helper()
	s := &addressSetup{clock: testkit.NewClock(t), log: &testkit.Buffer{}, dir: t.TempDir()}
	var err error
	if s.st, err = store.OpenSQLite(filepath.Join(s.dir, "sesame.db")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.st.Close() })
	cfg := Config{Hostname: testHost, PublicURL: "https://relay.example.net/", Now: s.clock.Now}
	cfg.Logger = testConfig(&testkit.Zone{}, s.clock, s.log).Logger
	s.av = NewAddressVerifier(cfg, s.st, s.st)
	return s
}

// queued returns the queued messages to addr, oldest first, with their bytes.
func (s *addressSetup) queued(t *testing.T, addr string) ([]store.QueueEntry, [][]byte) {
	t.Helper()
	entries, err := s.st.QueueMessages(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []store.QueueEntry
	var data [][]byte
	for _, e := range entries {
		if len(e.Recipients) == 1 && e.Recipients[0].Address == addr {
			b, err := s.st.MessageData(context.Background(), e.ID)
			if err != nil {
				t.Fatal(err)
			}
			out, data = append(out, e), append(data, b)
		}
	}
	return out, data
}

func TestAddressAdd(t *testing.T) {
	s := newAddressSetup(t)
	ctx := context.Background()
	a, link, err := s.av.Add(ctx, "Alice.Smith@Example.COM")
	if err != nil {
		t.Fatal(err)
	}
	const addr = "alice.smith@example.com"
	if a.Address != addr || a.Status != store.IdentityPending || !a.TokenExpires.Equal(s.clock.Now().Add(24*time.Hour)) {
		t.Errorf("Add returned %+v", a)
	}
	m := linkRE.FindStringSubmatch(link)
	if m == nil || m[0] != link {
		t.Fatalf("link %q is not PublicURL/verify/TOKEN", link)
	}
	token := m[1]
	sum := sha256.Sum256([]byte(token))
	stored, err := s.st.Address(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	if stored.TokenHash != hex.EncodeToString(sum[:]) || stored.Status != store.IdentityPending || a.TokenHash != stored.TokenHash {
		t.Errorf("stored %+v, want pending with the token's SHA-256", stored)
	}
	// The token itself is nowhere in the database files.
	files, _ := filepath.Glob(filepath.Join(s.dir, "sesame.db*"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Count(b, []byte(token)) != bytes.Count(b, []byte("/verify/"+token)) {
			t.Errorf("%s holds the token in clear outside the queued message", f)
		}
	}
	if strings.Contains(s.log.String(), token) {
		t.Errorf("the token was logged:\n%s", s.log)
	}

	entries, data := s.queued(t, addr)
	if len(entries) != 1 {
		t.Fatalf("%d messages queued to %s, want 1", len(entries), addr)
	}
	e, raw := entries[0], data[0]
	if e.Sender != "" {
		t.Errorf("envelope sender %q, want the null sender", e.Sender)
	}
	if bytes.Contains(bytes.ReplaceAll(raw, []byte("\r\n"), nil), []byte("\n")) || bytes.Contains(bytes.ReplaceAll(raw, []byte("\r\n"), nil), []byte("\r")) {
		t.Error("the message has bare LF or CR line ends")
	}
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	h := msg.Header
	if got := h.Get("From"); got != "Sesame <no-reply@relay.example.net>" {
		t.Errorf("From %q", got)
	}
	if got := h.Get("To"); !strings.Contains(got, addr) {
		t.Errorf("To %q", got)
	}
	if got := h.Get("Subject"); got != "Confirm that Sesame may send as "+addr {
		t.Errorf("Subject %q", got)
	}
	if got := h.Get("Message-ID"); got != "<"+e.ID+"@relay.example.net>" || e.MessageID != got {
		t.Errorf("Message-ID %q (queue %q), want <%s@relay.example.net>", got, e.MessageID, e.ID)
	}
	if date, err := h.Date(); err != nil || !date.Equal(s.clock.Now()) {
		t.Errorf("Date %q: %v", h.Get("Date"), err)
	}
	if h.Get("MIME-Version") != "1.0" || !strings.HasPrefix(h.Get("Content-Type"), "text/plain") {
		t.Errorf("MIME-Version %q, Content-Type %q", h.Get("MIME-Version"), h.Get("Content-Type"))
	}
	body := new(bytes.Buffer)
	body.ReadFrom(msg.Body)
	// The link's expiry, a day on, in UTC ("Sat, 28 Nov 2026 09:00 UTC").
	expires := s.clock.Now().Add(24 * time.Hour).UTC().Format("Mon, 2 Jan 2006 15:04 MST")
	for _, want := range []string{link, expires, "ignore it: nothing happens"} {
		if !strings.Contains(body.String(), want) {
			t.Errorf("body lacks %q:\n%s", want, body)
		}
	}

	got, err := s.av.Lookup(ctx, token)
	if err != nil || got.Address != addr {
		t.Fatalf("Lookup = %+v, %v", got, err)
	}
	if a, _ := s.st.Address(ctx, addr); a.Status != store.IdentityPending {
		t.Errorf("Lookup changed the status to %s", a.Status)
	}
	s.clock.Advance(time.Hour)
	got, err = s.av.Confirm(ctx, token)
	if err != nil || got.Address != addr || got.Status != store.IdentityVerified {
		t.Fatalf("Confirm = %+v, %v", got, err)
	}
	if a, _ := s.st.Address(ctx, addr); a.Status != store.IdentityVerified || !a.VerifiedAt.Equal(s.clock.Now()) || a.TokenHash != "" {
		t.Errorf("after Confirm the store has %+v", a)
	}
	// Used: gone.
	if _, err := s.av.Confirm(ctx, token); !errors.Is(err, ErrUnknownToken) {
		t.Errorf("second Confirm: %v, want ErrUnknownToken", err)
	}
	if _, err := s.av.Lookup(ctx, token); !errors.Is(err, ErrUnknownToken) {
		t.Errorf("Lookup of a used link: %v, want ErrUnknownToken", err)
	}
	// Verified already: Add says so and sends nothing.
	if _, _, err := s.av.Add(ctx, "ALICE.smith@example.com"); !errors.Is(err, ErrAlreadyVerified) || !strings.Contains(err.Error(), "verified already") {
		t.Errorf("Add of a verified address: %v", err)
	}
	if entries, _ := s.queued(t, addr); len(entries) != 1 {
		t.Errorf("%d messages queued, want still 1", len(entries))
	}
}

func TestAddressTokens(t *testing.T) {
	s := newAddressSetup(t)
	ctx := context.Background()
	for _, token := range []string{"", "x", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", strings.Repeat("A", 43) + "A", "../../etc/passwd"} {
		if _, err := s.av.Lookup(ctx, token); !errors.Is(err, ErrUnknownToken) {
			t.Errorf("Lookup(%q): %v, want ErrUnknownToken", token, err)
		}
		if _, err := s.av.Confirm(ctx, token); !errors.Is(err, ErrUnknownToken) {
			t.Errorf("Confirm(%q): %v, want ErrUnknownToken", token, err)
		}
	}

	// A second Add of a pending address: a new link, the old one dead.
	_, link1, err := s.av.Add(ctx, "bob@example.com")
	if err != nil {
		t.Fatal(err)
	}
	s.clock.Advance(time.Hour)
	_, link2, err := s.av.Add(ctx, "bob@example.com")
	if err != nil {
		t.Fatal(err)
	}
	tok1, tok2 := linkRE.FindStringSubmatch(link1)[1], linkRE.FindStringSubmatch(link2)[1]
	if tok1 == tok2 {
		t.Fatal("the second Add gave the same token")
	}
	if entries, _ := s.queued(t, "bob@example.com"); len(entries) != 2 {
		t.Errorf("%d messages queued, want 2", len(entries))
	}
	if _, err := s.av.Lookup(ctx, tok1); !errors.Is(err, ErrUnknownToken) {
		t.Errorf("old link after a new Add: %v, want ErrUnknownToken", err)
	}
	// Expiry counts from the new link.
	s.clock.Advance(24*time.Hour - time.Second)
	if _, err := s.av.Lookup(ctx, tok2); err != nil {
		t.Errorf("new link a second before it expires: %v", err)
	}
	s.clock.Advance(time.Second)
	a, err := s.av.Lookup(ctx, tok2)
	if !errors.Is(err, ErrTokenExpired) || a.Address != "bob@example.com" || !strings.Contains(err.Error(), "sesame address add bob@example.com") {
		t.Errorf("Lookup of an expired link = %+v, %v; want ErrTokenExpired with the address", a, err)
	}
	if _, err := s.av.Confirm(ctx, tok2); !errors.Is(err, ErrTokenExpired) {
		t.Errorf("Confirm of an expired link: %v", err)
	}
	if a, _ := s.st.Address(ctx, "bob@example.com"); a.Status != store.IdentityPending {
		t.Errorf("an expired confirmation left %s", a.Status)
	}
	// A fresh link works.
	_, link3, err := s.av.Add(ctx, "bob@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.av.Confirm(ctx, linkRE.FindStringSubmatch(link3)[1]); err != nil {
		t.Errorf("Confirm of a fresh link: %v", err)
	}

	// A deleted address's link is unknown.
	_, link4, err := s.av.Add(ctx, "carol@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.st.DeleteAddress(ctx, "carol@example.com"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.av.Confirm(ctx, linkRE.FindStringSubmatch(link4)[1]); !errors.Is(err, ErrUnknownToken) {
		t.Errorf("Confirm for a deleted address: %v", err)
	}
}

func TestAddressAddInvalid(t *testing.T) {
	s := newAddressSetup(t)
	for _, bad := range []string{"", "alice", "@example.com", "alice@", "alice@localhost", "a b@example.com", "alice@exa mple.com",
		`"a"@example.com`, "alice@example..com", strings.Repeat("a", 65) + "@example.com", "a<b@example.com"} {
		if _, _, err := s.av.Add(context.Background(), bad); err == nil || !strings.Contains(err.Error(), "user@example.com") {
			t.Errorf("Add(%q): %v, want an error that shows the expected form", bad, err)
		}
	}
	// An internationalized domain is stored as its A-label.
	a, _, err := s.av.Add(context.Background(), "Jörg@Bücher.example")
	if err != nil {
		t.Fatal(err)
	}
	if a.Address != "jörg@xn--bcher-kva.example" {
		t.Errorf("stored as %q", a.Address)
	}
}

// failingQueue refuses every message.
type failingQueue struct{}

func (failingQueue) Enqueue(context.Context, *store.Message) error { return errors.New("disk full") }

func TestAddressAddQueueFails(t *testing.T) {
	s := newAddressSetup(t)
	av := NewAddressVerifier(Config{Hostname: testHost, Now: s.clock.Now}, s.st, failingQueue{})
	_, _, err := av.Add(context.Background(), "dave@example.com")
	if err == nil || !strings.Contains(err.Error(), "disk full") || !strings.Contains(err.Error(), "run sesame address add dave@example.com again") {
		t.Errorf("Add with a failing queue: %v", err)
	}
}
