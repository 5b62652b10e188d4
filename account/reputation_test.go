package account

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/sesame-mail/sesame/store"
)

var testPolicy = ReputationPolicy{Window: 7 * 24 * time.Hour, MinVolume: 20, BounceWarning: 0.05, BouncePause: 0.10,
	ComplaintWarning: 0.001, ComplaintPause: 0.005}

// attempt queues one message for cred and records its outcome, as the relay does.
func attempt(t *testing.T, st *store.SQLite, cred, state, bounceType string) {
	t.Helper()
	ctx := context.Background()
	m := &store.Message{Credential: cred, Sender: "s@example.com", Recipients: []string{"r@example.net"}, ReceivedAt: time.Now(), Data: []byte("x\r\n")}
	if err := st.Enqueue(ctx, m); err != nil {
		t.Fatal(err)
	}
	if err := st.Complete(ctx, store.Report{QueueID: m.ID, Outcomes: []store.Outcome{
		{Recipient: "r@example.net", State: state, BounceType: bounceType}}}); err != nil {
		t.Fatal(err)
	}
}

func TestReputationGuard(t *testing.T) {
	st, _ := openStore(t)
	ctx := context.Background()
	for _, name := range []string{"good", "risky", "bad", "small"} {
		if err := st.CreateCredential(ctx, store.Credential{Name: name, Username: "SM" + strings.ToUpper(name), PasswordHash: "x",
			CreatedAt: time.Now(), UpdatedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	// good: 1 hard bounce in 40; risky: 3 in 40 (7.5%); bad: 5 in 40 (12.5%),
	// plus soft bounces that do not count; small: 5 in 10, under min_volume.
	for i := 0; i < 40; i++ {
		for name, hard := range map[string]int{"good": 1, "risky": 3, "bad": 5} {
			switch {
			case i < hard:
				attempt(t, st, name, store.StateBounced, store.BounceHard)
			case name == "bad" && i < hard+5:
				attempt(t, st, name, store.StateBounced, store.BounceSoft)
			default:
				attempt(t, st, name, store.StateDelivered, "")
			}
		}
		if i < 10 {
			if i < 5 {
				attempt(t, st, "small", store.StateBounced, store.BounceHard)
			} else {
				attempt(t, st, "small", store.StateDelivered, "")
			}
		}
	}
	var logs bytes.Buffer
	g := NewGuard(testPolicy, st, slog.New(slog.NewTextHandler(&logs, nil)), time.Now)
	if err := g.Check(ctx); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"good": "", "risky": "", "bad": "bounce rate 12.5% is over 10%", "small": ""}
	for name, reason := range want {
		c, _ := st.Credential(ctx, name)
		if c.PausedReason != reason {
			t.Errorf("%s paused %q, want %q", name, c.PausedReason, reason)
		}
	}
	if !strings.Contains(logs.String(), "credential near its reputation limits: bounce rate 7.5% is over 5%") ||
		!strings.Contains(logs.String(), "credential=risky") {
		t.Errorf("no warning for risky:\n%s", logs.String())
	}
	// The warning is logged once, not at every check.
	logs.Reset()
	g.Check(ctx)
	if strings.Contains(logs.String(), "risky") {
		t.Errorf("warning repeated:\n%s", logs.String())
	}

	// A resume is a fresh start: the old bounces no longer count.
	if err := st.SetPaused(ctx, "bad", "", time.Now()); err != nil {
		t.Fatal(err)
	}
	g.Check(ctx)
	if c, _ := st.Credential(ctx, "bad"); c.PausedReason != "" {
		t.Fatalf("paused again at once after a resume: %q", c.PausedReason)
	}
	c, _ := st.Credential(ctx, "bad")
	r, err := testPolicy.Standing(ctx, st, c, time.Now())
	if err != nil || r.Attempted != 0 || r.Verdict != "ok" {
		t.Fatalf("standing after resume: %+v %v", r, err)
	}
}

// countingStore counts the guard's event counts.
type countingStore struct {
	*store.SQLite
	counts int
}

func (c *countingStore) CountEvents(ctx context.Context, q store.EventQuery) (map[string]int, error) {
	c.counts++
	return c.SQLite.CountEvents(ctx, q)
}

// Without new events the guard counts nothing: a queue waiting for hours
// costs no scans of the event log. A new event makes it look again.
func TestReputationGuardIdle(t *testing.T) {
	st, _ := openStore(t)
	ctx := context.Background()
	if err := st.CreateCredential(ctx, store.Credential{Name: "app", Username: "SMAPP", PasswordHash: "x",
		CreatedAt: time.Now(), UpdatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	attempt(t, st, "app", store.StateDelivered, "")
	cs := &countingStore{SQLite: st}
	g := NewGuard(testPolicy, cs, slog.New(slog.NewTextHandler(io.Discard, nil)), time.Now)
	for range 3 {
		if err := g.Check(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if cs.counts != 1 {
		t.Errorf("%d counts over 3 checks without new events, want 1", cs.counts)
	}
	attempt(t, st, "app", store.StateBounced, store.BounceHard)
	g.Check(ctx)
	if cs.counts != 2 {
		t.Errorf("%d counts after a new event, want 2", cs.counts)
	}
}
