package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sesame-mail/sesame/dkim"
	"github.com/sesame-mail/sesame/store"
)

// sesame domain rotate: a pending key with a new selector, its record
// printed; refusals say why.
func TestDomainRotate(t *testing.T) {
	cfgPath, cfg := writeConfig(t, t.TempDir(), "")
	var added domainOutput
	out, errOut, code := sesame(t, "domain", "add", "example.com", "--config", cfgPath, "--json")
	if code != 0 || json.Unmarshal([]byte(out), &added) != nil {
		t.Fatalf("add: %d %s %s", code, out, errOut)
	}
	oldName := added.Records[0].Name

	out, errOut, code = sesame(t, "domain", "rotate", "example.com", "--bits", "3072", "--config", cfgPath, "--json")
	if code != 0 {
		t.Fatalf("rotate: %d %s", code, errOut)
	}
	var rotated rotateOutput
	if err := json.Unmarshal([]byte(out), &rotated); err != nil {
		t.Fatalf("rotate --json printed %q: %v", out, err)
	}
	if rotated.Domain != "example.com" || rotated.Record.Name != rotated.Selector+"._domainkey.example.com" ||
		rotated.Record.Name == oldName || !strings.HasPrefix(rotated.Record.Value, "v=DKIM1; k=rsa; p=") || rotated.Record.Required {
		t.Fatalf("rotate --json: %+v (the current record is %s)", rotated, oldName)
	}
	st, err := store.OpenSQLite(filepath.Join(cfg.DataDir, "sesame.db"))
	if err != nil {
		t.Fatal(err)
	}
	d, err := st.Domain(context.Background(), "example.com")
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]string{}
	for _, k := range d.Keys {
		states[k.Selector] = k.State
		if k.Selector == rotated.Selector && dkim.KeySize(k) != 3072 {
			t.Errorf("the new key has %d bits, want 3072 (--bits)", dkim.KeySize(k))
		}
	}
	if len(states) != 2 || states[rotated.Selector] != store.KeyPending || states[strings.TrimSuffix(oldName, "._domainkey.example.com")] != store.KeyActive {
		t.Fatalf("key states %v, want the old one active and the new one pending", states)
	}

	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"example.com"}, "under way"},
		{[]string{"example.com", "--alg", "ed25519"}, "has no ed25519 key that signs"},
		{[]string{"example.com", "--alg", "dsa"}, `--alg "dsa": expected rsa or ed25519`},
		{[]string{"example.com", "--bits", "1024"}, `--bits "1024": expected 2048, 3072 or 4096`},
		{[]string{"nowhere.example"}, "no domain nowhere.example"},
	} {
		_, errOut, code := sesame(t, append(append([]string{"domain", "rotate"}, tt.args...), "--config", cfgPath)...)
		if code != 1 || !strings.Contains(errOut, tt.want) {
			t.Errorf("rotate %v: %d %q, want an error with %q", tt.args, code, errOut, tt.want)
		}
	}

	out, _, _ = sesame(t, "domain", "list", "--config", cfgPath)
	if !strings.Contains(out, rotated.Selector+" (new: waiting for its record)") {
		t.Errorf("list does not show the rotation:\n%s", out)
	}
	out, _, _ = sesame(t, "domain", "show", "example.com", "--config", cfgPath)
	if !strings.Contains(out, "the new key of a rotation") {
		t.Errorf("show does not explain the new record:\n%s", out)
	}

	sesame(t, "domain", "add", "example.org", "--config", cfgPath)
	out, errOut, code = sesame(t, "domain", "rotate", "example.org", "--config", cfgPath)
	if code != 0 || !strings.Contains(out, "Publish this DNS record, next to the current one") ||
		!strings.Contains(out, "must stay published for 7 days") {
		t.Errorf("rotate: %d %q %q", code, out, errOut)
	}
}
