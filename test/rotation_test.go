package test

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestDKIMRotationEndToEnd: `sesame domain rotate` while serve runs. Mail is
// signed with the old key until the new record is published; serve's
// verifier then finds it and switches, and the next message is signed with
// the new selector. Every message verifies at the sink (dkimpy), and the
// steps are dkim_rotation events.
func TestDKIMRotationEndToEnd(t *testing.T) {
	i := newInstance(t)
	// The verifier wakes every 2 s (a verified domain's check) and looks
	// for a waiting rotation's record every second.
	i.configure(map[string]any{"identity.verified_check_interval": "2s", "identity.pending_check_interval": "1s"})
	user := i.standard("example.com", "app")
	oldSel := strings.TrimSuffix(i.dnsRecords()[0].Name, "._domainkey.example.com")

	send := func(t *testing.T, wantSel string) {
		t.Helper()
		token := newToken()
		o := outgoing{user: user, envFrom: "news@example.com", from: "news@example.com", to: []string{"reader@example.net"}, token: token}
		wantAccepted(t, "submission", submit(t, i.smtpAddr, o))
		msg := i.expectDelivered(t, token, "example.com")
		if !bytes.Contains(msg.Data, []byte("s="+wantSel+";")) {
			t.Errorf("message not signed with selector %s:\n%s", wantSel, msg.Data[:bytes.Index(msg.Data, []byte("\r\n\r\n"))])
		}
	}
	send(t, oldSel)

	var rotated struct {
		Selector string    `json:"selector"`
		Record   dnsRecord `json:"record"`
	}
	i.adminJSON(t, &rotated, "domain", "rotate", "example.com")
	if rotated.Selector == "" || rotated.Selector == oldSel || rotated.Record.Required {
		t.Fatalf("domain rotate --json: %+v", rotated)
	}
	send(t, oldSel) // not published yet: the old key signs

	i.mu.Lock()
	i.records = append(i.records, rotated.Record)
	i.mu.Unlock()
	i.zone.SetTXT(rotated.Record.Name, rotated.Record.Value)
	deadline := time.Now().Add(30 * time.Second)
	for {
		var evs []struct {
			Reply string `json:"reply"`
		}
		i.adminJSON(t, &evs, "events", "--type", "dkim_rotation")
		if len(evs) >= 2 {
			if !strings.Contains(evs[0].Reply, "started (sesame domain rotate)") ||
				!strings.Contains(evs[1].Reply, "the record of "+rotated.Selector+" is published") {
				t.Fatalf("dkim_rotation events: %+v, want the start and the switch", evs)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not switch to the new key within 30 s of its record's publication; events %+v", evs)
		}
		time.Sleep(200 * time.Millisecond)
	}
	send(t, rotated.Selector)
	if out := string(i.mustAdmin(t, "domain", "list")); !strings.Contains(out, oldSel+" (replaced: publish until ") {
		t.Errorf("domain list does not show the old key retiring:\n%s", out)
	}
}
