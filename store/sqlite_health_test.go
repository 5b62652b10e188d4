package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func TestIsStorageFull(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errors.New("database or disk is full"), false}, // only the code counts, not words
		{fmt.Errorf("spool: %w", &fs.PathError{Op: "write", Path: "/x", Err: syscall.ENOSPC}), true},
		{fmt.Errorf("spool: %w", syscall.EDQUOT), true},
		{syscall.EIO, false},
		{ErrNotFound, false},
	} {
		if got := IsStorageFull(tt.err); got != tt.want {
			t.Errorf("IsStorageFull(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

// TestStorageFull fills the database to SQLite's max_page_count, which fails
// a write with SQLITE_FULL as a full disk does, without needing a small file
// system: the enqueue fails as storage-full, CheckStorage reports it until
// the probe finds room (the disk here has plenty), and writes work again.
func TestStorageFull(t *testing.T) {
	s, err := OpenSQLite(filepath.Join(t.TempDir(), "sesame.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	// max_page_count belongs to a connection: set it on the committer's.
	var pages int
	if err := s.conn.QueryRowContext(ctx, `PRAGMA page_count`).Scan(&pages); err != nil {
		t.Fatal(err)
	}
	if _, err := s.conn.ExecContext(ctx, fmt.Sprintf(`PRAGMA max_page_count = %d`, pages+8)); err != nil {
		t.Fatal(err)
	}
	if err := s.CheckStorage(ctx); err != nil {
		t.Fatalf("CheckStorage before any failure: %v", err)
	}

	// The INSERT itself fails, and SQLite rolls the whole transaction back;
	// concurrent enqueues share it (savepoints), and all must be told why.
	errs := make(chan error, 8)
	for range cap(errs) {
		go func() {
			errs <- s.Enqueue(ctx, &Message{Credential: "c", Sender: "a@example.com",
				Recipients: []string{"b@example.net"}, ReceivedAt: time.Now(), Data: make([]byte, 256<<10)})
		}()
	}
	for range cap(errs) {
		if err := <-errs; !IsStorageFull(err) {
			t.Errorf("Enqueue past max_page_count: %v, want an error IsStorageFull recognises", err)
		}
	}
	if s.health.full.Load() == nil {
		t.Fatal("after the failures the store does not remember it is full")
	}

	// A probe that cannot be written keeps the store not writable.
	if err := s.health.probe(filepath.Join(t.TempDir(), "gone")); err == nil {
		t.Error("a probe in a missing directory succeeded")
	}
	// Here the disk has room, so CheckStorage's probe clears the state.
	s.health.probeErr = nil
	if err := s.CheckStorage(ctx); err != nil {
		t.Fatalf("CheckStorage with room on disk: %v", err)
	}
	if s.health.full.Load() != nil {
		t.Fatal("CheckStorage found room but the store still counts as full")
	}

	// Room in the database again: writes succeed.
	if _, err := s.conn.ExecContext(ctx, `PRAGMA max_page_count = 1073741823`); err != nil {
		t.Fatal(err)
	}
	m := &Message{Credential: "c", Sender: "a@example.com", Recipients: []string{"b@example.net"}, ReceivedAt: time.Now(), Data: []byte("x")}
	if err := s.Enqueue(ctx, m); err != nil {
		t.Fatalf("Enqueue after room was made: %v", err)
	}
}

func TestStorageFullNoted(t *testing.T) {
	full := &fs.PathError{Op: "write", Path: "/x", Err: syscall.ENOSPC}
	var h storageHealth
	// An operation out of space, then the rolled-back transaction's own
	// error: the cause comes first.
	err := h.noteFailure(errors.New("cannot commit - no transaction is active"), []error{nil, full})
	if !IsStorageFull(err) || h.full.Load() == nil {
		t.Fatalf("noteFailure returned %v and full=%v, want the space error first and full set", err, h.full.Load())
	}
	since := h.full.Load().since
	h.noteFailure(full, nil)
	if h.full.Load().since != since {
		t.Error("a second failure moved the time the store became full")
	}
	h.noteFailure(errors.New("database is locked"), nil)
	if h.full.Load() == nil {
		t.Error("an unrelated error cleared the full state")
	}
	// A transaction that wrote nothing commits on a full disk too: only
	// the probe clears the state.
	h.noteCommitted([]error{nil, errors.New("UNIQUE constraint failed")})
	if h.full.Load() == nil {
		t.Error("a commit cleared the full state")
	}
	var h2 storageHealth
	h2.noteCommitted([]error{nil, full})
	if h2.full.Load() == nil {
		t.Error("a committed batch with an operation out of space did not set the full state")
	}
}

// TestNoteStorageFull: a write beside the database that found no room
// (a spool file) makes CheckStorage report the disk full until the probe
// finds room, as a failed transaction does; other errors change nothing.
func TestNoteStorageFull(t *testing.T) {
	s, err := OpenSQLite(filepath.Join(t.TempDir(), "sesame.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.NoteStorageFull(syscall.EIO)
	if s.health.full.Load() != nil {
		t.Fatal("an I/O error counted as a full disk")
	}
	s.NoteStorageFull(&fs.PathError{Op: "write", Path: "/spool", Err: syscall.ENOSPC})
	if s.health.full.Load() == nil {
		t.Fatal("ENOSPC writing a spool file was not noted")
	}
	// The disk here has room: the probe clears it at the next check.
	if err := s.CheckStorage(context.Background()); err != nil {
		t.Fatalf("CheckStorage with room on the disk: %v", err)
	}
	if s.health.full.Load() != nil {
		t.Fatal("still noted full after a good probe")
	}
}
