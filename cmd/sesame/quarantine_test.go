package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sesame-mail/sesame/store"
)

// A quarantined message (its stored bytes unusable) can be listed, shown,
// retried and deleted with a bounce: every command the relay's Error line
// tells the operator to run works on it.
func TestQueueQuarantined(t *testing.T) {
	cfgPath, cfg := writeConfig(t, t.TempDir(), "")
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(cfg.DataDir, "sesame.db")
	st, err := store.OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	m := &store.Message{Credential: "app", Sender: "shop@example.com", Recipients: []string{"a@example.net"},
		MessageID: "<q@example.com>", ReceivedAt: time.Now(), Data: []byte("Subject: hi\r\n\r\nbody\r\n")}
	if err := st.Enqueue(ctx, m); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE messages SET body = X'' WHERE id = ?`, m.ID); err != nil {
		t.Fatal(err)
	}
	// What the relay records (relay.TestFaultCorruptMessageQuarantined).
	if _, err := st.Claim(ctx, time.Now(), 1, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := st.Complete(ctx, store.Report{QueueID: m.ID, Outcomes: []store.Outcome{{Recipient: "a@example.net",
		State: store.StateQuarantined, Reply: "quarantined: corrupt; see sesame queue show " + m.ID}}}); err != nil {
		t.Fatal(err)
	}
	st.Close()

	if out, _, code := sesame(t, "queue", "list", "--config", cfgPath); code != 0 || !strings.Contains(out, "quarantined a@example.net  quarantined: corrupt") {
		t.Fatalf("queue list: %d\n%s", code, out)
	}
	out, errOut, code := sesame(t, "queue", "show", m.ID, "--config", cfgPath)
	if code != 0 || !strings.Contains(out, "Message-ID: <q@example.com>") || !strings.Contains(out, "stored message is corrupt") ||
		!strings.Contains(out, "sesame queue delete "+m.ID+" --bounce") {
		t.Fatalf("queue show: %d %s\n%s", code, errOut, out)
	}
	out, _, _ = sesame(t, "queue", "show", m.ID, "--config", cfgPath, "--json")
	var shown struct{ Header, Corrupt string }
	if err := json.Unmarshal([]byte(out), &shown); err != nil || shown.Header != "" || !strings.Contains(shown.Corrupt, "0 bytes stored, 21 enqueued") {
		t.Fatalf("queue show --json: %v\n%s", err, out)
	}
	if out, _, code := sesame(t, "queue", "retry", m.ID, "--config", cfgPath, "--json"); code != 0 || out != "{\"recipients\":1}\n" {
		t.Fatalf("queue retry: %d %q", code, out)
	}
	if out, _, _ := sesame(t, "queue", "list", "--config", cfgPath); !strings.Contains(out, "deferred  a@example.net") {
		t.Fatalf("after retry, queue list:\n%s", out)
	}
	if out, errOut, code := sesame(t, "queue", "delete", m.ID, "--bounce", "--config", cfgPath); code != 0 || !strings.Contains(out, "bounce") {
		t.Fatalf("queue delete --bounce: %d %q %q", code, out, errOut)
	}
	out, _, _ = sesame(t, "queue", "list", "--config", cfgPath, "--json")
	var after []struct {
		ID, Sender string
		Recipients []struct{ Address string } `json:"recipients"`
	}
	if err := json.Unmarshal([]byte(out), &after); err != nil || len(after) != 1 || after[0].ID == m.ID || after[0].Sender != "" ||
		after[0].Recipients[0].Address != "shop@example.com" {
		t.Fatalf("after delete --bounce, want only the DSN to the sender queued: %v\n%s", err, out)
	}
}
