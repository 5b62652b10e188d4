package store

import (
	"fmt"
	"os"
	"sync"
)

// walFile is the store's own handle on SQLite's WAL file (the database path
// with "-wal"), which the syncer fsyncs after the committer's commits. An
// fsync through any descriptor of a file makes all of its written data
// durable, so this handle covers the frames the committer's connection wrote.
//
// SQLite keeps the same file while any connection is open (it truncates or
// rewrites it in place); it deletes it only when the last connection closes.
// sync still checks that the path names the file it holds, and reopens it
// if not, so a replaced file is never silently left unsynced.
type walFile struct {
	path string

	mu sync.Mutex // only the syncer calls sync; close may come from Close
	f  *os.File
}

// openWAL opens the WAL at path. It must exist: the store opens it after
// its first transaction in WAL mode.
func openWAL(path string) (*walFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open the WAL: %w", err)
	}
	return &walFile{path: path, f: f}, nil
}

// sync makes everything written to the WAL so far durable.
func (w *walFile) sync() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.current(); err != nil {
		return err
	}
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("store: fsync %s: %w", w.path, err)
	}
	return nil
}

// current reopens the file at w.path if w.f is no longer it.
func (w *walFile) current() error {
	at, err := os.Stat(w.path)
	if err != nil {
		return fmt.Errorf("store: the WAL %s: %w", w.path, err)
	}
	held, err := w.f.Stat()
	if err == nil && os.SameFile(at, held) {
		return nil
	}
	f, err := os.Open(w.path)
	if err != nil {
		return fmt.Errorf("store: reopen the WAL: %w", err)
	}
	w.f.Close()
	w.f = f
	return nil
}

func (w *walFile) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.f.Close()
}
