package store

import (
	"context"
	"fmt"
	"math"
	"time"
)

// The state of outbound IPs (package warmup decides with it): what each
// sent per hour and provider, suspensions after throttling, operator
// pauses. And the waiting lines of mail parked for want of capacity.

// parkedDue is the next_attempt_at of a parked recipient: never due by
// time, only released by ClaimParked.
const parkedDue = math.MaxInt64

// IPSend counts messages an IP sent to a provider group in one hour.
type IPSend struct {
	IP       string // as warmup.IP.Name gives it
	Provider string
	Hour     time.Time // the hour's start
	Count    int
}

// IPSuspension stops an IP sending to a provider until a time, after the
// provider throttled it.
type IPSuspension struct {
	IP       string
	Provider string
	Until    time.Time
	Level    int    // suspensions in a row: the backoff doubles with each
	Reply    string // the throttling reply
}

// IPPause stops an IP sending altogether, until the operator resumes it.
type IPPause struct {
	IP     string
	Reason string
	At     time.Time
}

// IPs stores the state of outbound IPs and the parked mail.
type IPs interface {
	// IPSends returns the counts of hours from since on.
	IPSends(ctx context.Context, since time.Time) ([]IPSend, error)
	// PruneIPSends deletes counts of hours before before.
	PruneIPSends(ctx context.Context, before time.Time) error
	IPSuspensions(ctx context.Context) ([]IPSuspension, error)
	// SetIPSuspension stores s (replacing the IP × provider's previous one);
	// a zero Until deletes it.
	SetIPSuspension(ctx context.Context, s IPSuspension) error
	IPPauses(ctx context.Context) ([]IPPause, error)
	PauseIP(ctx context.Context, p IPPause) error
	// ResumeIP deletes the pause of ip; ErrNotFound if it was not paused.
	ResumeIP(ctx context.Context, ip string) error
	// ClaimParked leases up to max recipients parked under line, oldest
	// first, like Claim; the deliveries have Parked set.
	ClaimParked(ctx context.Context, line string, now time.Time, max int, lease time.Duration) ([]Delivery, error)
	// ParkedCounts counts the parked recipients of every waiting line.
	ParkedCounts(ctx context.Context) (map[string]int, error)
}

var _ IPs = (*SQLite)(nil)

// IPSends returns the counts of hours from since on.
func (s *SQLite) IPSends(ctx context.Context, since time.Time) ([]IPSend, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT ip, provider, hour, count FROM ip_sends WHERE hour >= ?`,
		since.Truncate(time.Hour).Unix())
	if err != nil {
		return nil, fmt.Errorf("store: IP counts: %w", err)
	}
	defer rows.Close()
	var out []IPSend
	for rows.Next() {
		var c IPSend
		var hour int64
		if err := rows.Scan(&c.IP, &c.Provider, &hour, &c.Count); err != nil {
			return nil, fmt.Errorf("store: IP counts: %w", err)
		}
		c.Hour = time.Unix(hour, 0).UTC()
		out = append(out, c)
	}
	return out, rows.Err()
}

// PruneIPSends deletes counts of hours before before.
func (s *SQLite) PruneIPSends(ctx context.Context, before time.Time) error {
	op := &writeOp{run: func(tx *txn) error {
		_, err := tx.Exec(`DELETE FROM ip_sends WHERE hour < ?`, before.Truncate(time.Hour).Unix())
		return err
	}}
	if err := s.write(ctx, op); err != nil {
		return fmt.Errorf("store: prune IP counts: %w", err)
	}
	return nil
}

// IPSuspensions returns every stored suspension, ended ones included.
func (s *SQLite) IPSuspensions(ctx context.Context) ([]IPSuspension, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT ip, provider, until, level, reply FROM ip_suspensions`)
	if err != nil {
		return nil, fmt.Errorf("store: IP suspensions: %w", err)
	}
	defer rows.Close()
	var out []IPSuspension
	for rows.Next() {
		var x IPSuspension
		var until int64
		if err := rows.Scan(&x.IP, &x.Provider, &until, &x.Level, &x.Reply); err != nil {
			return nil, fmt.Errorf("store: IP suspensions: %w", err)
		}
		x.Until = time.Unix(0, until)
		out = append(out, x)
	}
	return out, rows.Err()
}

