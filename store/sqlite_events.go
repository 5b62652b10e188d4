package store

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// sqlInsertEvent is a hot statement (txn.go).
const sqlInsertEvent = `INSERT INTO events (at, type, credential, queue_id, message_id, recipient, remote_mta, reply, bounce_type, count)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`

func insertEvent(tx *txn, e Event) error {
	_, err := tx.Exec(sqlInsertEvent, e.At.UnixNano(), e.Type, e.Credential, e.QueueID, e.MessageID,
		e.Recipient, e.RemoteMTA, e.Reply, e.BounceType, max(1, e.Count))
	return err
}

// RecordEvent stores e through the committer, so bursts share commits.
func (s *SQLite) RecordEvent(ctx context.Context, e Event) error {
	if err := s.write(ctx, &writeOp{run: func(tx *txn) error { return insertEvent(tx, e) }}); err != nil {
		return fmt.Errorf("store: record event: %w", err)
	}
	return nil
}

// eventWhere builds the WHERE clause of q.
func eventWhere(q EventQuery, withType bool) (string, []any) {
	var conds []string
	var args []any
	if !q.Since.IsZero() {
		conds, args = append(conds, "at >= ?"), append(args, q.Since.UnixNano())
	}
	if q.Credential != "" {
		conds, args = append(conds, "credential = ?"), append(args, q.Credential)
	}
	if withType && q.Type != "" {
		conds, args = append(conds, "type = ?"), append(args, q.Type)
	}
	if q.Recipient != "" {
		conds, args = append(conds, "recipient = ? COLLATE NOCASE"), append(args, q.Recipient)
	}
	if q.ExcludeDomain != "" {
		conds, args = append(conds, "recipient NOT LIKE ?"), append(args, "%@"+q.ExcludeDomain)
	}
	if len(conds) == 0 {
		return "", nil
	}
	return " WHERE " + strings.Join(conds, " AND "), args
}

// QueryEvents returns the events matching q, oldest first.
func (s *SQLite) QueryEvents(ctx context.Context, q EventQuery) ([]Event, error) {
	where, args := eventWhere(q, true)
	query := `SELECT ` + eventColumns + ` FROM events` + where + ` ORDER BY id`
	if q.Limit > 0 {
		// The newest Limit events, still returned oldest first.
		query = `SELECT * FROM (` + strings.Replace(query, "ORDER BY id", "ORDER BY id DESC", 1) +
			fmt.Sprintf(` LIMIT %d) ORDER BY id`, q.Limit)
	}
	out, err := s.selectEvents(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("store: query events: %w", err)
	}
	return out, nil
}

// eventColumns are what selectEvents scans.
const eventColumns = `id, at, type, credential, queue_id, message_id, recipient, remote_mta, reply, bounce_type, count`

// selectEvents runs query, which selects eventColumns, and scans the rows.
func (s *SQLite) selectEvents(ctx context.Context, query string, args ...any) ([]Event, error) {
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		var e Event
		var at int64
		if err := rows.Scan(&e.ID, &at, &e.Type, &e.Credential, &e.QueueID, &e.MessageID, &e.Recipient,
			&e.RemoteMTA, &e.Reply, &e.BounceType, &e.Count); err != nil {
			return nil, err
		}
		e.At = time.Unix(0, at)
		out = append(out, e)
	}
	return out, rows.Err()
}

// CountEvents counts the events matching q by type: what they stand for
// (a reject's Count), not rows.
func (s *SQLite) CountEvents(ctx context.Context, q EventQuery) (map[string]int, error) {
	where, args := eventWhere(q, false)
	rows, err := s.db.QueryContext(ctx, `SELECT CASE WHEN bounce_type = '' THEN type ELSE type || ':' || bounce_type END,
		SUM(count) FROM events`+where+` GROUP BY 1`, args...)
	if err != nil {
		return nil, fmt.Errorf("store: count events: %w", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var t string
		var n int
		if err := rows.Scan(&t, &n); err != nil {
			return nil, fmt.Errorf("store: count events: %w", err)
		}
		out[t] = n
		if base, _, ok := strings.Cut(t, ":"); ok {
			out[base] += n
		}
	}
	return out, rows.Err()
}

// PruneEvents deletes the events older than before (and old send counts,
// which only the last day's quota reads).
func (s *SQLite) PruneEvents(ctx context.Context, before time.Time) (int, error) {
	var n int64
	op := &writeOp{run: func(tx *txn) error {
		res, err := tx.Exec(`DELETE FROM events WHERE at < ?`, before.UnixNano())
		if err != nil {
			return err
		}
		n, _ = res.RowsAffected()
		sendsBefore := time.Now().Add(-48 * time.Hour)
		if before.Before(sendsBefore) {
			sendsBefore = before
		}
		if _, err = tx.Exec(`DELETE FROM sends WHERE hour < ?`, sendsBefore.Unix()); err != nil {
			return err
		}
		_, err = tx.Exec(`DELETE FROM inbound WHERE received_at < ?`, before.UnixNano())
		return err
	}}
	if err := s.write(ctx, op); err != nil {
		return 0, fmt.Errorf("store: prune events: %w", err)
	}
	return int(n), nil
}
