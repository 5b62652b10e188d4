package store

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"
)

func openTest(t *testing.T) (*SQLite, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sesame.db")
	s, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func TestQueueLifecycle(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	now := time.Now()
	body := []byte("Subject: hi\r\n\r\nbody \xc3\xa9\r\n")
	m := &Message{Credential: "app", Sender: "a@example.com", Recipients: []string{"x@example.net", "y@example.net"},
		MessageID: "<1@example.com>", ReceivedAt: now, Data: body}
	if err := s.Enqueue(ctx, m); err != nil {
		t.Fatal(err)
	}
	if len(m.ID) != 16 {
		t.Fatalf("queue id %q", m.ID)
	}
	select {
	case <-s.Ready():
	default:
		t.Fatal("Ready not signalled after Enqueue")
	}

	ds, err := s.Claim(ctx, now, 10, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 1 || len(ds[0].Recipients) != 2 || len(ds[0].Data) != 0 || ds[0].Sender != m.Sender {
		t.Fatalf("claim = %+v", ds)
	}
	if data, err := s.MessageData(ctx, m.ID); err != nil || !bytes.Equal(data, body) {
		t.Fatalf("MessageData = %q, %v", data, err)
	}
	// Leased: a second claim gets nothing.
	if again, _ := s.Claim(ctx, now, 10, time.Minute); len(again) != 0 {
		t.Fatalf("claimed leased recipients again: %+v", again)
	}
	if next, ok, _ := s.NextDue(ctx); !ok || next.Before(now.Add(59*time.Second)) {
		t.Fatalf("NextDue = %v %v, want lease end", next, ok)
	}

	retry := now.Add(time.Hour)
	err = s.Complete(ctx, Report{QueueID: m.ID, Outcomes: []Outcome{
		{Recipient: "x@example.net", State: StateDelivered, Reply: "250 ok"},
		{Recipient: "y@example.net", State: StateDeferred, Reply: "451 later", NextAttempt: retry},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if ds, _ := s.Claim(ctx, now.Add(time.Minute), 10, time.Minute); len(ds) != 0 {
		t.Fatalf("deferred recipient claimed early: %+v", ds)
	}
	next, ok, err := s.NextDue(ctx)
	if err != nil || !ok || !next.Equal(time.Unix(0, retry.UnixNano())) {
		t.Fatalf("NextDue = %v %v %v, want %v", next, ok, err, retry)
	}
	ds, err = s.Claim(ctx, retry, 10, time.Minute)
	if err != nil || len(ds) != 1 || len(ds[0].Recipients) != 1 || ds[0].Recipients[0].Attempts != 1 {
		t.Fatalf("claim after retry time = %+v, %v", ds, err)
	}
	entries, err := s.QueueMessages(ctx)
	if err != nil || len(entries) != 1 || entries[0].Recipients[1].LastReply != "451 later" {
		t.Fatalf("queue = %+v, %v", entries, err)
	}
	if err := s.Complete(ctx, Report{QueueID: m.ID, Outcomes: []Outcome{{Recipient: "y@example.net", State: StateDelivered}}}); err != nil {
		t.Fatal(err)
	}
	if entries, _ := s.QueueMessages(ctx); len(entries) != 0 {
		t.Fatalf("delivered message still queued: %+v", entries)
	}
	if _, ok, _ := s.NextDue(ctx); ok {
		t.Fatal("NextDue reports work on an empty queue")
	}
}

// A bounce and its DSN are recorded together; the message then leaves the
// queue, and the DSN is queued in its place.
func TestBounceWithNotice(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	m := &Message{Sender: "a@example.com", Recipients: []string{"x@example.net", "y@example.net"}, ReceivedAt: time.Now(), Data: []byte("x\r\n")}
	if err := s.Enqueue(ctx, m); err != nil {
		t.Fatal(err)
	}
	<-s.Ready()
	if ds, _ := s.Claim(ctx, time.Now(), 1, time.Minute); len(ds) != 1 || ds[0].DelayWarned {
		t.Fatalf("claim = %+v", ds)
	}
	// First a delay warning for y, then x bounces and y expires.
	warn := &Message{Sender: "", Recipients: []string{"a@example.com"}, ReceivedAt: time.Now(), Data: []byte("warning\r\n")}
	err := s.Complete(ctx, Report{QueueID: m.ID, Notice: warn, DelayWarned: true, Outcomes: []Outcome{
		{Recipient: "x@example.net", State: StateDeferred, Reply: "451 later", NextAttempt: time.Now()},
		{Recipient: "y@example.net", State: StateDeferred, Reply: "451 later", NextAttempt: time.Now()},
	}})
	if err != nil {
		t.Fatal(err)
	}
	ds, _ := s.Claim(ctx, time.Now(), 10, time.Minute)
	var orig Delivery
	for _, d := range ds {
		if d.QueueID == m.ID {
			orig = d
		}
	}
	if len(ds) != 2 || !orig.DelayWarned {
		t.Fatalf("after warning: %+v", ds)
	}
	bounce := &Message{Sender: "", Recipients: []string{"a@example.com"}, ReceivedAt: time.Now(), Data: []byte("bounce\r\n")}
	err = s.Complete(ctx, Report{QueueID: m.ID, Notice: bounce, Outcomes: []Outcome{
		{Recipient: "x@example.net", State: StateBounced, Reply: "550 no"},
		{Recipient: "y@example.net", State: StateExpired, Reply: "451 later"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	entries, _ := s.QueueMessages(ctx)
	ids := map[string]bool{}
	for _, e := range entries {
		ids[e.ID] = true
	}
	if ids[m.ID] || !ids[warn.ID] || !ids[bounce.ID] || len(entries) != 2 {
		t.Fatalf("queue = %+v", entries)
	}
	if err := s.Complete(ctx, Report{QueueID: bounce.ID, Outcomes: []Outcome{{Recipient: "a@example.com", State: "failed"}}}); err == nil {
		t.Fatal("invalid state accepted")
	}
}

func TestRetryNowAndDelete(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	later := time.Now().Add(time.Hour)
	var ids []string
	for i := 0; i < 2; i++ {
		m := &Message{Sender: "a@example.com", Recipients: []string{"x@example.net"}, ReceivedAt: time.Now(), Data: []byte("Subject: s\r\n\r\nx\r\n")}
		if err := s.Enqueue(ctx, m); err != nil {
			t.Fatal(err)
		}
		s.Claim(ctx, time.Now(), 10, time.Minute)
		s.Complete(ctx, Report{QueueID: m.ID, Outcomes: []Outcome{{Recipient: "x@example.net", State: StateDeferred, NextAttempt: later}}})
		ids = append(ids, m.ID)
	}
	if n, err := s.RetryNow(ctx, ids[0], time.Now()); n != 1 || err != nil {
		t.Fatalf("RetryNow one = %d, %v", n, err)
	}
	if ds, _ := s.Claim(ctx, time.Now(), 10, time.Minute); len(ds) != 1 || ds[0].QueueID != ids[0] {
		t.Fatalf("claim after retry = %+v", ds)
	}
	if n, _ := s.RetryNow(ctx, "", time.Now()); n != 2 {
		t.Fatalf("RetryNow all = %d", n)
	}
	if _, err := s.RetryNow(ctx, "NOSUCHMESSAGE", time.Now()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("RetryNow unknown: %v", err)
	}
	data, err := s.MessageData(ctx, ids[1])
	if err != nil || string(data) != "Subject: s\r\n\r\nx\r\n" {
		t.Fatalf("MessageData = %q, %v", data, err)
	}
	notice := &Message{Recipients: []string{"a@example.com"}, ReceivedAt: time.Now(), Data: []byte("dsn\r\n")}
	if err := s.DeleteMessage(ctx, ids[1], notice); err != nil {
		t.Fatal(err)
	}
	if _, err := s.QueueMessage(ctx, ids[1]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted message still there: %v", err)
	}
	if e, err := s.QueueMessage(ctx, notice.ID); err != nil || e.Recipients[0].Address != "a@example.com" {
		t.Fatalf("notice = %+v, %v", e, err)
	}
	if err := s.DeleteMessage(ctx, ids[1], nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}

// A write by another process (here: another handle on the same file) wakes
// Ready within about a second.
func TestReadyOnOtherWriter(t *testing.T) {
	s, path := openTest(t)
	ready := s.Ready()
	other, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	select {
	case <-ready: // drain a wake-up from opening
	default:
	}
	// At once: a write right after Ready must be seen too.
	m := &Message{Recipients: []string{"x@example.net"}, ReceivedAt: time.Now(), Data: []byte("x\r\n")}
	if err := other.Enqueue(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("Ready not signalled after another process wrote")
	}
}

func TestMigrateFromVersion1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(schema + `PRAGMA user_version = 1;
		INSERT INTO messages (id, credential, sender, message_id, size, received_at, body) VALUES ('M1', 'c', 's@example.com', '', 1, 1, x'41');
		INSERT INTO recipients (message_id, address, state, next_attempt_at, updated_at) VALUES ('M1', 'r@example.net', 'failed', 1, 1);`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	e, err := s.QueueMessage(context.Background(), "M1")
	if err != nil || e.Recipients[0].State != StateBounced {
		t.Fatalf("after migration: %+v, %v", e, err)
	}
}

// Concurrent submissions must share commits, and every one must be stored.
func TestGroupCommit(t *testing.T) {
	s, path := openTest(t)
	ctx := context.Background()
	const writers, each = 32, 20
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				m := &Message{Sender: "a@example.com", Recipients: []string{fmt.Sprintf("r%d-%d@example.net", w, i)},
					ReceivedAt: time.Now(), Data: bytes.Repeat([]byte("x"), 10<<10)}
				errs <- s.Enqueue(ctx, m)
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if c := s.commits.Load(); c >= writers*each {
		t.Fatalf("%d commits for %d messages: no group commit", c, writers*each)
	}
	s.Close()

	// Everything is there after reopening.
	s2, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	entries, err := s2.QueueMessages(ctx)
	if err != nil || len(entries) != writers*each {
		t.Fatalf("after reopen: %d messages, %v", len(entries), err)
	}
}

func TestReleaseLeases(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	m := &Message{Sender: "", Recipients: []string{"x@example.net"}, ReceivedAt: time.Now(), Data: []byte("x\r\n")}
	if err := s.Enqueue(ctx, m); err != nil {
		t.Fatal(err)
	}
	if ds, _ := s.Claim(ctx, time.Now(), 1, time.Hour); len(ds) != 1 {
		t.Fatal("nothing claimed")
	}
	if err := s.ReleaseLeases(ctx); err != nil {
		t.Fatal(err)
	}
	if ds, _ := s.Claim(ctx, time.Now(), 1, time.Hour); len(ds) != 1 || ds[0].Sender != "" {
		t.Fatalf("after release: %+v", ds)
	}
}

func TestCredentials(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	now := time.Now()
	c := Credential{Name: "shop", Username: "SMABC", PasswordHash: "h1", CreatedAt: now, UpdatedAt: now}
	if err := s.CreateCredential(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateCredential(ctx, c); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate create: %v", err)
	}
	got, err := s.CredentialByUsername(ctx, "SMABC")
	if err != nil || got.Name != "shop" || got.PasswordHash != "h1" || !got.LastUsedAt.IsZero() {
		t.Fatalf("got %+v, %v", got, err)
	}
	if err := s.SetPassword(ctx, "shop", "h2", now); err != nil {
		t.Fatal(err)
	}
	if err := s.TouchCredential(ctx, "shop", now); err != nil {
		t.Fatal(err)
	}
	got, _ = s.Credential(ctx, "shop")
	if got.PasswordHash != "h2" || got.LastUsedAt.IsZero() {
		t.Fatalf("after update: %+v", got)
	}
	if list, _ := s.ListCredentials(ctx); len(list) != 1 {
		t.Fatalf("list = %+v", list)
	}
	if err := s.DeleteCredential(ctx, "shop"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CredentialByUsername(ctx, "SMABC"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	if err := s.DeleteCredential(ctx, "shop"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}

func TestDomains(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	d := Domain{Name: "example.com", CreatedAt: time.Now(), Keys: []DKIMKey{
		{Selector: "sesame-ed25519-1", Algorithm: AlgEd25519, PrivateKey: []byte("e"), CreatedAt: time.Now()},
		{Selector: "sesame-rsa-1", Algorithm: AlgRSA, PrivateKey: []byte("r"), CreatedAt: time.Now()},
	}}
	if err := s.CreateDomain(ctx, d); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateDomain(ctx, d); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate: %v", err)
	}
	got, err := s.Domain(ctx, "example.com")
	if err != nil || len(got.Keys) != 2 || got.Keys[0].Algorithm != AlgRSA {
		t.Fatalf("got %+v, %v", got, err)
	}
	if list, _ := s.ListDomains(ctx); len(list) != 1 || len(list[0].Keys) != 2 {
		t.Fatalf("list = %+v", list)
	}
	if err := s.DeleteDomain(ctx, "example.com"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Domain(ctx, "example.com"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
}

// The queue records an event for every recipient it accepts and every
// outcome, in the same transaction; queries filter and count them.
func TestEvents(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	m := &Message{Credential: "app", Sender: "a@example.com", Recipients: []string{"X@example.net", "y@example.net"},
		MessageID: "<m@example.com>", ReceivedAt: time.Now(), Data: []byte("x\r\n")}
	if err := s.Enqueue(ctx, m); err != nil {
		t.Fatal(err)
	}
	s.Claim(ctx, time.Now(), 1, time.Minute)
	if err := s.Complete(ctx, Report{QueueID: m.ID, Outcomes: []Outcome{
		{Recipient: "X@example.net", State: StateDelivered, Reply: "250 ok", RemoteMTA: "mx.example.net"},
		{Recipient: "y@example.net", State: StateBounced, Reply: "550 no", RemoteMTA: "mx.example.net"},
	}}); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordEvent(ctx, Event{At: time.Now(), Type: EventReject, Credential: "other", Reply: "554 no"}); err != nil {
		t.Fatal(err)
	}
	counts, err := s.CountEvents(ctx, EventQuery{Credential: "app"})
	if err != nil || counts[EventSend] != 2 || counts[EventDelivery] != 1 || counts[EventBounce] != 1 || counts[EventReject] != 0 {
		t.Fatalf("counts = %v, %v", counts, err)
	}
	evs, err := s.QueryEvents(ctx, EventQuery{Recipient: "x@EXAMPLE.net", Type: EventDelivery})
	if err != nil || len(evs) != 1 || evs[0].MessageID != "<m@example.com>" || evs[0].RemoteMTA != "mx.example.net" || evs[0].QueueID != m.ID {
		t.Fatalf("query = %+v, %v", evs, err)
	}
	if evs, _ := s.QueryEvents(ctx, EventQuery{Limit: 2}); len(evs) != 2 || evs[1].Type != EventReject {
		t.Fatalf("newest two = %+v", evs)
	}
	if n, err := s.PruneEvents(ctx, time.Now().Add(time.Second)); err != nil || n != 5 {
		t.Fatalf("pruned %d, %v", n, err)
	}
	if evs, _ := s.QueryEvents(ctx, EventQuery{}); len(evs) != 0 {
		t.Fatalf("after prune: %+v", evs)
	}
}

// Queue ids sort in the order they were made (across milliseconds), and are
// 16 characters of digits and A-V.
func TestNewQueueIDOrder(t *testing.T) {
	valid := regexp.MustCompile(`^[0-9A-V]{16}$`)
	prev := NewQueueID()
	seen := map[string]bool{prev: true}
	for range 3 {
		time.Sleep(2 * time.Millisecond)
		id := NewQueueID()
		if !valid.MatchString(id) || id <= prev || seen[id] {
			t.Fatalf("queue id %q after %q: want a new, greater id of 16 digits and A-V", id, prev)
		}
		seen[id], prev = true, id
	}
}

// The summary of failed logins is kept only for a username a credential
// has, replaced by each write, and goes with the credential.
func TestLoginFailures(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	now := time.Now()
	if err := s.CreateCredential(ctx, Credential{Name: "shop", Username: "SMABC", PasswordHash: "h", CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.LoginFailures(ctx, "shop"); err != nil || got != (LoginFailures{}) {
		t.Fatalf("before any failure: %+v, %v", got, err)
	}
	f := LoginFailures{First: now.Add(-time.Minute), Last: now, Failures: 25, Networks: 4, LastNetwork: "192.0.2.7",
		BlockedNetworks: 3, BlockedUntil: now.Add(15 * time.Minute), UpdatedAt: now}
	if err := s.RecordLoginFailures(ctx, "SMABC", f); err != nil {
		t.Fatal(err)
	}
	// An unknown username is not stored anywhere.
	if err := s.RecordLoginFailures(ctx, "SMNOBODY", LoginFailures{Failures: 1, Last: now}); err != nil {
		t.Fatal(err)
	}
	var rows int
	if err := s.db.QueryRow(`SELECT COUNT(*) FROM login_failures`).Scan(&rows); err != nil || rows != 1 {
		t.Fatalf("%d rows (%v), want 1: an unknown username must not be stored", rows, err)
	}
	got, err := s.LoginFailures(ctx, "shop")
	if err != nil || got.Failures != 25 || got.Networks != 4 || got.LastNetwork != "192.0.2.7" || got.BlockedNetworks != 3 ||
		!got.First.Equal(f.First) || !got.Last.Equal(f.Last) || !got.BlockedUntil.Equal(f.BlockedUntil) || !got.UpdatedAt.Equal(now) {
		t.Fatalf("got %+v, %v; want %+v", got, err, f)
	}
	f.Failures, f.BlockedNetworks = 30, 0
	if err := s.RecordLoginFailures(ctx, "SMABC", f); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.LoginFailures(ctx, "shop"); got.Failures != 30 || got.BlockedNetworks != 0 {
		t.Fatalf("after a second write: %+v", got)
	}
	if err := s.DeleteCredential(ctx, "shop"); err != nil {
		t.Fatal(err)
	}
	if err := s.db.QueryRow(`SELECT COUNT(*) FROM login_failures`).Scan(&rows); err != nil || rows != 0 {
		t.Fatalf("%d rows (%v) after the credential was deleted", rows, err)
	}
}
