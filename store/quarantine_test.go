package store

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"testing"
	"time"
)

// Stored bytes that fail MessageData's sanity check are ErrCorrupt; the
// other errors stay what they were.
func TestMessageDataCorrupt(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	for _, c := range []struct{ name, body string }{
		{"empty", `X''`},
		{"truncated", `substr(body, 1, 10)`},
		{"grown", `body || X'0d0a'`},
		{"not bytes", `42`},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := &Message{Sender: "a@example.com", Recipients: []string{"x@example.net"}, ReceivedAt: time.Now(),
				Data: []byte("Subject: hi\r\n\r\nbody\r\n")}
			if err := s.Enqueue(ctx, m); err != nil {
				t.Fatal(err)
			}
			if _, err := s.db.Exec(`UPDATE messages SET body = `+c.body+` WHERE id = ?`, m.ID); err != nil {
				t.Fatal(err)
			}
			if data, err := s.MessageData(ctx, m.ID); !errors.Is(err, ErrCorrupt) || data != nil {
				t.Errorf("MessageData = %q, %v; want ErrCorrupt", data, err)
			}
		})
	}
	t.Run("malformed page", func(t *testing.T) {
		// A body over several pages, and the first of its overflow pages
		// zeroed: SQLite finds the chain broken (SQLITE_CORRUPT).
		m := &Message{Sender: "a@example.com", Recipients: []string{"x@example.net"}, ReceivedAt: time.Now(),
			Data: bytes.Repeat([]byte("0123456789abcdef\r\n"), 1000)}
		if err := s.Enqueue(ctx, m); err != nil {
			t.Fatal(err)
		}
		var page int
		if err := s.db.QueryRow(`SELECT min(pageno) FROM dbstat WHERE name = 'messages' AND pagetype = 'overflow'`).
			Scan(&page); err != nil {
			t.Fatal(err)
		}
		if _, err := s.db.Exec(`UPDATE sqlite_dbpage SET data = zeroblob(length(data)) WHERE pgno = ?`, page); err != nil {
			t.Fatal(err)
		}
		if data, err := s.MessageData(ctx, m.ID); !errors.Is(err, ErrCorrupt) || data != nil {
			t.Errorf("MessageData = %d bytes, %v; want ErrCorrupt", len(data), err)
		}
	})
	if _, err := s.MessageData(ctx, "NOSUCHID"); !errors.Is(err, ErrNotFound) || errors.Is(err, ErrCorrupt) {
		t.Errorf("MessageData of a missing message: %v, want ErrNotFound", err)
	}
}

// A quarantined recipient keeps its message in the queue, is never claimed
// or due, writes no event, counts in QueueDepth, and RetryNow makes it
// deferred and due again.
func TestQuarantine(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	now := time.Now()
	m := &Message{Credential: "app", Sender: "a@example.com", Recipients: []string{"x@example.net", "y@example.net"},
		ReceivedAt: now, Data: []byte("Subject: hi\r\n\r\nbody\r\n")}
	if err := s.Enqueue(ctx, m); err != nil {
		t.Fatal(err)
	}
	if ds, err := s.Claim(ctx, now, 10, time.Minute); err != nil || len(ds) != 1 {
		t.Fatalf("Claim = %+v, %v", ds, err)
	}
	// One recipient delivered, the other quarantined: the message stays.
	err := s.Complete(ctx, Report{QueueID: m.ID, Outcomes: []Outcome{
		{Recipient: "x@example.net", State: StateDelivered, Reply: "250 ok"},
		{Recipient: "y@example.net", State: StateQuarantined, Reply: "quarantined: corrupt"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	e, err := s.QueueMessage(ctx, m.ID)
	if err != nil {
		t.Fatalf("quarantined message left the queue: %v", err)
	}
	if r := e.Recipients[1]; r.Address != "y@example.net" || r.State != StateQuarantined || r.LastReply != "quarantined: corrupt" {
		t.Errorf("recipient %+v, want quarantined", r)
	}
	if ds, _ := s.Claim(ctx, now.Add(24*time.Hour), 10, time.Minute); len(ds) != 0 {
		t.Errorf("quarantined recipient claimed: %+v", ds)
	}
	if next, ok, err := s.NextDue(ctx); ok || err != nil {
		t.Errorf("NextDue = %v, %v, %v; want nothing waiting", next, ok, err)
	}
	if depth, _, err := s.QueueDepth(ctx); err != nil || depth[StateQuarantined] != 1 || depth[StateQueued]+depth[StateDeferred] != 0 {
		t.Errorf("QueueDepth = %v, %v; want 1 quarantined", depth, err)
	}
	evs, err := s.QueryEvents(ctx, EventQuery{Recipient: "y@example.net"})
	if err != nil || len(evs) != 1 || evs[0].Type != EventSend {
		t.Errorf("events of the quarantined recipient: %+v, %v; want its send only", evs, err)
	}

	if n, err := s.RetryNow(ctx, m.ID, now); err != nil || n != 1 {
		t.Fatalf("RetryNow = %d, %v; want 1", n, err)
	}
	ds, err := s.Claim(ctx, now, 10, time.Minute)
	if err != nil || len(ds) != 1 || len(ds[0].Recipients) != 1 || ds[0].Recipients[0].Address != "y@example.net" {
		t.Fatalf("Claim after RetryNow = %+v, %v; want y@example.net", ds, err)
	}
	if e, _ := s.QueueMessage(ctx, m.ID); e.Recipients[1].State != StateDeferred {
		t.Errorf("after RetryNow: %+v, want deferred", e.Recipients[1])
	}
	// Quarantined for good this time, then deleted by the operator.
	if err := s.Complete(ctx, Report{QueueID: m.ID, Outcomes: []Outcome{
		{Recipient: "y@example.net", State: StateQuarantined, Reply: "quarantined: corrupt"}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteMessage(ctx, m.ID, nil); err != nil {
		t.Fatal(err)
	}
	if depth, _, _ := s.QueueDepth(ctx); len(depth) != 0 {
		t.Errorf("QueueDepth after delete = %v", depth)
	}
}

// Recipient rows left without their message (deleted by hand with the
// sqlite3 tool, foreign keys off) are dropped by Claim instead of failing
// every claim.
func TestClaimDropsOrphanRecipients(t *testing.T) {
	s, path := openTest(t)
	ctx := context.Background()
	now := time.Now()
	var ids []string
	for i := range 2 {
		m := &Message{Credential: "app", Sender: "a@example.com", Recipients: []string{fmt.Sprintf("r%d@example.net", i)},
			ReceivedAt: now, Data: []byte("Subject: x\r\n\r\nx\r\n")}
		if err := s.Enqueue(ctx, m); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.ID)
	}
	raw, err := sql.Open("sqlite", path) // foreign keys off, as in the sqlite3 shell
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Exec(`DELETE FROM messages WHERE id = ?`, ids[0]); err != nil {
		t.Fatal(err)
	}
	ds, err := s.Claim(ctx, now, 10, time.Minute)
	if err != nil || len(ds) != 1 || ds[0].QueueID != ids[1] {
		t.Fatalf("Claim = %+v, %v; want only the intact message", ds, err)
	}
	var left int
	raw.QueryRow(`SELECT COUNT(*) FROM recipients WHERE message_id = ?`, ids[0]).Scan(&left)
	if left != 0 {
		t.Errorf("%d orphan recipient rows left", left)
	}
}
