package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sesame-mail/sesame/events"
	"github.com/sesame-mail/sesame/store"
)

// A reject event that sums repeated refusals shows its count in `sesame
// events` (text and JSON), and `sesame stats` counts the refusals, not the
// events.
func TestSummedRejectsShown(t *testing.T) {
	cfgPath, cfg := writeConfig(t, t.TempDir(), "[relay]\n")
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenSQLite(filepath.Join(cfg.DataDir, "sesame.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	reply := "554 5.7.1 Message rejected: Email address is not verified. The following identities failed the check: x@unverified.example"
	for _, n := range []int{1, 499} {
		if err := st.RecordEvent(context.Background(), store.Event{At: time.Now(), Type: store.EventReject, Credential: "shop",
			Reply: reply, Count: n}); err != nil {
			t.Fatal(err)
		}
	}

	out, errOut, code := sesame(t, "events", "--config", cfgPath, "--type", "reject")
	if code != 0 || strings.Count(out, "reject (499 times)") != 1 || strings.Count(out, "reject ") != 2 {
		t.Errorf("sesame events: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = sesame(t, "events", "--config", cfgPath, "--json")
	var evs []events.Payload
	if err := json.Unmarshal([]byte(out), &evs); code != 0 || err != nil || len(evs) != 2 || evs[0].Count != 1 || evs[1].Count != 499 {
		t.Errorf("sesame events --json: exit %d %v\n%s%s", code, err, out, errOut)
	}
	out, errOut, code = sesame(t, "stats", "--config", cfgPath, "--json")
	var got statsJSON
	if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil || got.Rejects != 500 {
		t.Errorf("sesame stats --json: rejects %d, want 500 (exit %d %v)\n%s%s", got.Rejects, code, err, out, errOut)
	}
}
