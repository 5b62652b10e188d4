package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // database/sql driver "sqlite", pure Go so the binary stays static
)

// SQLite is the embedded store: one database file in the data directory, in
// WAL mode.
//
// Every write the server makes on the hot path (Enqueue, Claim, Complete)
// goes through one committer goroutine that runs whatever writes are waiting
// in a single transaction: concurrent submissions share one fsync (group
// commit) and never fight over SQLite's single write lock. The committer's
// connection runs with synchronous=NORMAL, so its commit only writes the WAL;
// a second goroutine, the syncer, then fsyncs the WAL file and only after
// that answers the writes (and signals Ready). The fsync of one batch thus
// overlaps the next batch's work instead of holding the write lock, and a
// write is still on disk before its caller hears it succeeded: a submission
// gets its 250 only after the fsync of the frames holding it.
// (Checkpoints at synchronous=NORMAL fsync the WAL before copying it into
// the database and the database after, so a reset WAL loses nothing.)
//
// Administrative writes (credentials, domains) are rare and run directly on
// other connections, at synchronous=FULL; SQLite's busy timeout orders them
// against the committer and against other processes (the admin commands
// open the same file while `sesame serve` runs).
type SQLite struct {
	db    *sql.DB
	conn  *sql.Conn // the committer's connection, at synchronous=NORMAL
	wal   *walFile  // the WAL, fsynced by the syncer
	ops   chan *writeOp
	syncq chan committed // from the committer to the syncer
	ready chan struct{}
	done  chan struct{} // closed when the committer and the syncer have exited
	stop  chan struct{}
	once  sync.Once

	watchOnce sync.Once
	watching  sync.WaitGroup

	// suppressPerCredential: see SetSuppressionPerCredential.
	suppressPerCredential atomic.Bool
	stmts                 stmtCache // the committer's prepared statements (txn.go)

	admin   adminCache    // the hot administrative reads (cache.go)
	commits atomic.Int64  // transactions committed by the committer, for tests and metrics
	health  storageHealth // whether writes fail for lack of space (sqlite_health.go)
}

var _ Store = (*SQLite)(nil)

const (
	maxBatchOps   = 512
	maxBatchBytes = 32 << 20 // keep one transaction's payload bounded
)

// OpenSQLite opens (creating if needed) the database at path, with file mode
// 0600: it holds DKIM private keys and password hashes.
func OpenSQLite(path string) (*SQLite, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		// err names the path already.
		return nil, fmt.Errorf("store: %w (run the command as the user that runs sesame serve)", err)
	}
	f.Close()
	dsn := "file:" + path + "?_txlock=immediate" +
		"&_pragma=busy_timeout(10000)" +
		"&_pragma=journal_mode(WAL)" +
		"&_pragma=synchronous(FULL)" +
		"&_pragma=foreign_keys(1)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	db.SetMaxOpenConns(8)
	db.SetMaxIdleConns(8)
	if err := migrate(db); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: prepare %s: %w", path, err)
	}
	s := &SQLite{
		admin: adminCache{stamp: path + ".stamp"},
		db:    db,
		ops:   make(chan *writeOp, 1024),
		syncq: make(chan committed, 64),
		ready: make(chan struct{}, 1),
		done:  make(chan struct{}),
		stop:  make(chan struct{}),
	}
	if err := s.stmts.prepare(db, hotStatements); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: prepare statements: %w", err)
	}
	if err := s.openCommitter(path); err != nil {
		s.stmts.close()
		db.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	go s.commitLoop()
	go s.syncLoop()
	return s, nil
}