// SetIPSuspension stores x, or deletes the IP × provider's when x.Until is
// zero.
func (s *SQLite) SetIPSuspension(ctx context.Context, x IPSuspension) error {
	op := &writeOp{run: func(tx *txn) error {
		if x.Until.IsZero() {
			_, err := tx.Exec(`DELETE FROM ip_suspensions WHERE ip = ? AND provider = ?`, x.IP, x.Provider)
			return err
		}
		_, err := tx.Exec(`INSERT INTO ip_suspensions (ip, provider, until, level, reply) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (ip, provider) DO UPDATE SET until = excluded.until, level = excluded.level, reply = excluded.reply`,
			x.IP, x.Provider, x.Until.UnixNano(), x.Level, x.Reply)
		return err
	}}
	if err := s.write(ctx, op); err != nil {
		return fmt.Errorf("store: suspend %s for %s: %w", x.IP, x.Provider, err)
	}
	return nil
}

// IPPauses returns the paused IPs.
func (s *SQLite) IPPauses(ctx context.Context) ([]IPPause, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT ip, reason, at FROM ip_pauses ORDER BY ip`)
	if err != nil {
		return nil, fmt.Errorf("store: IP pauses: %w", err)
	}
	defer rows.Close()
	var out []IPPause
	for rows.Next() {
		var p IPPause
		var at int64
		if err := rows.Scan(&p.IP, &p.Reason, &at); err != nil {
			return nil, fmt.Errorf("store: IP pauses: %w", err)
		}
		p.At = time.Unix(0, at)
		out = append(out, p)
	}
	return out, rows.Err()
}

// PauseIP stores p, replacing an earlier pause of the same IP.
func (s *SQLite) PauseIP(ctx context.Context, p IPPause) error {
	op := &writeOp{run: func(tx *txn) error {
		_, err := tx.Exec(`INSERT INTO ip_pauses (ip, reason, at) VALUES (?, ?, ?)
			ON CONFLICT (ip) DO UPDATE SET reason = excluded.reason, at = excluded.at`, p.IP, p.Reason, p.At.UnixNano())
		return err
	}}
	if err := s.write(ctx, op); err != nil {
		return fmt.Errorf("store: pause %s: %w", p.IP, err)
	}
	return nil
}

// ResumeIP deletes the pause of ip.
func (s *SQLite) ResumeIP(ctx context.Context, ip string) error {
	return s.execOne(ctx, "resume "+ip, `DELETE FROM ip_pauses WHERE ip = ?`, ip)
}

// ClaimParked leases up to max recipients parked under line, in the order
// they were queued (rowid order: recipients are inserted as messages
// arrive). They stay in the line while leased, so that if the process stops
// before their outcome is recorded (ReleaseLeases), they keep their place;
// Claim never hands them out.
func (s *SQLite) ClaimParked(ctx context.Context, line string, now time.Time, max int, lease time.Duration) ([]Delivery, error) {
	if max <= 0 {
		return nil, nil
	}
	var out []Delivery
	op := &writeOp{run: func(tx *txn) error {
		out = nil
		rows, err := tx.Query(`SELECT rowid, message_id, address, attempts FROM recipients
			WHERE parked = ? AND lease_until = 0 ORDER BY rowid LIMIT ?`, line, max)
		if err != nil {
			return err
		}
		index := map[string]int{}
		var rowids []int64
		for rows.Next() {
			var rowid int64
			var id string
			var r DueRecipient
			if err := rows.Scan(&rowid, &id, &r.Address, &r.Attempts); err != nil {
				rows.Close()
				return err
			}
			rowids = append(rowids, rowid)
			i, ok := index[id]
			if !ok {
				i = len(out)
				index[id] = i
				out = append(out, Delivery{QueueID: id, Parked: line})
			}
			out[i].Recipients = append(out[i].Recipients, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		until := now.Add(lease).UnixNano()
		for _, id := range rowids {
			if _, err := tx.Exec(`UPDATE recipients SET lease_until = ?, next_attempt_at = ? WHERE rowid = ?`,
				until, until, id); err != nil {
				return err
			}
		}
		out, err = loadDeliveries(tx, out)
		return err
	}}
	if err := s.write(ctx, op); err != nil {
		return nil, fmt.Errorf("store: claim parked %s: %w", line, err)
	}
	return out, nil
}

// ParkedCounts counts the parked recipients of every waiting line.
func (s *SQLite) ParkedCounts(ctx context.Context) (map[string]int, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT parked, COUNT(*) FROM recipients WHERE parked != '' GROUP BY parked`)
	if err != nil {
		return nil, fmt.Errorf("store: parked counts: %w", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var line string
		var n int
		if err := rows.Scan(&line, &n); err != nil {
			return nil, fmt.Errorf("store: parked counts: %w", err)
		}
		out[line] = n
	}
	return out, rows.Err()
}
