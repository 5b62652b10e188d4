package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// The events table is the webhooks' durable queue: each endpoint keeps a
// cursor (the id of the last event it has dealt with) in webhook_cursors and
// reads the events after it. Ids are handed out in commit order (SQLite has
// one writer, and AUTOINCREMENT never reuses an id that was committed), so
// once LastEventID returns n, no event with an id up to n can appear later:
// a reader that has seen every matching event up to n may move its cursor to
// n. A PostgreSQL implementation must keep that promise too (sequence values
// are not committed in order there: it has to serialise event inserts or
// bound reads by the oldest transaction still open).

// EventFilter selects the events one webhook endpoint receives; zero fields
// match everything.
type EventFilter struct {
	Types      []string // event types; empty: all
	Credential string   // "" : every credential's (and Sesame's own)
}

// WebhookCursor is where one webhook endpoint stands in the event stream.
type WebhookCursor struct {
	Endpoint    string    // the endpoint's stable key
	LastEvent   int64     // every event up to this id has been delivered or given up
	Attempts    int       // consecutive failed attempts since the last success; 0 when healthy
	NextAttempt time.Time // when the next attempt is due after a failure; zero when healthy
	LastError   string    // the last failure, "" when healthy
}

// LastEventID returns the highest event id committed, 0 if there is none.
// Every event with a lower id is already visible (see above).
func (s *SQLite) LastEventID(ctx context.Context) (int64, error) {
	var id sql.NullInt64
	if err := s.db.QueryRowContext(ctx, `SELECT MAX(id) FROM events`).Scan(&id); err != nil {
		return 0, fmt.Errorf("store: last event id: %w", err)
	}
	return id.Int64, nil
}

// webhookWhere is the condition of the events in (after, through] that f
// selects.
func webhookWhere(after, through int64, f EventFilter) (string, []any) {
	where := ` WHERE id > ? AND id <= ?`
	args := []any{after, through}
	if len(f.Types) > 0 {
		where += ` AND type IN (?` + strings.Repeat(`, ?`, len(f.Types)-1) + `)`
		for _, t := range f.Types {
			args = append(args, t)
		}
	}
	if f.Credential != "" {
		// The unary + keeps SQLite off the events_credential index, which
		// would have it read every event of the credential and sort them
		// instead of walking the ids after the cursor.
		where += ` AND +credential = ?`
		args = append(args, f.Credential)
	}
	return where, args
}

// EventsAfter returns, oldest first, at most limit of the events with an id
// in (after, through] that f selects. Fewer than limit means that these are
// all of them.
func (s *SQLite) EventsAfter(ctx context.Context, after, through int64, f EventFilter, limit int) ([]Event, error) {
	if limit <= 0 || through <= after {
		return nil, nil
	}
	where, args := webhookWhere(after, through, f)
	rows, err := s.db.QueryContext(ctx, `SELECT `+eventColumns+` FROM events`+where+` ORDER BY id LIMIT ?`, append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("store: events after %d: %w", after, err)
	}
	defer rows.Close()
	out := make([]Event, 0, min(limit, 128))
	for rows.Next() {
		var e Event
		var at int64
		if err := rows.Scan(&e.ID, &at, &e.Type, &e.Credential, &e.QueueID, &e.MessageID, &e.Recipient,
			&e.RemoteMTA, &e.Reply, &e.BounceType, &e.Count); err != nil {
			return nil, fmt.Errorf("store: events after %d: %w", after, err)
		}
		e.At = time.Unix(0, at)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: events after %d: %w", after, err)
	}
	return out, nil
}

// CountEventsAfter counts the events with an id in (after, through] that f
// selects: an endpoint's backlog.
func (s *SQLite) CountEventsAfter(ctx context.Context, after, through int64, f EventFilter) (int, error) {
	if through <= after {
		return 0, nil
	}
	where, args := webhookWhere(after, through, f)
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM events`+where, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("store: count events after %d: %w", after, err)
	}
	return n, nil
}

// WebhookCursor returns the cursor of endpoint; ErrNotFound if it has none
// yet.
func (s *SQLite) WebhookCursor(ctx context.Context, endpoint string) (WebhookCursor, error) {
	c := WebhookCursor{Endpoint: endpoint}
	var next int64
	err := s.db.QueryRowContext(ctx, `SELECT last_event, attempts, next_attempt, last_error
		FROM webhook_cursors WHERE endpoint = ?`, endpoint).Scan(&c.LastEvent, &c.Attempts, &next, &c.LastError)
	if errors.Is(err, sql.ErrNoRows) {
		return WebhookCursor{}, ErrNotFound
	}
	if err != nil {
		return WebhookCursor{}, fmt.Errorf("store: webhook cursor %s: %w", endpoint, err)
	}
	c.NextAttempt = fromNano(next)
	return c, nil
}

// SaveWebhookCursor creates or replaces the cursor of c.Endpoint, durably. It
// goes through the committer, so it shares commits with the mail flow rather
// than competing with it for the write lock.
func (s *SQLite) SaveWebhookCursor(ctx context.Context, c WebhookCursor) error {
	op := &writeOp{run: func(tx *txn) error {
		_, err := tx.Exec(`INSERT INTO webhook_cursors (endpoint, last_event, attempts, next_attempt, last_error)
			VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (endpoint) DO UPDATE SET last_event = excluded.last_event, attempts = excluded.attempts,
				next_attempt = excluded.next_attempt, last_error = excluded.last_error`,
			c.Endpoint, c.LastEvent, c.Attempts, unixNano(c.NextAttempt), c.LastError)
		return err
	}}
	if err := s.write(ctx, op); err != nil {
		return fmt.Errorf("store: save webhook cursor %s: %w", c.Endpoint, err)
	}
	return nil
}
