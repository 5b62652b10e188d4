package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// The operator's view of the queue: sesame queue list, show, retry, delete.

// QueueEntry is a queued message as the operator sees it.
type QueueEntry struct {
	ID         string           `json:"id"`
	Credential string           `json:"credential"`
	Sender     string           `json:"sender"`
	MessageID  string           `json:"message_id"`
	Size       int              `json:"size"`
	ReceivedAt time.Time        `json:"received_at"`
	Recipients []RecipientEntry `json:"recipients"`
}

// RecipientEntry is one recipient's state in the queue.
type RecipientEntry struct {
	Address     string    `json:"address"`
	State       string    `json:"state"`
	Attempts    int       `json:"attempts"`
	NextAttempt time.Time `json:"next_attempt"`
	LastReply   string    `json:"last_reply"`
}

// QueueMessages lists the messages still in the queue, oldest first.
func (s *SQLite) QueueMessages(ctx context.Context) ([]QueueEntry, error) {
	return s.queueEntries(ctx, "", nil)
}

// QueueMessage returns one queued message; ErrNotFound if it is not queued.
func (s *SQLite) QueueMessage(ctx context.Context, id string) (QueueEntry, error) {
	list, err := s.queueEntries(ctx, "WHERE m.id = ?", []any{id})
	if err != nil {
		return QueueEntry{}, err
	}
	if len(list) == 0 {
		return QueueEntry{}, fmt.Errorf("store: message %s: %w", id, ErrNotFound)
	}
	return list[0], nil
}

func (s *SQLite) queueEntries(ctx context.Context, where string, args []any) ([]QueueEntry, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT m.id, m.credential, m.sender, m.message_id, m.size, m.received_at,
			r.address, r.state, r.attempts, r.next_attempt_at, r.last_reply
		FROM messages m JOIN recipients r ON r.message_id = m.id `+where+`
		ORDER BY m.received_at, m.id, r.address`, args...)
	if err != nil {
		return nil, fmt.Errorf("store: list queue: %w", err)
	}
	defer rows.Close()
	var out []QueueEntry
	for rows.Next() {
		var e QueueEntry
		var r RecipientEntry
		var received, next int64
		if err := rows.Scan(&e.ID, &e.Credential, &e.Sender, &e.MessageID, &e.Size, &received,
			&r.Address, &r.State, &r.Attempts, &next, &r.LastReply); err != nil {
			return nil, fmt.Errorf("store: list queue: %w", err)
		}
		r.NextAttempt = time.Unix(0, next)
		if n := len(out); n > 0 && out[n-1].ID == e.ID {
			out[n-1].Recipients = append(out[n-1].Recipients, r)
			continue
		}
		e.ReceivedAt = time.Unix(0, received)
		e.Recipients = []RecipientEntry{r}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list queue: %w", err)
	}
	return out, nil
}

// MessageData returns the bytes of a queued message. ErrCorrupt covers what
// no retry can repair: pages SQLite finds malformed (SQLITE_CORRUPT), and
// bytes that are not a blob or text, are empty, or differ in length from the
// size Enqueue recorded (truncated, or edited by hand).
func (s *SQLite) MessageData(ctx context.Context, id string) ([]byte, error) {
	var body any // not []byte: a value of another type must be ErrCorrupt, not a Scan error
	var size int64
	err := s.readRow(ctx, sqlMessageData, id).Scan(&body, &size)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("store: message %s: %w", id, ErrNotFound)
	}
	var se *sqlite.Error
	if errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_CORRUPT { // the primary code is the low byte
		return nil, fmt.Errorf("store: message %s: %w: %w", id, ErrCorrupt, err)
	}
	if err != nil {
		return nil, fmt.Errorf("store: read message %s: %w", id, err)
	}
	var data []byte
	switch b := body.(type) {
	case []byte:
		data = b
	case string:
		data = []byte(b)
	default:
		return nil, fmt.Errorf("store: message %s: %w: body is a %T", id, ErrCorrupt, body)
	}
	if len(data) == 0 || int64(len(data)) != size {
		return nil, fmt.Errorf("store: message %s: %w: %d bytes stored, %d enqueued", id, ErrCorrupt, len(data), size)
	}
	return data, nil
}

// RetryNow makes the waiting recipients of message id (of every message
// when id is "") due at now and returns how many there are. Quarantined
// recipients count as waiting: they become deferred, for the operator who
// repaired the message or wants to see it fail again. A running server
// notices within a second (see watchOtherWriters).
func (s *SQLite) RetryNow(ctx context.Context, id string, now time.Time) (int, error) {
	// Mail waiting for warm-up capacity stays parked: a retry cannot make
	// capacity.
	query := `UPDATE recipients SET next_attempt_at = ?,
		state = CASE state WHEN 'quarantined' THEN 'deferred' ELSE state END
		WHERE state IN ('queued', 'deferred', 'quarantined') AND parked = ''`
	args := []any{now.UnixNano()}
	if id != "" {
		query += ` AND message_id = ?`
		args = append(args, id)
	}
	var n int64
	op := &writeOp{enqueues: true, run: func(tx *txn) error {
		res, err := tx.Exec(query, args...)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	}}
	if err := s.write(ctx, op); err != nil {
		return 0, fmt.Errorf("store: retry %s: %w", id, err)
	}
	if id != "" && n == 0 {
		if _, err := s.QueueMessage(ctx, id); err != nil {
			return 0, err
		}
	}
	return int(n), nil
}

// DeleteMessage removes message id from the queue and, in the same
// transaction, queues notice (a DSN to its sender) when it is not nil.
func (s *SQLite) DeleteMessage(ctx context.Context, id string, notice *Message) error {
	if notice != nil && notice.ID == "" {
		notice.ID = NewQueueID()
	}
	op := &writeOp{enqueues: notice != nil, run: func(tx *txn) error {
		res, err := tx.Exec(`DELETE FROM messages WHERE id = ?`, id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err == nil && n == 0 {
			return ErrNotFound
		}
		if notice != nil {
			return insertMessage(tx, notice)
		}
		return nil
	}}
	if err := s.write(ctx, op); err != nil {
		return fmt.Errorf("store: delete message %s: %w", id, err)
	}
	return nil
}

// QueueDepth counts the waiting recipients per state (queued, deferred,
// quarantined) and returns the age of the oldest message still in the queue.
func (s *SQLite) QueueDepth(ctx context.Context) (map[string]int, time.Duration, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT state, COUNT(*) FROM recipients
		WHERE state IN ('queued', 'deferred', 'quarantined') GROUP BY state`)
	if err != nil {
		return nil, 0, fmt.Errorf("store: queue depth: %w", err)
	}
	defer rows.Close()
	depth := map[string]int{}
	for rows.Next() {
		var state string
		var n int
		if err := rows.Scan(&state, &n); err != nil {
			return nil, 0, fmt.Errorf("store: queue depth: %w", err)
		}
		depth[state] = n
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("store: queue depth: %w", err)
	}
	var oldest sql.NullInt64
	if err := s.db.QueryRowContext(ctx, `SELECT MIN(received_at) FROM messages`).Scan(&oldest); err != nil {
		return nil, 0, fmt.Errorf("store: queue depth: %w", err)
	}
	var age time.Duration
	if oldest.Valid {
		age = time.Since(time.Unix(0, oldest.Int64))
	}
	return depth, age, nil
}
