package store

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A write is answered only after the syncer's fsync of the WAL: when that
// fsync cannot run, the caller hears of it (and the client keeps its
// message), even though SQLite's commit succeeded.
func TestWriteWaitsForWALSync(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	msg := func() *Message {
		return &Message{Credential: "c", Sender: "a@example.com", Recipients: []string{"b@example.net"},
			ReceivedAt: time.Now(), Data: []byte("x\r\n")}
	}
	if err := s.Enqueue(ctx, msg()); err != nil {
		t.Fatal(err)
	}

	path := s.wal.path
	s.wal.mu.Lock()
	s.wal.path = path + ".gone" // sync now finds no WAL to flush
	s.wal.mu.Unlock()
	err := s.Enqueue(ctx, msg())
	if err == nil || !strings.Contains(err.Error(), "WAL") {
		t.Fatalf("Enqueue with the WAL's fsync failing: %v, want an error naming the WAL", err)
	}

	s.wal.mu.Lock()
	s.wal.path = path
	s.wal.mu.Unlock()
	if err := s.Enqueue(ctx, msg()); err != nil {
		t.Fatalf("Enqueue once the WAL syncs again: %v", err)
	}
}

// The syncer's handle follows the file at the WAL's path: if the file there
// is replaced, it flushes the new one, never a stale copy.
func TestWALFileFollowsReplacement(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.db-wal")
	if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := openWAL(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	if err := w.sync(); err != nil {
		t.Fatal(err)
	}
	old := w.f

	next := filepath.Join(dir, "next")
	if err := os.WriteFile(next, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(next, path); err != nil {
		t.Fatal(err)
	}
	if err := w.sync(); err != nil {
		t.Fatal(err)
	}
	if w.f == old {
		t.Fatal("sync kept the handle of the replaced file")
	}
	held, _ := w.f.Stat()
	at, _ := os.Stat(path)
	if !os.SameFile(held, at) {
		t.Fatal("the handle is not the file now at the path")
	}

	os.Remove(path)
	if err := w.sync(); err == nil {
		t.Fatal("sync with no WAL at the path succeeded")
	}
	if _, err := openWAL(path); err == nil {
		t.Fatal("openWAL of a missing file succeeded")
	}
}