const schema = `
CREATE TABLE credentials (
	name          TEXT PRIMARY KEY,
	username      TEXT NOT NULL UNIQUE,
	password_hash TEXT NOT NULL,
	created_at    INTEGER NOT NULL,
	updated_at    INTEGER NOT NULL,
	last_used_at  INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE domains (
	name       TEXT PRIMARY KEY,
	created_at INTEGER NOT NULL
);
CREATE TABLE dkim_keys (
	domain      TEXT NOT NULL REFERENCES domains(name) ON DELETE CASCADE,
	selector    TEXT NOT NULL,
	algorithm   TEXT NOT NULL,
	private_key BLOB NOT NULL,
	created_at  INTEGER NOT NULL,
	PRIMARY KEY (domain, selector)
);
CREATE TABLE messages (
	id          TEXT PRIMARY KEY,
	credential  TEXT NOT NULL,
	sender      TEXT NOT NULL,
	message_id  TEXT NOT NULL,
	size        INTEGER NOT NULL,
	received_at INTEGER NOT NULL,
	body        BLOB NOT NULL
);
CREATE TABLE recipients (
	message_id      TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
	address         TEXT NOT NULL,
	state           TEXT NOT NULL,
	attempts        INTEGER NOT NULL DEFAULT 0,
	next_attempt_at INTEGER NOT NULL,
	lease_until     INTEGER NOT NULL DEFAULT 0,
	last_reply      TEXT NOT NULL DEFAULT '',
	updated_at      INTEGER NOT NULL,
	PRIMARY KEY (message_id, address)
);
CREATE INDEX recipients_due ON recipients(next_attempt_at) WHERE state IN ('queued', 'deferred');
`

