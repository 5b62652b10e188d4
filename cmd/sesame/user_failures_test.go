package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sesame-mail/sesame/store"
)

// user show reports the failed logins the server recorded for the
// credential: none, an attack going on with networks blocked, or an old one.
func TestUserShowFailedLogins(t *testing.T) {
	cfgPath, cfg := writeConfig(t, t.TempDir(), "")
	out, errOut, code := sesame(t, "user", "create", "shop", "--config", cfgPath, "--json")
	if code != 0 {
		t.Fatalf("create: %s", errOut)
	}
	var created credentialsOutput
	json.Unmarshal([]byte(out), &created)
	if out, _, _ := sesame(t, "user", "show", "shop", "--config", cfgPath); !strings.Contains(out, "failed logins:  none\n") {
		t.Fatalf("before any failure:\n%s", out)
	}
	record := func(f store.LoginFailures) {
		t.Helper()
		st, err := store.OpenSQLite(filepath.Join(cfg.DataDir, "sesame.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if err := st.RecordLoginFailures(context.Background(), created.Username, f); err != nil {
			t.Fatal(err)
		}
	}
	// The wall clock, as the command reads it.
	now := time.Now().UTC().Truncate(time.Second)
	record(store.LoginFailures{First: now.Add(-time.Minute), Last: now, Failures: 25, Networks: 4, LastNetwork: "192.0.2.7",
		BlockedNetworks: 3, BlockedUntil: now.Add(10 * time.Minute), UpdatedAt: now})
	out, _, _ = sesame(t, "user", "show", "shop", "--config", cfgPath)
	for _, want := range []string{"failed logins:  25 from 4 networks between " + now.Add(-time.Minute).Format(time.DateTime) +
		" and " + now.Format(time.DateTime) + ", the last from 192.0.2.7",
		"3 networks refused as this username (no password check) until " + now.Add(10*time.Minute).Format(time.DateTime)} {
		if !strings.Contains(out, want) {
			t.Errorf("user show lacks %q:\n%s", want, out)
		}
	}
	var shown userShowOutput
	out, _, _ = sesame(t, "user", "show", "shop", "--config", cfgPath, "--json")
	if err := json.Unmarshal([]byte(out), &shown); err != nil {
		t.Fatal(err)
	}
	if f := shown.FailedLogins; !f.Recent || f.Failures != 25 || f.Networks != 4 || !f.Blocked || f.BlockedNetworks != 3 ||
		f.Last == nil || !f.Last.Equal(now) || f.LastNetwork != "192.0.2.7" {
		t.Errorf("user show --json failed_logins %+v", f)
	}
	// Past the window (15 minutes by default): nothing recent.
	old := now.Add(-time.Hour)
	record(store.LoginFailures{First: old, Last: old, Failures: 2, Networks: 1, LastNetwork: "192.0.2.8", UpdatedAt: old})
	out, _, _ = sesame(t, "user", "show", "shop", "--config", cfgPath)
	if want := "failed logins:  none in the last 15m0s (before: 2 from 1 network between"; !strings.Contains(out, want) {
		t.Errorf("user show lacks %q:\n%s", want, out)
	}
}
