package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sesame-mail/sesame/config"
	"github.com/sesame-mail/sesame/store"
)

// openCLIStore opens the store of cfg for a test to fill; close it before
// running commands that write.
func openCLIStore(t *testing.T, cfg *config.Config) *store.SQLite {
	t.Helper()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenSQLite(filepath.Join(cfg.DataDir, "sesame.db"))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// evil is what a stranger puts in a report's fields: a window title, a
// screen clear, a fake prompt on a new line, a right-to-left override.
const evil = "\x1b]0;pwned\x07\x1b[2J\r\nroot# \u202eevil\u009b31m"

// noControls fails when out holds a control character other than a
// newline, or a bidirectional override.
func noControls(t *testing.T, what, out string) {
	t.Helper()
	for i, r := range out {
		if (r < 0x20 && r != '\n') || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == 0x202e {
			t.Errorf("%s printed the control character %U at byte %d:\n%q", what, r, i, out)
			return
		}
	}
}

// Every table and text that shows strings a stranger chose (report fields,
// remote replies, addresses) escapes their control characters; only
// `inbound show --raw` prints the bytes as they are.
func TestCLIEscapesStrangersText(t *testing.T) {
	cfgPath, cfg := writeConfig(t, t.TempDir(), "")
	st := openCLIStore(t, cfg)
	ctx := context.Background()
	now := time.Now()
	raw := []byte("From: x@example.org\r\nSubject: " + evil + "\r\n\r\nbody " + evil + "\r\n")
	id, err := st.RecordInbound(ctx, store.InboundMessage{ReceivedAt: now, Client: "192.0.2.7", MailFrom: "a" + evil + "@example.org",
		RcptTo: "fbl@example.com", Kind: "dsn", Status: store.InboundUnmatched, Detail: "x" + evil + "@example.net: no message of ours found",
		Size: int64(len(raw)), Raw: raw}, nil, nil, store.InboundLimit{})
	if err != nil {
		t.Fatal(err)
	}
	// A complaint not believed, kept in part: its verification names the
	// stranger's From address.
	uid, err := st.RecordInbound(ctx, store.InboundMessage{ReceivedAt: now, Client: "192.0.2.8", RcptTo: "fbl@example.com",
		Kind: "arf", Status: store.InboundUnverified, Detail: "complaint (abuse) not recorded",
		Verification: "From <f" + evil + "@example.org> is not a feedback reporter", Size: 1 << 20, Raw: raw}, nil, nil, store.InboundLimit{})
	if err != nil {
		t.Fatal(err)
	}
	ev := store.Event{At: now, Type: store.EventBounce, Credential: "app", QueueID: "Q1", Recipient: "r" + evil + "@example.net",
		RemoteMTA: "mx" + evil, Reply: "550 " + evil}
	if err := st.RecordEvent(ctx, ev); err != nil {
		t.Fatal(err)
	}
	if err := st.Suppress(ctx, store.Suppression{Address: "s" + evil + "@example.net", Reason: store.SuppressBounce,
		Detail: "550 " + evil, CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	m := &store.Message{Credential: "app", Sender: "shop@example.com", Recipients: []string{"q@example.net"},
		MessageID: "<m" + evil + "@example.com>", ReceivedAt: now, Data: []byte("Subject: " + evil + "\r\n\r\nbody\r\n")}
	if err := st.Enqueue(ctx, m); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Claim(ctx, now, 1, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := st.Complete(ctx, store.Report{QueueID: m.ID, Outcomes: []store.Outcome{{Recipient: "q@example.net",
		State: store.StateDeferred, NextAttempt: now.Add(time.Hour), Reply: "451 " + evil}}}); err != nil {
		t.Fatal(err)
	}
	st.Close()

	ids := strconv.FormatInt(id, 10)
	for _, args := range [][]string{
		{"inbound", "list"},
		{"inbound", "show", ids},
		{"inbound", "show", strconv.FormatInt(uid, 10)},
		{"events", "--type", "bounce"},
		{"suppression", "list"},
		{"suppression", "show", "s" + evil + "@example.net"},
		{"queue", "list"},
		{"queue", "show", m.ID},
	} {
		out, errOut, code := sesame(t, append(args, "--config", cfgPath)...)
		what := "sesame " + strings.Join(args[:2], " ")
		if code != 0 && args[1] != "show" {
			t.Errorf("%s: exit %d: %s", what, code, errOut)
			continue
		}
		noControls(t, what, out)
		noControls(t, what+" (stderr)", errOut)
		// A message's own line breaks stay line breaks in a show;
		// everything else is escaped.
		if code == 0 && (!strings.Contains(out, `\x1b]0;pwned\x07\x1b[2J`) || !strings.Contains(out, `\u202eevil\u009b31m`)) {
			t.Errorf("%s does not show the escaped text:\n%s", what, out)
		}
	}
	out, _, _ := sesame(t, "inbound", "list", "--config", cfgPath)
	if !strings.Contains(out, "192.0.2.7") || !strings.Contains(out, "unmatched") {
		t.Errorf("inbound list lacks the client or the status:\n%s", out)
	}
	// The unverified one: its verdict and reason, and that it was cut.
	if !strings.Contains(out, "VERIFIED") || !strings.Contains(out, "unverified  1.0 MiB (cut)") ||
		!strings.Contains(out, `From <f\x1b]0;pwned`) {
		t.Errorf("inbound list lacks the verdict, the reason or the cut:\n%s", out)
	}
	out, _, _ = sesame(t, "inbound", "show", strconv.FormatInt(uid, 10), "--config", cfgPath)
	if !strings.Contains(out, "Verified: unverified: From <f\\x1b]0;pwned") || !strings.Contains(out, "only the first") {
		t.Errorf("inbound show lacks the verdict or the cut:\n%s", out)
	}
	if out, _, code := sesame(t, "inbound", "show", ids, "--raw", "--config", cfgPath); code != 0 || out != string(raw) {
		t.Errorf("inbound show --raw: exit %d, printed %q, want the stored bytes %q", code, out, raw)
	}
	// JSON is escaped too, and keeps the text whole.
	out, _, _ = sesame(t, "inbound", "list", "--json", "--config", cfgPath)
	noControls(t, "inbound list --json", out)
	var list []inboundJSON
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) != 2 || list[1].MailFrom != "a"+evil+"@example.org" {
		t.Fatalf("inbound list --json: %v %+v", err, list)
	}
	if u := list[0]; u.Status != store.InboundUnverified || u.Verified || u.Verification != "From <f"+evil+"@example.org> is not a feedback reporter" ||
		!u.Truncated || u.Size != 1<<20 {
		t.Errorf("inbound list --json, the unverified message: %+v", u)
	}
}

func TestInboundDeleteAndPurge(t *testing.T) {
	cfgPath, cfg := writeConfig(t, t.TempDir(), "")
	st := openCLIStore(t, cfg)
	ctx := context.Background()
	now := time.Now()
	add := func(client, status string, age time.Duration, size int) int64 {
		raw := []byte(strings.Repeat("x", min(size, 100)))
		id, err := st.RecordInbound(ctx, store.InboundMessage{ReceivedAt: now.Add(-age), Client: client, RcptTo: "fbl@example.com",
			Status: status, Size: int64(size), Raw: raw}, nil, nil, store.InboundLimit{})
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	first := add("192.0.2.1", store.InboundUnparsed, 0, 10<<20)
	add("192.0.2.1", store.InboundUnparsed, 0, 50)
	add("192.0.2.2", store.InboundUnparsed, 0, 50)
	add("192.0.2.2", store.InboundProcessed, 0, 50)
	add("192.0.2.3", store.InboundProcessed, 72*time.Hour, 50)
	add("2001:db8::1", store.InboundUnmatched, 0, 50)
	add("192.0.2.4", store.InboundUnverified, 0, 50)
	st.Close()

	count := func() int {
		t.Helper()
		out, _, _ := sesame(t, "inbound", "list", "--json", "--config", cfgPath)
		var list []inboundJSON
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			t.Fatal(err)
		}
		return len(list)
	}
	var list []inboundJSON
	out, _, _ := sesame(t, "inbound", "list", "--json", "--config", cfgPath)
	json.Unmarshal([]byte(out), &list)
	if got := list[len(list)-1]; got.ID != first || !got.Truncated || got.Size != 10<<20 || got.Client != "192.0.2.1" || got.KeptBytes == 0 {
		t.Errorf("inbound list --json, the first message: %+v", got)
	}
	if out, _, _ := sesame(t, "inbound", "list", "--config", cfgPath); !strings.Contains(out, "10 MiB (cut)") {
		t.Errorf("inbound list does not say the first message was cut:\n%s", out)
	}

	if out, errOut, code := sesame(t, "inbound", "delete", strconv.FormatInt(first, 10), "--config", cfgPath); code != 0 ||
		!strings.Contains(out, "Deleted inbound message") {
		t.Fatalf("inbound delete: %d %q %q", code, out, errOut)
	}
	if _, errOut, code := sesame(t, "inbound", "delete", strconv.FormatInt(first, 10), "--config", cfgPath); code != 1 ||
		!strings.Contains(errOut, "no inbound message") {
		t.Errorf("inbound delete of a deleted message: %d %q", code, errOut)
	}
	if count() != 6 {
		t.Fatalf("%d messages after a delete, want 6", count())
	}

	for _, tt := range []struct {
		args []string
		want string // in stderr
	}{
		{nil, "say what to delete"},
		{[]string{"--before", "soon"}, `--before "soon"`},
		{[]string{"--status", "gone"}, `--status "gone"`},
		{[]string{"--client", "example.org"}, `--client "example.org"`},
		{[]string{"--unparsed", "--status", "processed"}, "give one"},
	} {
		if _, errOut, code := sesame(t, append([]string{"inbound", "purge", "--config", cfgPath}, tt.args...)...); code != 1 || !strings.Contains(errOut, tt.want) {
			t.Errorf("inbound purge %v: exit %d %q, want 1 and %q", tt.args, code, errOut, tt.want)
		}
	}
	if count() != 6 {
		t.Fatalf("refused purges deleted messages: %d left", count())
	}
	purge := func(want string, args ...string) {
		t.Helper()
		out, errOut, code := sesame(t, append([]string{"inbound", "purge", "--config", cfgPath}, args...)...)
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("inbound purge %v: exit %d %q %q, want %q", args, code, out, errOut, want)
		}
	}
	purge("Deleted 1 inbound message(s)", "--before", "24h")                                          // 192.0.2.3's, 3 days old
	purge("Deleted 1 inbound message(s)", "--unparsed", "--client", "192.0.2.2")                      // not its processed one
	purge("Deleted 1 inbound message(s)", "--client", "2001:DB8:0::1")                                // as list shows it
	purge("Deleted 0 inbound message(s)", "--status", "ignored")                                      // none
	purge("Deleted 1 inbound message(s)", "--status", "unverified")                                   // 192.0.2.4's
	purge("Deleted 1 inbound message(s)", "--status", "unparsed", "--before", "2099-01-01T00:00:00Z") // 192.0.2.1's
	if count() != 1 {
		t.Errorf("%d messages left, want 1 (192.0.2.2's processed)", count())
	}
	purge("Deleted 1 inbound message(s)", "--all")
	if count() != 0 {
		t.Errorf("%d messages left after --all", count())
	}
}