// migrations[i] takes the schema from version i+1 to i+2.
var migrations = []string{
	`ALTER TABLE messages ADD COLUMN delay_warned INTEGER NOT NULL DEFAULT 0;
	 ALTER TABLE recipients ADD COLUMN domain TEXT NOT NULL DEFAULT '';
	 UPDATE recipients SET domain = lower(substr(address, instr(address, '@') + 1));
	 UPDATE recipients SET state = 'bounced' WHERE state = 'failed';`,
	`ALTER TABLE credentials ADD COLUMN sandbox INTEGER NOT NULL DEFAULT 0;
	 ALTER TABLE credentials ADD COLUMN daily_quota INTEGER NOT NULL DEFAULT 0;
	 ALTER TABLE credentials ADD COLUMN max_send_rate REAL NOT NULL DEFAULT 0;
	 CREATE TABLE credential_identities (
		credential TEXT NOT NULL REFERENCES credentials(name) ON DELETE CASCADE,
		identity   TEXT NOT NULL,
		PRIMARY KEY (credential, identity)
	 );
	 ALTER TABLE domains ADD COLUMN status TEXT NOT NULL DEFAULT 'pending';
	 ALTER TABLE domains ADD COLUMN status_since INTEGER NOT NULL DEFAULT 0;
	 ALTER TABLE domains ADD COLUMN last_checked INTEGER NOT NULL DEFAULT 0;
	 ALTER TABLE domains ADD COLUMN failed_checks INTEGER NOT NULL DEFAULT 0;
	 UPDATE domains SET status_since = created_at;
	 CREATE TABLE addresses (
		address       TEXT PRIMARY KEY,
		status        TEXT NOT NULL,
		token_hash    TEXT NOT NULL DEFAULT '',
		token_expires INTEGER NOT NULL DEFAULT 0,
		created_at    INTEGER NOT NULL,
		verified_at   INTEGER NOT NULL DEFAULT 0
	 );
	 CREATE INDEX addresses_token ON addresses(token_hash) WHERE token_hash != '';
	 CREATE TABLE sends (
		credential TEXT NOT NULL,
		hour       INTEGER NOT NULL,
		count      INTEGER NOT NULL,
		PRIMARY KEY (credential, hour)
	 );`,
	`CREATE TABLE events (
		id         INTEGER PRIMARY KEY AUTOINCREMENT,
		at         INTEGER NOT NULL,
		type       TEXT NOT NULL,
		credential TEXT NOT NULL,
		queue_id   TEXT NOT NULL,
		message_id TEXT NOT NULL,
		recipient  TEXT NOT NULL,
		remote_mta TEXT NOT NULL,
		reply      TEXT NOT NULL
	 );
	 CREATE INDEX events_at ON events(at);
	 CREATE INDEX events_credential ON events(credential, at);
	 CREATE TABLE suppressions (
		address    TEXT PRIMARY KEY COLLATE NOCASE,
		reason     TEXT NOT NULL,
		detail     TEXT NOT NULL,
		created_at INTEGER NOT NULL
	 );`,
	`ALTER TABLE credentials ADD COLUMN paused_reason TEXT NOT NULL DEFAULT '';
	 ALTER TABLE credentials ADD COLUMN paused_at INTEGER NOT NULL DEFAULT 0;
	 CREATE TABLE webhook_cursors (
		endpoint     TEXT PRIMARY KEY,
		last_event   INTEGER NOT NULL,
		attempts     INTEGER NOT NULL DEFAULT 0,
		next_attempt INTEGER NOT NULL DEFAULT 0,
		last_error   TEXT NOT NULL DEFAULT ''
	 );`,
	`ALTER TABLE events ADD COLUMN bounce_type TEXT NOT NULL DEFAULT '';`,
	`ALTER TABLE credentials ADD COLUMN pool TEXT NOT NULL DEFAULT '';
	 ALTER TABLE recipients ADD COLUMN parked TEXT NOT NULL DEFAULT '';
	 CREATE INDEX recipients_parked ON recipients(parked) WHERE parked != '';
	 CREATE TABLE ip_sends (
		ip       TEXT NOT NULL,
		provider TEXT NOT NULL,
		hour     INTEGER NOT NULL,
		count    INTEGER NOT NULL,
		PRIMARY KEY (ip, provider, hour)
	 );
	 CREATE TABLE ip_suspensions (
		ip       TEXT NOT NULL,
		provider TEXT NOT NULL,
		until    INTEGER NOT NULL,
		level    INTEGER NOT NULL,
		reply    TEXT NOT NULL,
		PRIMARY KEY (ip, provider)
	 );
	 CREATE TABLE ip_pauses (
		ip     TEXT PRIMARY KEY,
		reason TEXT NOT NULL,
		at     INTEGER NOT NULL
	 );`,
	`CREATE TABLE inbound (
		id          INTEGER PRIMARY KEY AUTOINCREMENT,
		received_at INTEGER NOT NULL,
		mail_from   TEXT NOT NULL,
		rcpt_to     TEXT NOT NULL,
		kind        TEXT NOT NULL,
		status      TEXT NOT NULL,
		detail      TEXT NOT NULL,
		raw         BLOB NOT NULL
	 );
	 CREATE INDEX inbound_at ON inbound(received_at);
	 CREATE INDEX events_queue_id ON events(queue_id) WHERE queue_id != '';
	 CREATE INDEX events_message_id ON events(message_id) WHERE message_id != '';`,
	`CREATE TABLE suppressions_scoped (
		address    TEXT NOT NULL COLLATE NOCASE,
		credential TEXT NOT NULL DEFAULT '',
		reason     TEXT NOT NULL,
		detail     TEXT NOT NULL,
		created_at INTEGER NOT NULL,
		PRIMARY KEY (address, credential)
	 );
	 INSERT INTO suppressions_scoped (address, credential, reason, detail, created_at)
		SELECT address, '', reason, detail, created_at FROM suppressions;
	 DROP TABLE suppressions;
	 ALTER TABLE suppressions_scoped RENAME TO suppressions;`,
	// The lookups of inbound reports ("type = ? AND queue_id = ?", "type =
	// 'send' AND message_id = ?") could not use the partial indexes above,
	// whose "!= ''" no query implies, and scanned every event, inside the
	// committer's transaction. queue_id is in time order, so a full index
	// on it costs an append; Message-IDs are random, so only send events,
	// the ones looked up by it, are indexed by them: one random leaf per
	// submitted recipient instead of one per event.
	`DROP INDEX events_queue_id;
	 DROP INDEX events_message_id;
	 CREATE INDEX events_queue_id ON events(queue_id);
	 CREATE INDEX events_message_id ON events(message_id) WHERE type = 'send';`,
	// Whether an inbound report proved who sent it (package inbound), and
	// the proof or why there was none.
	`ALTER TABLE inbound ADD COLUMN verified INTEGER NOT NULL DEFAULT 0;
	 ALTER TABLE inbound ADD COLUMN verification TEXT NOT NULL DEFAULT '';`,
	// What the inbound listener keeps is bounded (package inbound): each
	// row records the client it came from, the size received and the bytes
	// it keeps, and inbound_usage holds the totals, kept by triggers so a
	// capped insert reads one row instead of summing the table.
	`ALTER TABLE inbound ADD COLUMN client TEXT NOT NULL DEFAULT '';
	 ALTER TABLE inbound ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
	 ALTER TABLE inbound ADD COLUMN kept INTEGER NOT NULL DEFAULT 0;
	 UPDATE inbound SET size = length(raw),
		kept = length(raw) + length(mail_from) + length(rcpt_to) + length(kind) + length(status) + length(detail) + length(verification);
	 CREATE INDEX inbound_client ON inbound(client);
	 CREATE TABLE inbound_usage (
		id       INTEGER PRIMARY KEY CHECK (id = 1),
		messages INTEGER NOT NULL,
		bytes    INTEGER NOT NULL
	 );
	 INSERT INTO inbound_usage SELECT 1, COUNT(*), COALESCE(SUM(kept), 0) FROM inbound;
	 CREATE TRIGGER inbound_usage_insert AFTER INSERT ON inbound BEGIN
		UPDATE inbound_usage SET messages = messages + 1, bytes = bytes + NEW.kept WHERE id = 1;
	 END;
	 CREATE TRIGGER inbound_usage_delete AFTER DELETE ON inbound BEGIN
		UPDATE inbound_usage SET messages = messages - 1, bytes = bytes - OLD.kept WHERE id = 1;
	 END;`,
	// How many refusals a reject event stands for (Event.Count); 1 for
	// every event before.
	`ALTER TABLE events ADD COLUMN count INTEGER NOT NULL DEFAULT 1;`,
	// The last summary of each credential's failed logins (package smtpd
	// writes it, at most once per credential every few seconds), for
	// "sesame user show". A table of its own: writing it must not touch
	// the credentials row, whose reads are cached.
	`CREATE TABLE login_failures (
		credential       TEXT PRIMARY KEY REFERENCES credentials(name) ON DELETE CASCADE,
		first_at         INTEGER NOT NULL,
		last_at          INTEGER NOT NULL,
		failures         INTEGER NOT NULL,
		networks         INTEGER NOT NULL,
		last_network     TEXT NOT NULL,
		blocked_networks INTEGER NOT NULL,
		blocked_until    INTEGER NOT NULL,
		updated_at       INTEGER NOT NULL
	 );`,
	// The DMARC policy of an address identity's domain, and the
	// operator's choice to let it send anyway (package identity).
	`ALTER TABLE addresses ADD COLUMN dmarc_policy TEXT NOT NULL DEFAULT '';
	 ALTER TABLE addresses ADD COLUMN dmarc_checked_at INTEGER NOT NULL DEFAULT 0;
	 ALTER TABLE addresses ADD COLUMN forced INTEGER NOT NULL DEFAULT 0;`,
	// DKIM key rotation (package identity): a new key waits for its record
	// (pending), then signs (active) while the one it replaces stays
	// published until retire_at (retiring).
	`ALTER TABLE dkim_keys ADD COLUMN state TEXT NOT NULL DEFAULT 'active';
	 ALTER TABLE dkim_keys ADD COLUMN active_since INTEGER NOT NULL DEFAULT 0;
	 ALTER TABLE dkim_keys ADD COLUMN retire_at INTEGER NOT NULL DEFAULT 0;
	 UPDATE dkim_keys SET active_since = created_at;`,
	// The SES API's access key of each credential (package api): the
	// secret sealed by package account with a key the database does not
	// hold, since SigV4 needs the secret itself, not a hash of it. And
	// each credential's email templates (SES v2's templates; the
	// credential is the SES account).
	`CREATE TABLE api_keys (
		access_key_id TEXT PRIMARY KEY,
		credential    TEXT NOT NULL UNIQUE REFERENCES credentials(name) ON DELETE CASCADE,
		sealed_secret BLOB NOT NULL,
		created_at    INTEGER NOT NULL
	 );
	 CREATE TABLE email_templates (
		credential TEXT NOT NULL REFERENCES credentials(name) ON DELETE CASCADE,
		name       TEXT NOT NULL,
		subject    TEXT NOT NULL,
		text       TEXT NOT NULL,
		html       TEXT NOT NULL,
		created_at INTEGER NOT NULL,
		PRIMARY KEY (credential, name)
	 );`,
}

