package store

import (
	"context"
	"errors"
	"fmt"
)

// The committer: every hot-path write goes through commitLoop, which runs
// the writes waiting at that moment in one transaction (group commit), and
// syncLoop, which fsyncs the WAL after those commits and only then answers
// them. See SQLite's doc comment for why the fsync is done apart.

// writeOp is one unit of work for the committer. Its error is reported on
// errc after the transaction holding it has committed (or failed).
type writeOp struct {
	run      func(tx *txn) error
	enqueues bool // signals Ready after commit
	errc     chan error
}

// openCommitter takes the committer's connection and the WAL file it syncs.
func (s *SQLite) openCommitter(path string) error {
	conn, err := s.db.Conn(context.Background())
	if err != nil {
		return err
	}
	// NORMAL: the commit writes the WAL without an fsync; the syncer does it.
	// temp_store=MEMORY keeps the savepoints' sub-journal (the pages an op
	// changed, kept to roll just that op back) in memory: by default it
	// spills to a temporary file past 64 KiB, which a batch of a dozen
	// messages passes, and writing it took a fifth of the committer's CPU
	// (_subjournalPage in a profile of store's churn benchmark).
	for _, pragma := range []string{`PRAGMA synchronous = NORMAL`, `PRAGMA temp_store = MEMORY`} {
		if _, err := conn.ExecContext(context.Background(), pragma); err != nil {
			conn.Close()
			return err
		}
	}
	wal, err := openWAL(path + "-wal")
	if err != nil {
		conn.Close()
		return err
	}
	s.conn, s.wal = conn, wal
	return nil
}

var errClosed = errors.New("store: closed")

// write hands op to the committer and waits for its commit.
func (s *SQLite) write(ctx context.Context, op *writeOp) error {
	op.errc = make(chan error, 1)
	select {
	case s.ops <- op:
	case <-s.stop:
		return errClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	// Once handed over, the op will run: wait for its result even if ctx ends,
	// so the caller never reports failure for a write that then commits.
	return <-op.errc
}

func (s *SQLite) commitLoop() {
	defer close(s.syncq)
	for {
		var first *writeOp
		select {
		case first = <-s.ops:
		case <-s.stop:
			// Drain what was handed over before stopping.
			for {
				select {
				case op := <-s.ops:
					s.commit([]*writeOp{op})
				default:
					return
				}
			}
		}
		batch := []*writeOp{first}
	collect:
		for len(batch) < maxBatchOps {
			select {
			case op := <-s.ops:
				batch = append(batch, op)
			default:
				break collect
			}
		}
		s.commit(batch)
	}
}

// The savepoint around each op of a batch, prepared once (txn.go).
const (
	sqlSavepoint           = `SAVEPOINT op`
	sqlRollbackToSavepoint = `ROLLBACK TO op`
	sqlReleaseSavepoint    = `RELEASE op`
)

// commit runs batch in one transaction. Each op runs inside a savepoint so
// that one failing op (say, a constraint) does not fail the others.
func (s *SQLite) commit(batch []*writeOp) {
	errs := make([]error, len(batch))
	fail := func(err error) {
		err = s.health.noteFailure(err, errs)
		for _, op := range batch {
			op.errc <- err
		}
	}
	tx, err := s.conn.BeginTx(context.Background(), nil)
	if err != nil {
		fail(fmt.Errorf("store: begin: %w", err))
		return
	}
	t := &txn{tx: tx, stmts: &s.stmts}
	for i, op := range batch {
		if len(batch) == 1 {
			errs[i] = op.run(t)
			continue
		}
		if _, err := t.Exec(sqlSavepoint); err != nil {
			tx.Rollback()
			fail(fmt.Errorf("store: savepoint: %w", err))
			return
		}
		errs[i] = op.run(t)
		if errs[i] != nil {
			if _, err := t.Exec(sqlRollbackToSavepoint); err != nil {
				tx.Rollback()
				fail(fmt.Errorf("store: rollback to savepoint: %w", err))
				return
			}
		}
		if _, err := t.Exec(sqlReleaseSavepoint); err != nil {
			tx.Rollback()
			fail(fmt.Errorf("store: release savepoint: %w", err))
			return
		}
	}
	if err := tx.Commit(); err != nil {
		fail(fmt.Errorf("store: commit: %w", err))
		return
	}
	s.commits.Add(1)
	s.health.noteCommitted(errs)
	s.syncq <- committed{batch: batch, errs: errs}
}

// committed is a batch whose transaction committed but is not yet fsynced.
type committed struct {
	batch []*writeOp
	errs  []error
}

// syncLoop makes committed batches durable and then answers them: one fsync
// of the WAL for every batch that committed while the previous one ran.
func (s *SQLite) syncLoop() {
	defer close(s.done)
	for c := range s.syncq {
		group := []committed{c}
	more:
		for {
			select {
			case c, ok := <-s.syncq:
				if !ok {
					break more
				}
				group = append(group, c)
			default:
				break more
			}
		}
		err := s.wal.sync()
		if err != nil {
			err = s.health.noteFailure(err, nil)
		}
		// Signal before answering, so a caller that sees its write done also
		// finds Ready signalled.
		enqueued := false
		for _, c := range group {
			for i, op := range c.batch {
				if err != nil && c.errs[i] == nil {
					// Committed but maybe not on disk: report it failed, so the
					// client keeps the message (a duplicate at worst).
					c.errs[i] = err
				}
				enqueued = enqueued || (c.errs[i] == nil && op.enqueues)
			}
		}
		if enqueued {
			s.signalReady()
		}
		for _, c := range group {
			for i, op := range c.batch {
				op.errc <- c.errs[i]
			}
		}
	}
}
