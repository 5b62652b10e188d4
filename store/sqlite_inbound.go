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
	Raw          []byte // empty in lists
}

// Inbound stores inbound messages and looks up the mail they are about.
type Inbound interface {
	// RecordInbound stores m and, in the same transaction, the events it
	// gave (an event already recorded for the same type, queue id and
	// recipient is not recorded twice) and the suppressions; it returns
	// m's id.
	RecordInbound(ctx context.Context, m InboundMessage, events []Event, sups []Suppression) (int64, error)
	// InboundMessages lists the newest limit messages, newest first,
	// without their bytes; status "" lists every status.
	InboundMessages(ctx context.Context, status string, limit int) ([]InboundMessage, error)
	InboundMessage(ctx context.Context, id int64) (InboundMessage, error)
	// SendEvents returns the send events of a queue id, or of a
	// Message-ID header when queueID is "".
	SendEvents(ctx context.Context, queueID, messageID string) ([]Event, error)
}

var _ Inbound = (*SQLite)(nil)

// RecordInbound stores m with its events and suppressions.
func (s *SQLite) RecordInbound(ctx context.Context, m InboundMessage, events []Event, sups []Suppression) (int64, error) {
	var id int64
	op := &writeOp{run: func(tx *txn) error {
		res, err := tx.Exec(`INSERT INTO inbound (received_at, mail_from, rcpt_to, kind, status, detail, verified, verification, raw)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, m.ReceivedAt.UnixNano(), m.MailFrom, m.RcptTo, m.Kind, m.Status, m.Detail,
			m.Verified, m.Verification, m.Raw)
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

// InboundMessages lists the newest limit inbound messages, without bytes.
func (s *SQLite) InboundMessages(ctx context.Context, status string, limit int) ([]InboundMessage, error) {
	if limit <= 0 {
		limit = 1000
	}
	query := `SELECT id, received_at, mail_from, rcpt_to, kind, status, detail, verified, verification FROM inbound`
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
		var m InboundMessage
		var at int64
		if err := rows.Scan(&m.ID, &at, &m.MailFrom, &m.RcptTo, &m.Kind, &m.Status, &m.Detail, &m.Verified, &m.Verification); err != nil {
			return nil, fmt.Errorf("store: list inbound: %w", err)
		}
		m.ReceivedAt = time.Unix(0, at)
		out = append(out, m)
	}
	return out, rows.Err()
}

// InboundMessage returns one inbound message with its bytes.
func (s *SQLite) InboundMessage(ctx context.Context, id int64) (InboundMessage, error) {
	var m InboundMessage
	var at int64
	err := s.db.QueryRowContext(ctx, `SELECT id, received_at, mail_from, rcpt_to, kind, status, detail, verified, verification, raw
		FROM inbound WHERE id = ?`, id).Scan(&m.ID, &at, &m.MailFrom, &m.RcptTo, &m.Kind, &m.Status, &m.Detail,
		&m.Verified, &m.Verification, &m.Raw)
	if errors.Is(err, sql.ErrNoRows) {
		return m, fmt.Errorf("store: inbound message %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return m, fmt.Errorf("store: inbound message %d: %w", id, err)
	}
	m.ReceivedAt = time.Unix(0, at)
	return m, nil
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
