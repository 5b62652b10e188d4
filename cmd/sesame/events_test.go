package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/sesame-mail/sesame/events"
	"github.com/sesame-mail/sesame/store"
)

// A webhook consumer and a reader of `sesame events --json` get one event in
// one shape: the same keys with the same values.
func TestEventShapeWebhookAndCommand(t *testing.T) {
	cfgPath, cfg := writeConfig(t, t.TempDir(), "[relay]\n")
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenSQLite(filepath.Join(cfg.DataDir, "sesame.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Every field set, bounce_type too, and a Message-ID whose <> a JSON
	// encoder may escape.
	ev := store.Event{At: time.Now(), Type: store.EventBounce, Credential: "shop", QueueID: "FXVXWHLLXC3QA53K",
		MessageID: "<1@example.com>", Recipient: "gone@example.net", RemoteMTA: "mx.example.net",
		Reply: "550 5.1.1 no such user", BounceType: store.BounceHard}
	if err := st.RecordEvent(ctx, ev); err != nil {
		t.Fatal(err)
	}

	bodies := make(chan []byte, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		select {
		case bodies <- b:
		default:
		}
	}))
	defer srv.Close()
	ep := events.Endpoint{URL: srv.URL, Secret: "s3cret"}
	// A new endpoint starts after the last event; this one starts before it.
	if err := st.SaveWebhookCursor(ctx, store.WebhookCursor{Endpoint: ep.Key()}); err != nil {
		t.Fatal(err)
	}
	d := events.NewDispatcher(st, []events.Endpoint{ep}, events.Options{Poll: 10 * time.Millisecond})
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()
	var body []byte
	select {
	case body = <-bodies:
	case <-time.After(30 * time.Second):
		t.Fatal("the webhook got no event within 30 s")
	}
	cancel()
	<-done

	out, errOut, code := sesame(t, "events", "--config", cfgPath, "--json")
	if code != 0 {
		t.Fatalf("sesame events --json: exit %d: %s", code, errOut)
	}
	var listed []map[string]any
	if err := json.Unmarshal([]byte(out), &listed); err != nil || len(listed) != 1 {
		t.Fatalf("sesame events --json: %v\n%s", err, out)
	}
	var posted map[string]any
	if err := json.Unmarshal(body, &posted); err != nil {
		t.Fatalf("webhook body: %v\n%s", err, body)
	}
	if !reflect.DeepEqual(listed[0], posted) {
		t.Errorf("one event, two shapes:\nwebhook:         %s\nsesame events:   %s", body, out)
	}
	// Byte for byte, even: the same encoding, Message-ID unescaped.
	var raw []json.RawMessage
	if err := json.Unmarshal([]byte(out), &raw); err != nil || string(raw[0]) != string(body) {
		t.Errorf("sesame events --json writes the event otherwise than the webhook:\n%s\n%s", raw[0], body)
	}
	if _, ok := posted["time"]; !ok || len(posted) != 11 {
		t.Errorf("webhook body lacks keys (want the 11 of docs/operations.md): %s", body)
	}
}

// stats counts complaints and computes the complaint rate over deliveries,
// as the README says.
func TestStatsCountsComplaints(t *testing.T) {
	cfgPath, cfg := writeConfig(t, t.TempDir(), "[relay]\n")
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenSQLite(filepath.Join(cfg.DataDir, "sesame.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Now()
	for _, typ := range []string{store.EventDelivery, store.EventDelivery, store.EventDelivery, store.EventDelivery, store.EventComplaint} {
		if err := st.RecordEvent(context.Background(), store.Event{At: now, Type: typ, Credential: "shop", Recipient: "a@example.net"}); err != nil {
			t.Fatal(err)
		}
	}
	out, errOut, code := sesame(t, "stats", "--config", cfgPath, "--json")
	var got statsJSON
	if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil {
		t.Fatalf("stats --json: exit %d %v\n%s%s", code, err, out, errOut)
	}
	if got.Deliveries != 4 || got.Complaints != 1 || got.ComplaintRate != 0.25 {
		t.Errorf("stats: %d deliveries, %d complaints, complaint rate %v; want 4, 1, 0.25", got.Deliveries, got.Complaints, got.ComplaintRate)
	}
}
