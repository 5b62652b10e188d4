package store

import (
	"context"
	"database/sql"
)

// txn is a write transaction of the committer. Its statements are prepared
// once per connection and reused: modernc's SQLite otherwise parses the
// text of every statement at every call, which cost about a tenth of the
// CPU at full submission load (the parser's yy_reduce in the profile).
type txn struct {
	tx    *sql.Tx
	stmts *stmtCache
}

func (t *txn) Exec(query string, args ...any) (sql.Result, error) {
	if st := t.stmts.get(query); st != nil {
		return t.tx.Stmt(st).Exec(args...)
	}
	return t.tx.Exec(query, args...)
}

func (t *txn) Query(query string, args ...any) (*sql.Rows, error) {
	if st := t.stmts.get(query); st != nil {
		return t.tx.Stmt(st).Query(args...)
	}
	return t.tx.Query(query, args...)
}

func (t *txn) QueryRow(query string, args ...any) *sql.Row {
	if st := t.stmts.get(query); st != nil {
		return t.tx.Stmt(st).QueryRow(args...)
	}
	return t.tx.QueryRow(query, args...)
}

// The reads every message makes (at MAIL, for signing, for delivery).
const (
	sqlPausedReason = `SELECT paused_reason FROM credentials WHERE name = ?`
	sqlDomainStatus = `SELECT ` + domainColumns + ` FROM domains WHERE name = ?`
	sqlDomainKeys   = `SELECT selector, algorithm, private_key, created_at, state, active_since, retire_at FROM dkim_keys
		WHERE domain = ? ORDER BY algorithm DESC, selector`
	sqlMessageData = `SELECT body, size FROM messages WHERE id = ?`
)

// hotStatements are prepared when the store opens: every message runs
// them. Others run as text.
var hotStatements = []string{sqlSavepoint, sqlRollbackToSavepoint, sqlReleaseSavepoint, sqlInsertMessage, sqlInsertRecipient, sqlCountSends, sqlInsertEvent, sqlClaimDue,
	sqlLease, sqlLoadDelivery, sqlMessageIdent, sqlRecordOutcome, sqlCountIPSends, sqlDeleteIfFinal, sqlUpsertSuppression,
	sqlPausedReason, sqlDomainStatus, sqlDomainKeys, sqlMessageData, sqlSuppressedOne}

// readRow runs a read outside the committer, prepared when it is hot.
func (s *SQLite) readRow(ctx context.Context, query string, args ...any) *sql.Row {
	if st := s.stmts.get(query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return s.db.QueryRowContext(ctx, query, args...)
}

// readRows is readRow for several rows.
func (s *SQLite) readRows(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := s.stmts.get(query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return s.db.QueryContext(ctx, query, args...)
}

// stmtCache holds prepared statements by their text. database/sql prepares
// a Stmt again on each connection it is used on, once, and keeps those. It
// is filled before the committer starts and only read afterwards: a
// statement prepared in the middle of a transaction would need a second
// connection, which a pool of one does not have.
type stmtCache struct {
	m map[string]*sql.Stmt
}

// prepare prepares queries.
func (c *stmtCache) prepare(db *sql.DB, queries []string) error {
	c.m = map[string]*sql.Stmt{}
	for _, q := range queries {
		st, err := db.Prepare(q)
		if err != nil {
			c.close()
			return err
		}
		c.m[q] = st
	}
	return nil
}

// get returns the prepared statement for query, or nil.
func (c *stmtCache) get(query string) *sql.Stmt { return c.m[query] }

// close releases the statements.
func (c *stmtCache) close() {
	for _, st := range c.m {
		st.Close()
	}
	c.m = nil
}
