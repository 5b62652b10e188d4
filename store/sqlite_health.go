package store

// What the SQLite store does when its disk fills up.
//
// SQLite reports a write that found no room as SQLITE_FULL ("database or disk
// is full"; its Unix VFS turns ENOSPC into that code), or as
// SQLITE_IOERR_SHMSIZE when the WAL index could not grow. The transaction is
// rolled back whole, so nothing already committed is harmed and nothing half
// written is acknowledged: the caller gets an error for which IsStorageFull is
// true, and the submission service turns it into a temporary refusal
// (452 4.3.1), which makes the client keep the message and retry.
//
// The committer remembers that a transaction failed for lack of space, and
// CheckStorage reports it (readiness, and the check at MAIL FROM) until a
// probe file of probeSize bytes can be written and synced next to the
// database. Nothing has to be restarted when an operator frees space.

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// ErrStorageFull is wrapped by CheckStorage's error while the store cannot
// write for lack of space.
var ErrStorageFull = errors.New("insufficient storage")

// IsStorageFull reports whether err is a write that failed for lack of space
// on the store's file system (or its quota), as opposed to any other failure.
func IsStorageFull(err error) bool {
	if err == nil {
		return false
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		code := se.Code() // an extended result code: the primary one is its low byte
		return code&0xff == sqlite3.SQLITE_FULL || code == sqlite3.SQLITE_IOERR_SHMSIZE
	}
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

const (
	// probeSize is how much must be writable next to the database before a
	// store that ran out of space counts as writable again: a typical
	// message with its queue rows, index pages and WAL frames fits.
	probeSize = 1 << 20
	// probeEvery bounds how often a failing probe is repeated, however many
	// readiness checks and MAIL commands ask.
	probeEvery = time.Second
)

// storageHealth is what the committer learnt of the disk.
type storageHealth struct {
	full atomic.Pointer[storageFailure] // nil: no write has failed for lack of space since the last good probe

	probeMu  sync.Mutex // one probe at a time: concurrent probes could fill a nearly full disk
	probedAt time.Time  // when the last failed probe ran
	probeErr error      // its error
}

// storageFailure is a run of transactions that failed for lack of space.
type storageFailure struct {
	since time.Time // the first failure
	err   error     // the first failure's error
}

// noteFailure records a committer transaction that failed with err, after
// its operations returned opErrs, and returns the error to give its
// operations. An operation that runs out of space can make SQLite roll the
// whole transaction back at once; what fails next ("no such savepoint",
// "cannot commit - no transaction is active") then hides the cause, so the
// cause is put first. Only the committer calls it, in commit order.
func (h *storageHealth) noteFailure(err error, opErrs []error) error {
	if !IsStorageFull(err) {
		if full := firstStorageFull(opErrs); full != nil {
			err = fmt.Errorf("%w (then %v)", full, err)
		}
	}
	if IsStorageFull(err) && h.full.Load() == nil {
		h.full.Store(&storageFailure{since: time.Now(), err: err})
	}
	// Any other error (busy, a cancelled context) says nothing about space.
	return err
}

// noteCommitted records a committer transaction that committed. One of its
// operations may still have failed for lack of space (and been rolled back
// to its savepoint). A commit does not clear the state, though: a
// transaction that wrote nothing (a Claim with nothing due) commits on a full
// disk too. Only CheckStorage's probe says there is room again.
func (h *storageHealth) noteCommitted(opErrs []error) {
	if full := firstStorageFull(opErrs); full != nil {
		h.noteFailure(full, nil)
	}
}

func firstStorageFull(errs []error) error {
	for _, err := range errs {
		if IsStorageFull(err) {
			return err
		}
	}
	return nil
}

// NoteStorageFull records that a write next to the database failed for lack
// of space (err, for which IsStorageFull is true): the submission service's
// spool files live in the data directory too, and their disk filling is
// the store's disk filling. CheckStorage then reports it, as after a
// transaction that failed, until its probe finds room. Other errors are
// ignored.
func (s *SQLite) NoteStorageFull(err error) {
	if IsStorageFull(err) {
		s.health.full.CompareAndSwap(nil, &storageFailure{since: time.Now(), err: err})
	}
}

// CheckStorage returns nil while the store can write, and an error wrapping
// ErrStorageFull, saying what failed since when and what to do, after a
// transaction failed for lack of space and until there is room again. It
// costs nothing while writes succeed; after a failure it probes the file
// system (at most once a second while the probe fails).
func (s *SQLite) CheckStorage(ctx context.Context) error {
	f := s.health.full.Load()
	if f == nil {
		return nil
	}
	var path string
	if err := s.db.QueryRowContext(ctx, `SELECT file FROM pragma_database_list WHERE name = 'main'`).Scan(&path); err != nil {
		return fmt.Errorf("%w: writes have failed since %s (%v); locating the database: %v",
			ErrStorageFull, f.since.Format(time.RFC3339), f.err, err)
	}
	dir := filepath.Dir(path)
	if err := s.health.probe(dir); err != nil {
		return fmt.Errorf("%w: writes to %s have failed since %s (%v) and %v; free space on that file system: "+
			"Sesame takes mail again by itself once it can write", ErrStorageFull, path, f.since.Format(time.RFC3339), f.err, err)
	}
	// Room again. Clear only the failure probed for: a newer one stays.
	s.health.full.CompareAndSwap(f, nil)
	return nil
}

// probe writes and syncs probeSize bytes in dir, then removes them.
func (h *storageHealth) probe(dir string) error {
	h.probeMu.Lock()
	defer h.probeMu.Unlock()
	if h.probeErr != nil && time.Since(h.probedAt) < probeEvery {
		return h.probeErr
	}
	h.probeErr, h.probedAt = writeProbe(dir), time.Now()
	return h.probeErr
}

func writeProbe(dir string) error {
	f, err := os.CreateTemp(dir, ".sesame-space-probe-*")
	if err != nil {
		return fmt.Errorf("a space probe could not be created: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	// Random bytes: a compressing file system (btrfs, ZFS) would store
	// zeros in no space at all.
	buf := make([]byte, 64<<10)
	rand.Read(buf)
	for n := 0; n < probeSize; n += len(buf) {
		if _, err := f.Write(buf); err != nil {
			return fmt.Errorf("a %d KiB space probe could not be written: %w", probeSize>>10, err)
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("a %d KiB space probe could not be synced: %w", probeSize>>10, err)
	}
	return nil
}
