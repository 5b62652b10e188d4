package store

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func inboundMsg(client, status string, raw []byte, at time.Time) InboundMessage {
	return InboundMessage{ReceivedAt: at, Client: client, MailFrom: "", RcptTo: "fbl@example.com",
		Status: status, Detail: "why", Size: int64(len(raw)), Raw: raw}
}

func totals(t *testing.T, s *SQLite) InboundTotals {
	t.Helper()
	got, err := s.InboundTotals(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// An inbound message keeps whether it was verified and why, in lists and
// alone.
func TestInboundVerification(t *testing.T) {
	s, err := OpenSQLite(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	at := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	for _, m := range []InboundMessage{
		{ReceivedAt: at, Kind: "arf", Status: InboundProcessed, Verified: true, Verification: "DKIM signature d=arf.mail.yahoo.com", Raw: []byte("a")},
		{ReceivedAt: at, Kind: "dsn", Status: InboundUnverified, Verification: "came to the feedback address", Raw: []byte("b")},
	} {
		if _, err := s.RecordInbound(ctx, m, nil, nil, InboundLimit{}); err != nil {
			t.Fatal(err)
		}
	}
	list, err := s.InboundMessages(ctx, InboundUnverified, 10)
	if err != nil || len(list) != 1 || list[0].Verified || list[0].Verification != "came to the feedback address" {
		t.Fatalf("unverified list %+v, %v", list, err)
	}
	m, err := s.InboundMessage(ctx, 1)
	if err != nil || !m.Verified || m.Verification != "DKIM signature d=arf.mail.yahoo.com" || string(m.Raw) != "a" {
		t.Fatalf("message 1: %+v, %v", m, err)
	}
}

// RecordInbound keeps the table within the limit it is given, counting
// the bytes each row keeps, and refuses the rest whole: no row, no events.
func TestRecordInboundLimit(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	raw := bytes.Repeat([]byte("x"), 1000)
	one := inboundMsg("192.0.2.1", InboundUnparsed, raw, now).StoredBytes()
	limit := InboundLimit{Messages: 5, Bytes: 3*one + one/2}

	for n := range 3 {
		if _, err := s.RecordInbound(ctx, inboundMsg("192.0.2.1", InboundUnparsed, raw, now), nil, nil, limit); err != nil {
			t.Fatalf("message %d within the limit: %v", n+1, err)
		}
	}
	ev := Event{At: now, Type: EventBounce, QueueID: "Q1", Recipient: "r@example.net"}
	_, err := s.RecordInbound(ctx, inboundMsg("192.0.2.1", InboundProcessed, raw, now), []Event{ev},
		[]Suppression{{Address: "r@example.net", Reason: SuppressBounce, CreatedAt: now}}, limit)
	if !errors.Is(err, ErrInboundFull) {
		t.Fatalf("a message past the byte limit: %v, want ErrInboundFull", err)
	}
	if got := totals(t, s); got != (InboundTotals{3, 3 * one}) {
		t.Errorf("totals %+v, want 3 messages of %d bytes", got, 3*one)
	}
	if evs, _ := s.QueryEvents(ctx, EventQuery{}); len(evs) != 0 {
		t.Errorf("a refused message recorded events %+v", evs)
	}
	if _, err := s.Suppression(ctx, "r@example.net"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a refused message suppressed its recipient: %v", err)
	}

	// A small message still fits the bytes; the count limit then holds.
	small := inboundMsg("192.0.2.1", InboundUnparsed, []byte("y"), now)
	small.Detail = ""
	for n := range 2 {
		if _, err := s.RecordInbound(ctx, small, nil, nil, limit); err != nil {
			t.Fatalf("small message %d: %v", n+1, err)
		}
	}
	if _, err := s.RecordInbound(ctx, small, nil, nil, limit); !errors.Is(err, ErrInboundFull) {
		t.Fatalf("a sixth message with a limit of 5: %v, want ErrInboundFull", err)
	}
	// Without a limit, nothing is refused.
	if _, err := s.RecordInbound(ctx, small, nil, nil, InboundLimit{}); err != nil {
		t.Fatal(err)
	}
	if got := totals(t, s); got.Messages != 6 {
		t.Errorf("totals %+v, want 6 messages", got)
	}
}

// Concurrent records never pass the limit together.
func TestRecordInboundLimitConcurrent(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	limit := InboundLimit{Messages: 10}
	var wg sync.WaitGroup
	var mu sync.Mutex
	kept := 0
	for range 40 {
		wg.Go(func() {
			_, err := s.RecordInbound(ctx, inboundMsg("192.0.2.1", InboundUnparsed, []byte("z"), now), nil, nil, limit)
			if err == nil {
				mu.Lock()
				kept++
				mu.Unlock()
			} else if !errors.Is(err, ErrInboundFull) {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := totals(t, s); kept != 10 || got.Messages != 10 {
		t.Errorf("%d records succeeded and the table holds %d, want 10 and 10", kept, got.Messages)
	}
}

// A message kept truncated says so; lists and reads carry its client,
// size and kept bytes.
func TestInboundTruncatedRoundTrip(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	m := inboundMsg("2001:db8::1", InboundUnparsed, []byte("Subject: x\r\n\r\nstart"), time.Unix(1_800_000_000, 0))
	m.Size = 10 << 20
	id, err := s.RecordInbound(ctx, m, nil, nil, InboundLimit{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.InboundMessage(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Truncated || got.Size != 10<<20 || got.Client != "2001:db8::1" || string(got.Raw) != string(m.Raw) ||
		got.Kept != m.StoredBytes() || !got.ReceivedAt.Equal(m.ReceivedAt) {
		t.Errorf("read back %+v", got)
	}
	list, err := s.InboundMessages(ctx, "", 10)
	if err != nil || len(list) != 1 || !list[0].Truncated || list[0].Size != 10<<20 || list[0].Raw != nil {
		t.Errorf("list %+v, %v", list, err)
	}
	whole := inboundMsg("192.0.2.1", InboundUnparsed, []byte("all of it"), time.Unix(1_800_000_000, 0))
	id, _ = s.RecordInbound(ctx, whole, nil, nil, InboundLimit{})
	if got, _ := s.InboundMessage(ctx, id); got.Truncated {
		t.Errorf("a message kept whole reads back as truncated")
	}
}

func TestDeleteAndPurgeInbound(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	base := time.Unix(1_800_000_000, 0)
	var ids []int64
	add := func(client, status string, at time.Time) {
		id, err := s.RecordInbound(ctx, inboundMsg(client, status, []byte("0123456789"), at), nil, nil, InboundLimit{})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	for n := range 3 {
		add("192.0.2.1", InboundUnparsed, base.Add(time.Duration(n)*time.Hour))
	}
	add("192.0.2.2", InboundUnparsed, base)
	add("192.0.2.2", InboundProcessed, base)
	add("192.0.2.3", InboundProcessed, base.Add(5*time.Hour))

	if err := s.DeleteInbound(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := s.InboundMessage(ctx, ids[0]); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted message still there: %v", err)
	}
	if err := s.DeleteInbound(ctx, ids[0]); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleting it again: %v, want ErrNotFound", err)
	}
	if got := totals(t, s); got.Messages != 5 {
		t.Errorf("after a delete: %+v", got)
	}

	purge := func(f InboundFilter, want int) {
		t.Helper()
		got, err := s.PurgeInbound(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		if got.Messages != want {
			t.Errorf("purge %+v removed %d, want %d", f, got.Messages, want)
		}
	}
	purge(InboundFilter{Client: "192.0.2.1", Before: base.Add(90 * time.Minute)}, 1) // the one at base was deleted
	purge(InboundFilter{Client: "192.0.2.3", Before: base.Add(4 * time.Hour)}, 0)
	purge(InboundFilter{Status: InboundUnparsed}, 2) // 192.0.2.1's last and 192.0.2.2's
	before := totals(t, s)
	got, err := s.PurgeInbound(ctx, InboundFilter{Before: base.Add(time.Hour)})
	if err != nil || got.Messages != 1 {
		t.Fatalf("purge before: %+v %v, want 1 (192.0.2.2's processed)", got, err)
	}
	if after := totals(t, s); after.Messages != 1 || after.Bytes != before.Bytes-got.Bytes {
		t.Errorf("totals %+v after purging %+v from %+v", after, got, before)
	}
	list, _ := s.InboundMessages(ctx, "", 10)
	if len(list) != 1 || list[0].Client != "192.0.2.3" {
		t.Errorf("left: %+v, want 192.0.2.3's message", list)
	}
	// Everything, in batches larger than one transaction's.
	for range purgeBatch + 3 {
		add("192.0.2.4", InboundUnparsed, base)
	}
	if got, err := s.PurgeInbound(ctx, InboundFilter{}); err != nil || got.Messages != purgeBatch+4 {
		t.Errorf("purge all: %+v %v, want %d", got, err, purgeBatch+4)
	}
	if got := totals(t, s); got != (InboundTotals{}) {
		t.Errorf("totals after purging all: %+v", got)
	}
	// Pruning with the events keeps the totals too.
	add("192.0.2.5", InboundUnparsed, base)
	if _, err := s.PruneEvents(ctx, base.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if got := totals(t, s); got != (InboundTotals{}) {
		t.Errorf("totals after pruning: %+v", got)
	}
}

// A database from before the inbound caps gets its totals from the rows
// it holds: one at the version before them (with the report verification
// columns), and one from before those too, which migrates through both.
func TestMigrateInboundTotals(t *testing.T) {
	caps := slices.IndexFunc(migrations, func(m string) bool { return strings.Contains(m, "CREATE TABLE inbound_usage") })
	if caps < 1 {
		t.Fatal("no migration creates inbound_usage")
	}
	for _, before := range []int{0, 1} { // migrations before the caps' not yet applied
		t.Run(fmt.Sprintf("version %d", 1+caps-before), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "old.db")
			db, err := sql.Open("sqlite", "file:"+path)
			if err != nil {
				t.Fatal(err)
			}
			script := schema
			for _, m := range migrations[:caps-before] {
				script += ";\n" + m
			}
			script += fmt.Sprintf(";\nPRAGMA user_version = %d;", 1+caps-before)
			script += `INSERT INTO inbound (received_at, mail_from, rcpt_to, kind, status, detail, raw)
				VALUES (1, 'a', 'bb', '', 'unparsed', 'ccc', x'00010203'), (2, '', 'b', 'dsn', 'processed', '', x'05')`
			if before == 0 {
				script += `; UPDATE inbound SET verified = 1, verification = 'proof' WHERE id = 2`
			}
			if _, err := db.Exec(script); err != nil {
				t.Fatal(err)
			}
			db.Close()
			s, err := OpenSQLite(path)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			want := InboundTotals{Messages: 2, Bytes: (4 + 1 + 2 + 8 + 3) + (1 + 1 + 3 + 9)}
			if before == 0 {
				want.Bytes += int64(len("proof"))
			}
			if got := totals(t, s); got != want {
				t.Errorf("totals after migration %+v, want %+v", got, want)
			}
			m, err := s.InboundMessage(context.Background(), 1)
			if err != nil || m.Size != 4 || m.Truncated || m.Verified || m.Verification != "" {
				t.Errorf("an old message after migration: %+v %v", m, err)
			}
			m, err = s.InboundMessage(context.Background(), 2)
			if err != nil || m.Verified != (before == 0) || m.Kept != m.StoredBytes() {
				t.Errorf("an old message after migration: %+v %v", m, err)
			}
		})
	}
}
