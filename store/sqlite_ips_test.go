package store

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// Parked recipients wait in their line in arrival order, are never handed
// out by Claim or scheduled by NextDue, and keep their place when a lease
// on them ends with the process.
func TestParkedLines(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	now := time.Now()
	var ids []string
	for i := range 4 {
		m := &Message{Credential: "app", Sender: "a@example.com", Recipients: []string{fmt.Sprintf("r%d@example.net", i)},
			ReceivedAt: now, Data: []byte("Subject: x\r\n\r\nx\r\n")}
		if err := s.Enqueue(ctx, m); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.ID)
	}
	ds, err := s.Claim(ctx, now, 10, time.Minute)
	if err != nil || len(ds) != 4 {
		t.Fatalf("claim: %d, %v", len(ds), err)
	}
	// Park all four, the first one as an attempt (a throttling reply).
	for i, d := range ds {
		o := Outcome{Recipient: d.Recipients[0].Address, State: StateDeferred, Reply: "waiting", Park: "default/google",
			NotAttempted: i > 0}
		if err := s.Complete(ctx, Report{QueueID: d.QueueID, Outcomes: []Outcome{o},
			Sends: []IPSend{{IP: "192.0.2.1", Provider: "google", Hour: now, Count: 1}}}); err != nil {
			t.Fatal(err)
		}
	}
	if again, _ := s.Claim(ctx, now.Add(time.Hour), 10, time.Minute); len(again) != 0 {
		t.Errorf("Claim handed out parked mail: %+v", again)
	}
	if _, ok, _ := s.NextDue(ctx); ok {
		t.Error("NextDue reports parked mail as due")
	}
	if counts, _ := s.ParkedCounts(ctx); counts["default/google"] != 4 {
		t.Errorf("ParkedCounts = %v, want 4 in default/google", counts)
	}
	entries, _ := s.QueueMessages(ctx)
	for _, e := range entries {
		r := e.Recipients[0]
		if want := map[bool]int{true: 1, false: 0}[e.ID == ids[0]]; r.State != StateDeferred || r.Attempts != want {
			t.Errorf("%s: %s after %d attempts, want deferred after %d", e.ID, r.State, r.Attempts, want)
		}
	}
	sends, _ := s.IPSends(ctx, now.Add(-time.Hour))
	if len(sends) != 1 || sends[0].Count != 4 {
		t.Errorf("IPSends = %+v, want one hour bucket of 4", sends)
	}

	// The first two leave the line in arrival order; then the process
	// "stops" with them leased: they are first in line again.
	got, err := s.ClaimParked(ctx, "default/google", now, 2, time.Minute)
	if err != nil || len(got) != 2 || got[0].QueueID != ids[0] || got[1].QueueID != ids[1] || got[0].Parked != "default/google" {
		t.Fatalf("ClaimParked = %+v, %v; want messages 1 and 2", got, err)
	}
	if next, _ := s.ClaimParked(ctx, "default/google", now, 1, time.Minute); len(next) != 1 || next[0].QueueID != ids[2] {
		t.Fatalf("a second ClaimParked = %+v, want message 3 (leased ones skipped)", next)
	}
	if err := s.ReleaseLeases(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.NextDue(ctx); ok {
		t.Error("after ReleaseLeases, parked mail became due by time")
	}
	order, _ := s.ClaimParked(ctx, "default/google", now, 4, time.Minute)
	if len(order) != 4 || order[0].QueueID != ids[0] || order[3].QueueID != ids[3] {
		t.Errorf("after a restart the line is %v, want the arrival order %v", order, ids)
	}
	// Delivered: out of the line and out of the queue.
	for _, d := range order {
		if err := s.Complete(ctx, Report{QueueID: d.QueueID, Outcomes: []Outcome{{Recipient: d.Recipients[0].Address,
			State: StateDelivered}}}); err != nil {
			t.Fatal(err)
		}
	}
	if counts, _ := s.ParkedCounts(ctx); len(counts) != 0 {
		t.Errorf("ParkedCounts after delivery = %v", counts)
	}
}

func TestIPStates(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	now := time.Now().Truncate(time.Second)
	x := IPSuspension{IP: "192.0.2.1", Provider: "google", Until: now.Add(time.Hour), Level: 2, Reply: "421 slow down"}
	if err := s.SetIPSuspension(ctx, x); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.IPSuspensions(ctx); len(got) != 1 || !got[0].Until.Equal(x.Until) || got[0].Level != 2 {
		t.Errorf("IPSuspensions = %+v", got)
	}
	s.SetIPSuspension(ctx, IPSuspension{IP: "192.0.2.1", Provider: "google"})
	if got, _ := s.IPSuspensions(ctx); len(got) != 0 {
		t.Errorf("after deleting: %+v", got)
	}
	if err := s.PauseIP(ctx, IPPause{IP: "192.0.2.1", Reason: "blocklisted", At: now}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.IPPauses(ctx); len(got) != 1 || got[0].Reason != "blocklisted" {
		t.Errorf("IPPauses = %+v", got)
	}
	if err := s.ResumeIP(ctx, "192.0.2.1"); err != nil {
		t.Fatal(err)
	}
	if err := s.ResumeIP(ctx, "192.0.2.1"); err == nil {
		t.Error("resuming an IP that is not paused succeeded")
	}
}

// Suppression per credential: an automatic entry names the credential only
// when the store is told so; a shared entry stops everyone.
func TestSuppressionScope(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	now := time.Now()
	suppress := func(addr, cred, reason string) {
		t.Helper()
		if err := s.Suppress(ctx, Suppression{Address: addr, Credential: cred, Reason: reason, CreatedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	suppress("shared@example.net", "shop", SuppressBounce) // shared: the store is not per credential
	s.SetSuppressionPerCredential(true)
	suppress("mine@example.net", "shop", SuppressComplaint)
	suppress("manual@example.net", "news", SuppressManual)
	addrs := []string{"shared@example.net", "mine@example.net", "manual@example.net"}
	for cred, want := range map[string]string{
		"shop": "shared@example.net mine@example.net",
		"news": "shared@example.net manual@example.net",
		"app":  "shared@example.net",
	} {
		on, err := s.Suppressed(ctx, cred, addrs)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, a := range addrs {
			if on[a] {
				got = append(got, a)
			}
		}
		if strings.Join(got, " ") != want {
			t.Errorf("suppressed for %s: %v, want %s", cred, got, want)
		}
	}
	if list, _ := s.Suppression(ctx, "shared@example.net"); len(list) != 1 || list[0].Credential != "" {
		t.Errorf("the bounce before SetSuppressionPerCredential: %+v, want a shared entry", list)
	}
	if err := s.Unsuppress(ctx, "mine@example.net", ""); err == nil {
		t.Error("removed a shared entry that does not exist")
	}
	if err := s.Unsuppress(ctx, "mine@example.net", "shop"); err != nil {
		t.Fatal(err)
	}
}