func migrate(db *sql.DB) error {
	tx, err := db.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var version int
	if err := tx.QueryRow(`PRAGMA user_version`).Scan(&version); err != nil {
		return err
	}
	latest := 1 + len(migrations)
	if version > latest {
		return fmt.Errorf("database schema version %d is newer than this binary understands (%d); upgrade sesame", version, latest)
	}
	if version == latest {
		return nil
	}
	if version == 0 {
		if _, err := tx.Exec(schema); err != nil {
			return err
		}
		version = 1
	}
	for ; version < latest; version++ {
		if _, err := tx.Exec(migrations[version-1]); err != nil {
			return fmt.Errorf("migrate schema to version %d: %w", version+1, err)
		}
	}
	if _, err := tx.Exec(fmt.Sprintf(`PRAGMA user_version = %d`, latest)); err != nil {
		return err
	}
	return tx.Commit()
}

// Close stops the committer after the writes already submitted and closes the
// database.
func (s *SQLite) Close() error {
	s.once.Do(func() { close(s.stop) })
	<-s.done
	s.admin.clear() // a closed store answers nothing, not even from memory
	s.watching.Wait()
	s.stmts.close()
	s.conn.Close()
	s.wal.close()
	return s.db.Close()
}

// Ping reports whether the database answers and accepts reads.
func (s *SQLite) Ping(ctx context.Context) error {
	var one int
	if err := s.db.QueryRowContext(ctx, `SELECT 1`).Scan(&one); err != nil {
		return fmt.Errorf("store: ping: %w", err)
	}
	return nil
}

