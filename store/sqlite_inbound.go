package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Mail received by the inbound listener: asynchronous bounces (DSNs) and
// complaints (ARF reports), kept with what was made of them.

// Inbound message statuses.
const (
	InboundProcessed = "processed" // events recorded
	InboundUnmatched = "unmatched" // parsed, but about no message Sesame remembers
	InboundIgnored   = "ignored"   // parsed, nothing to record (a delay notice, a not-spam report)
	InboundUnparsed  = "unparsed"  // not a report Sesame understands: for the operator
	// InboundUnverified is a report that did not prove who sent it, or was
	// not examined (its client was over its processing budget): kept for
	// the operator, it recorded nothing.
	InboundUnverified = "unverified"
)

// InboundMessage is one message the inbound listener accepted.
type InboundMessage struct {
	ID         int64
	ReceivedAt time.Time
	Client     string // the IP address of the client that sent it
	MailFrom   string
	RcptTo     string // the recipients, space separated
	Kind       string // "dsn", "arf", or "" when unparsed
	Status     string // InboundProcessed etc.
	Detail     string // what was done, or why not
	// Verified says the report proved who sent it (package inbound decides
	// what counts); Verification is that proof, or why there was none (""
	// when nothing needed proving, such as an unparsed message).
	Verified     bool
	Verification string
	Size         int64  // bytes received; more than len(Raw) when only the start is kept
	Raw          []byte // the bytes kept (the start of the message); empty in lists
	// Set when read back (RecordInbound ignores them):
	Kept      int64 // what the row counts against an InboundLimit, see StoredBytes
	Truncated bool  // fewer bytes kept than received
}

// StoredBytes is what keeping m counts against an InboundLimit: its raw
// bytes and its text fields.
func (m InboundMessage) StoredBytes() int64 {
	return int64(len(m.Raw) + len(m.MailFrom) + len(m.RcptTo) + len(m.Kind) + len(m.Status) + len(m.Detail) + len(m.Verification))
}

// InboundLimit bounds what the inbound table holds in total; a zero field
// bounds nothing.
type InboundLimit struct {
	Messages int
	Bytes    int64
}

// InboundTotals is what the inbound table holds, or what a purge removed.
type InboundTotals struct {
	Messages int
	Bytes    int64 // as StoredBytes counts them
}

// InboundFilter selects inbound messages to purge; zero fields match
// everything.
type InboundFilter struct {
	Before time.Time // received before this time
	Status string
	Client string
}

// ErrInboundFull is returned (wrapped) by RecordInbound when keeping the
// message would take the inbound table past the limit it was given.
var ErrInboundFull = errors.New("inbound storage limit reached")

// Inbound stores inbound messages and looks up the mail they are about.
type Inbound interface {
	// RecordInbound stores m and, in the same transaction, the events it
	// gave (an event already recorded for the same type, queue id and
	// recipient is not recorded twice) and the suppressions; it returns
	// m's id. When storing m would take the inbound table past limit, it
	// stores nothing and returns an error wrapping ErrInboundFull; the
	// check and the insert are one transaction, so concurrent callers
	// never pass the limit together.
	RecordInbound(ctx context.Context, m InboundMessage, events []Event, sups []Suppression, limit InboundLimit) (int64, error)
	// InboundMessages lists the newest limit messages, newest first,
	// without their bytes; status "" lists every status.
	InboundMessages(ctx context.Context, status string, limit int) ([]InboundMessage, error)
	InboundMessage(ctx context.Context, id int64) (InboundMessage, error)
	// InboundTotals returns what the inbound table holds.
	InboundTotals(ctx context.Context) (InboundTotals, error)
	// DeleteInbound deletes one inbound message; ErrNotFound if absent.
	DeleteInbound(ctx context.Context, id int64) error
	// PurgeInbound deletes the inbound messages f matches and returns
	// what they held.
	PurgeInbound(ctx context.Context, f InboundFilter) (InboundTotals, error)
	// SendEvents returns the send events of a queue id, or of a
	// Message-ID header when queueID is "".
	SendEvents(ctx context.Context, queueID, messageID string) ([]Event, error)
}