// Ready receives a value after an Enqueue commits here, and within a second
// of another process writing to the database.
func (s *SQLite) Ready() <-chan struct{} {
	s.watchOnce.Do(s.startWatching)
	return s.ready
}

// signalReady wakes whoever waits on Ready, without blocking.
func (s *SQLite) signalReady() {
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// startWatching takes a dedicated connection and its first reading of
// data_version before Ready returns, so that no write after that call can
// become the baseline and go unnoticed, then watches in the background.
func (s *SQLite) startWatching() {
	ctx, cancel := context.WithCancel(context.Background())
	conn, err := s.db.Conn(ctx)
	if err != nil {
		cancel()
		return // Ready still works for this process's own writes
	}
	version := func() int64 {
		var v int64
		if err := conn.QueryRowContext(ctx, `PRAGMA data_version`).Scan(&v); err != nil {
			return -1
		}
		return v
	}
	last := version()
	s.watching.Add(1)
	go func() {
		defer s.watching.Done()
		defer conn.Close()
		defer cancel()
		s.watchOtherWriters(ctx, version, last)
	}()
}

// watchOtherWriters signals Ready when another connection commits, which is
// how the admin commands (`sesame queue retry`, a verification mail) reach a
// running server without any other channel: SQLite's data_version changes,
// for one connection, whenever any other connection commits. It reads it
// every second until the store closes.
func (s *SQLite) watchOtherWriters(ctx context.Context, version func() int64, last int64) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
		}
		v := version()
		if v < 0 {
			continue
		}
		if last >= 0 && v != last {
			s.signalReady()
		}
		last = v
	}
}

// AddressDomain returns the domain of address, lower-cased: the part after its
// last '@' (submission refuses addresses with more than one).
func AddressDomain(address string) string {
	return strings.ToLower(address[strings.LastIndexByte(address, '@')+1:])
}

// NewQueueID returns a new queue id: 16 characters of base32 (digits and
// A-V) that sort in time order, as Postfix's long queue ids do. The first 48
// bits are the time in milliseconds, the other 32 random.
//
// The order matters for speed: the queue's tables and the events are
// indexed by queue id, and an id in time order lands on the B-tree's last
// leaf, which a batch of submissions shares, where a random one dirties a
// different page per message, each written to the WAL and checkpointed.
// (In a test of 1,000 submissions, WAL frames per message fell from 7.1 with
// random ids to 6.5; the gap grows with the queue.)
func NewQueueID() string {
	var b [10]byte
	binary.BigEndian.PutUint64(b[:8], uint64(time.Now().UnixMilli())<<16)
	if _, err := rand.Read(b[6:]); err != nil {
		panic("store: crypto/rand failed: " + err.Error())
	}
	return base32.HexEncoding.EncodeToString(b[:])
}

// Enqueue stores m and one queued row per recipient, durably. It sets m.ID
// unless the caller already chose one with NewQueueID.
func (s *SQLite) Enqueue(ctx context.Context, m *Message) error {
	if m.ID == "" {
		m.ID = NewQueueID()
	}
	op := &writeOp{enqueues: true, run: func(tx *txn) error { return insertMessage(tx, m) }}
	if err := s.write(ctx, op); err != nil {
		return fmt.Errorf("store: enqueue: %w", err)
	}
	return nil
}

// The statements of the hot path, prepared once (txn.go).
const (
	sqlInsertMessage = `INSERT INTO messages (id, credential, sender, message_id, size, received_at, body)
		VALUES (?, ?, ?, ?, ?, ?, ?)`
	sqlInsertRecipient = `INSERT OR IGNORE INTO recipients (message_id, address, domain, state, next_attempt_at, updated_at)
			VALUES (?, ?, ?, ?, ?, ?)`
	sqlCountSends = `INSERT INTO sends (credential, hour, count) VALUES (?, ?, ?)
			ON CONFLICT (credential, hour) DO UPDATE SET count = count + excluded.count`
	sqlClaimDue = `SELECT message_id, address, attempts FROM recipients
			WHERE state IN ('queued', 'deferred') AND next_attempt_at <= ? AND parked = ''
			ORDER BY next_attempt_at LIMIT ?`
	sqlLease = `UPDATE recipients SET lease_until = ?, next_attempt_at = ?
					WHERE message_id = ? AND address = ?`
	sqlLoadDelivery = `SELECT m.sender, m.received_at, m.delay_warned, m.credential, coalesce(c.pool, ''), m.size
		FROM messages m LEFT JOIN credentials c ON c.name = m.credential WHERE m.id = ?`
	sqlMessageIdent  = `SELECT credential, message_id FROM messages WHERE id = ?`
	sqlRecordOutcome = `UPDATE recipients SET state = ?, last_reply = ?, attempts = attempts + ?,
				next_attempt_at = ?, lease_until = 0, parked = ?, updated_at = ? WHERE message_id = ? AND address = ?`
	sqlCountIPSends = `INSERT INTO ip_sends (ip, provider, hour, count) VALUES (?, ?, ?, ?)
				ON CONFLICT (ip, provider, hour) DO UPDATE SET count = count + excluded.count`
	sqlDeleteIfFinal = `DELETE FROM messages WHERE id = ? AND NOT EXISTS
		(SELECT 1 FROM recipients WHERE message_id = ? AND state IN ('queued', 'deferred', 'quarantined'))`
)

// insertMessage stores m with one queued row per recipient.
func insertMessage(tx *txn, m *Message) error {
	if len(m.Recipients) == 0 {
		return errors.New("message has no recipients")
	}
	received := m.ReceivedAt.UnixNano()
	_, err := tx.Exec(sqlInsertMessage,
		m.ID, m.Credential, m.Sender, m.MessageID, len(m.Data), received, m.Data)
	if err != nil {
		return err
	}
	for _, rcpt := range m.Recipients {
		_, err := tx.Exec(sqlInsertRecipient, m.ID, rcpt, AddressDomain(rcpt), StateQueued, received, received)
		if err != nil {
			return err
		}
	}
	for _, rcpt := range m.Recipients {
		if err := insertEvent(tx, Event{At: m.ReceivedAt, Type: EventSend, Credential: m.Credential, QueueID: m.ID,
			MessageID: m.MessageID, Recipient: rcpt}); err != nil {
			return err
		}
	}
	if m.Credential != "" {
		// Sending quotas count recipients, in hour buckets (see Sent).
		_, err := tx.Exec(sqlCountSends,
			m.Credential, m.ReceivedAt.Truncate(time.Hour).Unix(), len(m.Recipients)-m.Uncounted)
		if err != nil {
			return err
		}
	}
	return nil
}