var _ Inbound = (*SQLite)(nil)

const sqlInboundTotals = `SELECT messages, bytes FROM inbound_usage WHERE id = 1`

// RecordInbound stores m with its events and suppressions, within limit.
func (s *SQLite) RecordInbound(ctx context.Context, m InboundMessage, events []Event, sups []Suppression, limit InboundLimit) (int64, error) {
	var id int64
	kept := m.StoredBytes()
	op := &writeOp{run: func(tx *txn) error {
		if limit != (InboundLimit{}) {
			var t InboundTotals
			if err := tx.QueryRow(sqlInboundTotals).Scan(&t.Messages, &t.Bytes); err != nil {
				return err
			}
			if (limit.Messages > 0 && t.Messages+1 > limit.Messages) || (limit.Bytes > 0 && t.Bytes+kept > limit.Bytes) {
				return fmt.Errorf("%w: %d messages of %d bytes kept, a limit of %d messages and %d bytes",
					ErrInboundFull, t.Messages, t.Bytes, limit.Messages, limit.Bytes)
			}
		}
		res, err := tx.Exec(`INSERT INTO inbound (received_at, client, mail_from, rcpt_to, kind, status, detail, verified, verification, size, kept, raw)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, m.ReceivedAt.UnixNano(), m.Client, m.MailFrom, m.RcptTo, m.Kind, m.Status, m.Detail,
			m.Verified, m.Verification, max(m.Size, int64(len(m.Raw))), kept, m.Raw)
		if err != nil {
			return err
		}
		if id, err = res.LastInsertId(); err != nil {
			return err
		}
		for _, e := range events {
			var dup int
			err := tx.QueryRow(sqlCountSameEvent, e.Type, e.QueueID, e.Recipient).Scan(&dup)
			if err != nil {
				return err
			}
			if dup > 0 {
				continue // the same report twice, or a bounce already seen in the SMTP session
			}
			if err := insertEvent(tx, e); err != nil {
				return err
			}
		}
		for _, sup := range sups {
			if err := s.upsertSuppression(tx, sup); err != nil {
				return err
			}
		}
		return nil
	}}
	if err := s.write(ctx, op); err != nil {
		return 0, fmt.Errorf("store: record inbound message: %w", err)
	}
	return id, nil
}

// inboundColumns are the columns of a listed inbound message (no bytes).
const inboundColumns = `id, received_at, client, mail_from, rcpt_to, kind, status, detail, verified, verification, size, kept, length(raw) < size`

func scanInbound(scan func(...any) error, extra ...any) (InboundMessage, error) {
	var m InboundMessage
	var at int64
	err := scan(append([]any{&m.ID, &at, &m.Client, &m.MailFrom, &m.RcptTo, &m.Kind, &m.Status, &m.Detail,
		&m.Verified, &m.Verification, &m.Size, &m.Kept, &m.Truncated}, extra...)...)
	m.ReceivedAt = time.Unix(0, at)
	return m, err
}

// InboundMessages lists the newest limit inbound messages, without bytes.
func (s *SQLite) InboundMessages(ctx context.Context, status string, limit int) ([]InboundMessage, error) {
	if limit <= 0 {
		limit = 1000
	}
	query := `SELECT ` + inboundColumns + ` FROM inbound`
	var args []any
	if status != "" {
		query += ` WHERE status = ?`
		args = append(args, status)
	}
	rows, err := s.db.QueryContext(ctx, query+` ORDER BY id DESC LIMIT ?`, append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("store: list inbound: %w", err)
	}
	defer rows.Close()
	var out []InboundMessage
	for rows.Next() {
		m, err := scanInbound(rows.Scan)
		if err != nil {
			return nil, fmt.Errorf("store: list inbound: %w", err)
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// InboundMessage returns one inbound message with its bytes.
func (s *SQLite) InboundMessage(ctx context.Context, id int64) (InboundMessage, error) {
	var raw []byte
	m, err := scanInbound(s.db.QueryRowContext(ctx, `SELECT `+inboundColumns+`, raw FROM inbound WHERE id = ?`, id).Scan, &raw)
	m.Raw = raw
	if errors.Is(err, sql.ErrNoRows) {
		return m, fmt.Errorf("store: inbound message %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return m, fmt.Errorf("store: inbound message %d: %w", id, err)
	}
	return m, nil
}

// InboundTotals returns the number and bytes of the inbound messages kept.
func (s *SQLite) InboundTotals(ctx context.Context) (InboundTotals, error) {
	var t InboundTotals
	if err := s.db.QueryRowContext(ctx, sqlInboundTotals).Scan(&t.Messages, &t.Bytes); err != nil {
		return t, fmt.Errorf("store: inbound totals: %w", err)
	}
	return t, nil
}

// DeleteInbound deletes one inbound message.
func (s *SQLite) DeleteInbound(ctx context.Context, id int64) error {
	var n int64
	op := &writeOp{run: func(tx *txn) error {
		res, err := tx.Exec(`DELETE FROM inbound WHERE id = ?`, id)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	}}
	if err := s.write(ctx, op); err != nil {
		return fmt.Errorf("store: delete inbound message %d: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("store: inbound message %d: %w", id, ErrNotFound)
	}
	return nil
}

// purgeBatch bounds the rows one purge transaction deletes: the committer
// runs it between submissions' commits, which must not wait long.
const purgeBatch = 500

// PurgeInbound deletes the inbound messages f matches, purgeBatch at a
// time.
func (s *SQLite) PurgeInbound(ctx context.Context, f InboundFilter) (InboundTotals, error) {
	where, args := `1`, []any{}
	if !f.Before.IsZero() {
		where += ` AND received_at < ?`
		args = append(args, f.Before.UnixNano())
	}
	if f.Status != "" {
		where += ` AND status = ?`
		args = append(args, f.Status)
	}
	if f.Client != "" {
		where += ` AND client = ?`
		args = append(args, f.Client)
	}
	query := `DELETE FROM inbound WHERE id IN (SELECT id FROM inbound WHERE ` + where +
		fmt.Sprintf(` LIMIT %d) RETURNING kept`, purgeBatch)
	var total InboundTotals
	for {
		var batch InboundTotals
		op := &writeOp{run: func(tx *txn) error {
			batch = InboundTotals{}
			rows, err := tx.Query(query, args...)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var kept int64
				if err := rows.Scan(&kept); err != nil {
					return err
				}
				batch.Messages++
				batch.Bytes += kept
			}
			return rows.Err()
		}}
		if err := s.write(ctx, op); err != nil {
			return total, fmt.Errorf("store: purge inbound messages: %w", err)
		}
		total.Messages += batch.Messages
		total.Bytes += batch.Bytes
		if batch.Messages < purgeBatch {
			return total, nil
		}
	}
}

// The lookups of inbound reports. Each must use an index (the events are
// many), which TestInboundLookupsUseIndexes checks.
const (
	sqlCountSameEvent = `SELECT COUNT(*) FROM events WHERE type = ? AND queue_id = ? AND recipient = ? COLLATE NOCASE`
	// events_message_id covers only send events: keep "type = 'send'"
	// literal, so SQLite sees the query is within the partial index.
	sqlSendEventsByQueueID   = `SELECT ` + eventColumns + ` FROM events WHERE type = 'send' AND queue_id = ? ORDER BY id LIMIT 1000`
	sqlSendEventsByMessageID = `SELECT ` + eventColumns + ` FROM events WHERE type = 'send' AND message_id = ? ORDER BY id LIMIT 1000`
)

// SendEvents returns the send events of queueID, or of messageID.
func (s *SQLite) SendEvents(ctx context.Context, queueID, messageID string) ([]Event, error) {
	query, arg := sqlSendEventsByQueueID, queueID
	if queueID == "" {
		query, arg = sqlSendEventsByMessageID, messageID
	}
	out, err := s.selectEvents(ctx, query, arg)
	if err != nil {
		return nil, fmt.Errorf("store: send events: %w", err)
	}
	return out, nil
}