// Claim leases up to max messages with due recipients, oldest due first.
// A leased recipient's next attempt moves to the end of its lease, so the
// due index never walks over mail already handed out, and mail whose holder
// died becomes due again when the lease runs out. Message bytes are not
// loaded: MessageData reads them when a delivery starts.
func (s *SQLite) Claim(ctx context.Context, now time.Time, max int, lease time.Duration) ([]Delivery, error) {
	if max <= 0 {
		return nil, nil
	}
	var out []Delivery
	op := &writeOp{run: func(tx *txn) error {
		out = nil
		// Parked recipients are ClaimParked's, even while leased.
		rows, err := tx.Query(sqlClaimDue, now.UnixNano(), max*16)
		if err != nil {
			return err
		}
		index := map[string]int{}
		for rows.Next() {
			var id string
			var r DueRecipient
			if err := rows.Scan(&id, &r.Address, &r.Attempts); err != nil {
				rows.Close()
				return err
			}
			i, ok := index[id]
			if !ok {
				if len(out) == max {
					continue
				}
				i = len(out)
				index[id] = i
				out = append(out, Delivery{QueueID: id})
			}
			out[i].Recipients = append(out[i].Recipients, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		until := now.Add(lease).UnixNano()
		if out, err = loadDeliveries(tx, out); err != nil {
			return err
		}
		for i := range out {
			d := &out[i]
			for _, r := range d.Recipients {
				if _, err := tx.Exec(sqlLease, until, until, d.QueueID, r.Address); err != nil {
					return err
				}
			}
		}
		return nil
	}}
	if err := s.write(ctx, op); err != nil {
		return nil, fmt.Errorf("store: claim: %w", err)
	}
	return out, nil
}

// loadDeliveries fills in ds from their messages. Recipient rows whose
// message is gone (deleted by hand with the sqlite3 tool, which does not
// enforce foreign keys) are deleted rather than failing every claim, which
// would stop all delivery.
func loadDeliveries(tx *txn, ds []Delivery) ([]Delivery, error) {
	out := ds[:0]
	for i := range ds {
		err := loadDelivery(tx, &ds[i])
		if errors.Is(err, sql.ErrNoRows) {
			if _, err := tx.Exec(`DELETE FROM recipients WHERE message_id = ?`, ds[i].QueueID); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, ds[i])
	}
	return out, nil
}

// loadDelivery fills in what d needs of its message besides recipients.
func loadDelivery(tx *txn, d *Delivery) error {
	var received int64
	err := tx.QueryRow(sqlLoadDelivery, d.QueueID).
		Scan(&d.Sender, &received, &d.DelayWarned, &d.Credential, &d.Pool, &d.Size)
	if err != nil {
		return fmt.Errorf("load message %s: %w", d.QueueID, err)
	}
	d.ReceivedAt = time.Unix(0, received)
	return nil
}

// Complete records r in one transaction: outcomes, the notice to the sender,
// and the delay-warning mark. A message whose recipients are all final
// leaves the queue.
func (s *SQLite) Complete(ctx context.Context, r Report) error {
	if len(r.Outcomes) == 0 {
		return nil
	}
	if r.Notice != nil && r.Notice.ID == "" {
		r.Notice.ID = NewQueueID()
	}
	op := &writeOp{enqueues: r.Notice != nil || len(r.Replies) > 0, run: func(tx *txn) error {
		now := time.Now().UnixNano()
		final := false
		var credential, messageID string
		if err := tx.QueryRow(sqlMessageIdent, r.QueueID).
			Scan(&credential, &messageID); err != nil {
			return fmt.Errorf("message %s: %w", r.QueueID, err)
		}
		for _, o := range r.Outcomes {
			if o.State != StateDeferred && o.State != StateQuarantined && !Final(o.State) {
				return fmt.Errorf("outcome for %s in %s: invalid state %q", o.Recipient, r.QueueID, o.State)
			}
			next := o.NextAttempt.UnixNano()
			if o.State != StateDeferred {
				next, final = now, true
			}
			attempts := 1
			if o.Park != "" {
				next = parkedDue
				if o.NotAttempted {
					attempts = 0
				}
			}
			_, err := tx.Exec(sqlRecordOutcome,
				o.State, o.Reply, attempts, next, o.Park, now, r.QueueID, o.Recipient)
			if err != nil {
				return err
			}
			if o.NotAttempted || o.State == StateQuarantined {
				// Nothing happened to the recipient; a quarantine has no event
				// type (no server was tried): the log and the queue show it.
				continue
			}
			if err := insertEvent(tx, Event{At: time.Unix(0, now), Type: outcomeEvent[o.State], Credential: credential,
				QueueID: r.QueueID, MessageID: messageID, Recipient: o.Recipient, RemoteMTA: o.RemoteMTA, Reply: o.Reply,
				BounceType: o.BounceType}); err != nil {
				return err
			}
			if o.BounceType == BounceHard && !o.Simulated {
				if err := s.upsertSuppression(tx, Suppression{Address: o.Recipient, Credential: credential,
					Reason: SuppressBounce, Detail: o.Reply, CreatedAt: time.Unix(0, now)}); err != nil {
					return err
				}
			}
		}
		for _, c := range r.Sends {
			if _, err := tx.Exec(sqlCountIPSends,
				c.IP, c.Provider, c.Hour.Truncate(time.Hour).Unix(), c.Count); err != nil {
				return err
			}
		}
		for _, e := range r.Events {
			e.At, e.Credential, e.QueueID, e.MessageID = time.Unix(0, now), credential, r.QueueID, messageID
			if err := insertEvent(tx, e); err != nil {
				return err
			}
		}
		for _, m := range r.Replies {
			if m.ID == "" {
				m.ID = NewQueueID()
			}
			if err := insertMessage(tx, m); err != nil {
				return fmt.Errorf("queue reply: %w", err)
			}
		}
		if r.DelayWarned {
			if _, err := tx.Exec(`UPDATE messages SET delay_warned = 1 WHERE id = ?`, r.QueueID); err != nil {
				return err
			}
		}
		if r.Notice != nil {
			if err := insertMessage(tx, r.Notice); err != nil {
				return fmt.Errorf("queue notice: %w", err)
			}
		}
		if final {
			return deleteIfFinal(tx, r.QueueID)
		}
		return nil
	}}
	if err := s.write(ctx, op); err != nil {
		return fmt.Errorf("store: complete %s: %w", r.QueueID, err)
	}
	return nil
}

// outcomeEvent is the event type of each recipient state an attempt ends in.
var outcomeEvent = map[string]string{
	StateDelivered:  EventDelivery,
	StateDeferred:   EventDeferral,
	StateBounced:    EventBounce,
	StateExpired:    EventExpired,
	StateSuppressed: EventSuppressed,
}

// deleteIfFinal removes message id once no recipient of it is waiting. A
// quarantined recipient waits for the operator, who must find the message.
func deleteIfFinal(tx *txn, id string) error {
	_, err := tx.Exec(sqlDeleteIfFinal, id, id)
	return err
}

// ReleaseLeases ends every lease. A single node calls it at start-up: leases
// left by a process that died would otherwise delay its mail until they expire.
func (s *SQLite) ReleaseLeases(ctx context.Context) error {
	op := &writeOp{run: func(tx *txn) error {
		// A parked recipient goes back to its place in its line.
		_, err := tx.Exec(`UPDATE recipients SET lease_until = 0,
			next_attempt_at = CASE WHEN parked = '' THEN ? ELSE ? END WHERE lease_until != 0`,
			time.Now().UnixNano(), int64(parkedDue))
		return err
	}}
	if err := s.write(ctx, op); err != nil {
		return fmt.Errorf("store: release leases: %w", err)
	}
	s.signalReady()
	return nil
}

// NextDue returns the earliest time a waiting recipient becomes due (for a
// leased one, when its lease ends).
func (s *SQLite) NextDue(ctx context.Context) (time.Time, bool, error) {
	// ORDER BY ... LIMIT 1 walks the due index and stops at the first row;
	// MIN() with the parked condition would read every waiting recipient
	// (a million rows, twice a minute, with a big queue).
	var next sql.NullInt64
	err := s.db.QueryRowContext(ctx, `SELECT next_attempt_at FROM recipients
		WHERE state IN ('queued', 'deferred') AND parked = '' ORDER BY next_attempt_at LIMIT 1`).Scan(&next)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("store: next due: %w", err)
	}
	if !next.Valid || next.Int64 == parkedDue {
		return time.Time{}, false, nil // nothing, or only mail waiting for capacity
	}
	return time.Unix(0, next.Int64), true, nil
}

func isUniqueViolation(err error) bool {
	return err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed")
}
