package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// Credentials and domains change rarely and mostly from the admin commands,
// so these methods use plain transactions rather than the committer.

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// CreateCredential stores c with its Allowed identities, in one
// transaction (a credential meant to be restricted never exists without its
// restriction); ErrExists if its name or username is taken.
func (s *SQLite) CreateCredential(ctx context.Context, c Credential) error {
	defer s.admin.changed()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: create credential %q: %w", c.Name, err)
	}
	defer tx.Rollback()
	_, err = tx.Exec(`INSERT INTO credentials (name, username, password_hash, created_at, updated_at,
		sandbox, daily_quota, max_send_rate) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		c.Name, c.Username, c.PasswordHash, unixNano(c.CreatedAt), unixNano(c.UpdatedAt), c.Sandbox, c.DailyQuota, c.MaxSendRate)
	if isUniqueViolation(err) {
		return fmt.Errorf("store: credential %q: %w", c.Name, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("store: create credential %q: %w", c.Name, err)
	}
	for _, id := range c.Allowed {
		if _, err := tx.Exec(`INSERT OR IGNORE INTO credential_identities (credential, identity) VALUES (?, ?)`, c.Name, id); err != nil {
			return fmt.Errorf("store: create credential %q: %w", c.Name, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: create credential %q: %w", c.Name, err)
	}
	return nil
}

const credentialColumns = `name, username, password_hash, created_at, updated_at, last_used_at,
	sandbox, daily_quota, max_send_rate, paused_reason, paused_at, pool,
	(SELECT group_concat(identity, ' ') FROM credential_identities WHERE credential = name)`

func scanCredential(row interface{ Scan(...any) error }) (Credential, error) {
	var c Credential
	var created, updated, used, paused int64
	var allowed sql.NullString
	if err := row.Scan(&c.Name, &c.Username, &c.PasswordHash, &created, &updated, &used,
		&c.Sandbox, &c.DailyQuota, &c.MaxSendRate, &c.PausedReason, &paused, &c.Pool, &allowed); err != nil {
		return Credential{}, err
	}
	c.CreatedAt, c.UpdatedAt, c.LastUsedAt, c.PausedAt = fromNano(created), fromNano(updated), fromNano(used), fromNano(paused)
	if allowed.String != "" {
		c.Allowed = strings.Fields(allowed.String)
		sort.Strings(c.Allowed)
	}
	return c, nil
}

func (s *SQLite) credentialWhere(ctx context.Context, column, value string) (Credential, error) {
	row := s.db.QueryRowContext(ctx, `SELECT `+credentialColumns+` FROM credentials WHERE `+column+` = ?`, value)
	c, err := scanCredential(row)
	if errors.Is(err, sql.ErrNoRows) {
		return Credential{}, fmt.Errorf("store: credential %s %q: %w", column, value, ErrNotFound)
	}
	if err != nil {
		return Credential{}, fmt.Errorf("store: read credential: %w", err)
	}
	return c, nil
}

// Credential returns the credential named name.
func (s *SQLite) Credential(ctx context.Context, name string) (Credential, error) {
	return s.credentialWhere(ctx, "name", name)
}

// CredentialByUsername returns the credential whose SMTP username is username.
// Every login asks (a client that logs in for each message asks for each
// message), so the answer is kept as the other hot reads are (cache.go).
func (s *SQLite) CredentialByUsername(ctx context.Context, username string) (Credential, error) {
	c, err := cachedRead(&s.admin, "username\x00"+username, func() (Credential, error) {
		return s.credentialWhere(ctx, "username", username)
	})
	c.Allowed = slices.Clone(c.Allowed) // the cached answer is shared
	return c, err
}

// ListCredentials returns every credential, by name.
func (s *SQLite) ListCredentials(ctx context.Context) ([]Credential, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+credentialColumns+` FROM credentials ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("store: list credentials: %w", err)
	}
	defer rows.Close()
	var out []Credential
	for rows.Next() {
		c, err := scanCredential(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list credentials: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

func (s *SQLite) execOne(ctx context.Context, what string, query string, args ...any) error {
	defer s.admin.changed()
	res, err := s.db.ExecContext(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("store: %s: %w", what, err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return fmt.Errorf("store: %s: %w", what, ErrNotFound)
	}
	return nil
}

// SetPassword replaces the password hash of the credential named name.
func (s *SQLite) SetPassword(ctx context.Context, name, passwordHash string, now time.Time) error {
	return s.execOne(ctx, fmt.Sprintf("set password of %q", name),
		`UPDATE credentials SET password_hash = ?, updated_at = ? WHERE name = ?`, passwordHash, unixNano(now), name)
}

// TouchCredential records that the credential was used at usedAt.
func (s *SQLite) TouchCredential(ctx context.Context, name string, usedAt time.Time) error {
	return s.execOne(ctx, fmt.Sprintf("touch credential %q", name),
		`UPDATE credentials SET last_used_at = ? WHERE name = ?`, unixNano(usedAt), name)
}

// DeleteCredential removes the credential named name.
func (s *SQLite) DeleteCredential(ctx context.Context, name string) error {
	return s.execOne(ctx, fmt.Sprintf("delete credential %q", name), `DELETE FROM credentials WHERE name = ?`, name)
}

// SetSandbox puts the credential in the sandbox, or takes it out.
func (s *SQLite) SetSandbox(ctx context.Context, name string, sandbox bool) error {
	return s.execOne(ctx, fmt.Sprintf("set sandbox of %q", name),
		`UPDATE credentials SET sandbox = ? WHERE name = ?`, sandbox, name)
}

// SetQuota sets the credential's own quotas; 0 means the configured default.
func (s *SQLite) SetQuota(ctx context.Context, name string, daily int, rate float64) error {
	return s.execOne(ctx, fmt.Sprintf("set quota of %q", name),
		`UPDATE credentials SET daily_quota = ?, max_send_rate = ? WHERE name = ?`, daily, rate, name)
}

// SetAllowed replaces the identities the credential may send as; none means
// every verified identity.
func (s *SQLite) SetAllowed(ctx context.Context, name string, identities []string) error {
	defer s.admin.changed()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: allow identities for %q: %w", name, err)
	}
	defer tx.Rollback()
	var one int
	if err := tx.QueryRow(`SELECT 1 FROM credentials WHERE name = ?`, name).Scan(&one); errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("store: credential %q: %w", name, ErrNotFound)
	} else if err != nil {
		return fmt.Errorf("store: allow identities for %q: %w", name, err)
	}
	if _, err := tx.Exec(`DELETE FROM credential_identities WHERE credential = ?`, name); err != nil {
		return fmt.Errorf("store: allow identities for %q: %w", name, err)
	}
	for _, id := range identities {
		if _, err := tx.Exec(`INSERT OR IGNORE INTO credential_identities (credential, identity) VALUES (?, ?)`, name, id); err != nil {
			return fmt.Errorf("store: allow identities for %q: %w", name, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: allow identities for %q: %w", name, err)
	}
	return nil
}

// PausedReason is why the credential's sending is paused, "" if it is not
// (or if the credential is gone: AUTH refuses those).
func (s *SQLite) PausedReason(ctx context.Context, name string) (string, error) {
	return cachedRead(&s.admin, "paused\x00"+name, func() (string, error) { return s.pausedReason(ctx, name) })
}

func (s *SQLite) pausedReason(ctx context.Context, name string) (string, error) {
	var reason string
	err := s.readRow(ctx, sqlPausedReason, name).Scan(&reason)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("store: standing of %q: %w", name, err)
	}
	return reason, nil
}

// SetPaused pauses the credential's sending with reason, or resumes it when
// reason is ""; at is when (a resume's time starts the reputation window
// afresh).
func (s *SQLite) SetPaused(ctx context.Context, name, reason string, at time.Time) error {
	return s.execOne(ctx, fmt.Sprintf("pause %q", name),
		`UPDATE credentials SET paused_reason = ?, paused_at = ? WHERE name = ?`, reason, unixNano(at), name)
}

// SetPool assigns the credential's mail to an IP pool; "" is the default.
func (s *SQLite) SetPool(ctx context.Context, name, pool string) error {
	return s.execOne(ctx, fmt.Sprintf("set pool of %q", name), `UPDATE credentials SET pool = ? WHERE name = ?`, pool, name)
}

// Sent counts the recipients the credential submitted since since, rounded
// down to the hour.
func (s *SQLite) Sent(ctx context.Context, name string, since time.Time) (int, error) {
	var n sql.NullInt64
	err := s.db.QueryRowContext(ctx, `SELECT SUM(count) FROM sends WHERE credential = ? AND hour >= ?`,
		name, since.Truncate(time.Hour).Unix()).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("store: sends of %q: %w", name, err)
	}
	return int(n.Int64), nil
}

// SentByHour returns the credential's recipient counts per hour (keyed by
// the hour's start) since since, rounded down to the hour.
func (s *SQLite) SentByHour(ctx context.Context, name string, since time.Time) (map[time.Time]int, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT hour, count FROM sends WHERE credential = ? AND hour >= ?`,
		name, since.Truncate(time.Hour).Unix())
	if err != nil {
		return nil, fmt.Errorf("store: sends of %q: %w", name, err)
	}
	defer rows.Close()
	out := map[time.Time]int{}
	for rows.Next() {
		var hour int64
		var n int
		if err := rows.Scan(&hour, &n); err != nil {
			return nil, fmt.Errorf("store: sends of %q: %w", name, err)
		}
		out[time.Unix(hour, 0)] = n
	}
	return out, rows.Err()
}

// CreateDomain stores d with its keys; ErrExists if the domain is present.
func (s *SQLite) CreateDomain(ctx context.Context, d Domain) error {
	defer s.admin.changed()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: create domain %s: %w", d.Name, err)
	}
	defer tx.Rollback()
	if d.Status == "" {
		d.Status = IdentityPending
	}
	_, err = tx.Exec(`INSERT INTO domains (name, created_at, status, status_since) VALUES (?, ?, ?, ?)`,
		d.Name, unixNano(d.CreatedAt), d.Status, unixNano(d.CreatedAt))
	if isUniqueViolation(err) {
		return fmt.Errorf("store: domain %s: %w", d.Name, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("store: create domain %s: %w", d.Name, err)
	}
	for _, k := range d.Keys {
		if err := insertKey(tx, d.Name, k); err != nil {
			return fmt.Errorf("store: create domain %s: key %s: %w", d.Name, k.Selector, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: create domain %s: %w", d.Name, err)
	}
	return nil
}

// DomainStatusOf returns the domain named name without its keys: what an
// authorization check needs, one indexed read with no key material.
func (s *SQLite) DomainStatusOf(ctx context.Context, name string) (Domain, error) {
	return cachedRead(&s.admin, "domain\x00"+name, func() (Domain, error) { return s.domainStatusOf(ctx, name) })
}

func (s *SQLite) domainStatusOf(ctx context.Context, name string) (Domain, error) {
	d, err := scanDomain(s.readRow(ctx, sqlDomainStatus, name))
	if errors.Is(err, sql.ErrNoRows) {
		return Domain{}, fmt.Errorf("store: domain %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return Domain{}, fmt.Errorf("store: read domain %s: %w", name, err)
	}
	return d, nil
}

// Domain returns the domain named name with its keys (RSA first).
func (s *SQLite) Domain(ctx context.Context, name string) (Domain, error) {
	d, err := cachedRead(&s.admin, "keys\x00"+name, func() (Domain, error) {
		d, err := s.domainStatusOf(ctx, name)
		if err != nil {
			return Domain{}, err
		}
		d.Keys, err = s.domainKeys(ctx, name)
		if err != nil {
			return Domain{}, err
		}
		return d, nil
	})
	d.Keys = slices.Clone(d.Keys) // the cached answer is shared
	return d, err
}

const domainColumns = `name, created_at, status, status_since, last_checked, failed_checks`

func scanDomain(row interface{ Scan(...any) error }) (Domain, error) {
	var d Domain
	var created, since, checked int64
	if err := row.Scan(&d.Name, &created, &d.Status, &since, &checked, &d.FailedChecks); err != nil {
		return Domain{}, err
	}
	d.CreatedAt, d.StatusSince, d.LastChecked = fromNano(created), fromNano(since), fromNano(checked)
	return d, nil
}

// SetDomainStatus records the outcome of a verification check.
func (s *SQLite) SetDomainStatus(ctx context.Context, name string, st DomainStatus) error {
	return s.execOne(ctx, "set status of domain "+name,
		`UPDATE domains SET status = ?, status_since = ?, last_checked = ?, failed_checks = ? WHERE name = ?`,
		st.Status, unixNano(st.StatusSince), unixNano(st.LastChecked), st.FailedChecks, name)
}

func (s *SQLite) domainKeys(ctx context.Context, name string) ([]DKIMKey, error) {
	rows, err := s.readRows(ctx, sqlDomainKeys, name)
	if err != nil {
		return nil, fmt.Errorf("store: read keys of %s: %w", name, err)
	}
	defer rows.Close()
	var keys []DKIMKey
	for rows.Next() {
		var k DKIMKey
		var created, activeSince, retireAt int64
		if err := rows.Scan(&k.Selector, &k.Algorithm, &k.PrivateKey, &created, &k.State, &activeSince, &retireAt); err != nil {
			return nil, fmt.Errorf("store: read keys of %s: %w", name, err)
		}
		k.CreatedAt, k.ActiveSince, k.RetireAt = fromNano(created), fromNano(activeSince), fromNano(retireAt)
		keys = append(keys, k)
	}
	return keys, rows.Err()
}

// ListDomains returns every domain with its keys, by name.
func (s *SQLite) ListDomains(ctx context.Context) ([]Domain, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+domainColumns+` FROM domains ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("store: list domains: %w", err)
	}
	var out []Domain
	for rows.Next() {
		d, err := scanDomain(rows)
		if err != nil {
			rows.Close()
			return nil, fmt.Errorf("store: list domains: %w", err)
		}
		out = append(out, d)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list domains: %w", err)
	}
	for i := range out {
		if out[i].Keys, err = s.domainKeys(ctx, out[i].Name); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// DeleteDomain removes the domain and its keys.
func (s *SQLite) DeleteDomain(ctx context.Context, name string) error {
	return s.execOne(ctx, "delete domain "+name, `DELETE FROM domains WHERE name = ?`, name)
}

// CreateAddress stores a new address identity; ErrExists if present.
func (s *SQLite) CreateAddress(ctx context.Context, a Address) error {
	defer s.admin.changed()
	_, err := s.db.ExecContext(ctx, `INSERT INTO addresses (address, status, token_hash, token_expires, created_at, verified_at,
		dmarc_policy, dmarc_checked_at, forced)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, a.Address, a.Status, a.TokenHash, unixNano(a.TokenExpires), unixNano(a.CreatedAt), unixNano(a.VerifiedAt),
		a.DMARCPolicy, unixNano(a.DMARCCheckedAt), a.Forced)
	if isUniqueViolation(err) {
		return fmt.Errorf("store: address %s: %w", a.Address, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("store: create address %s: %w", a.Address, err)
	}
	return nil
}

const addressColumns = `address, status, token_hash, token_expires, created_at, verified_at, dmarc_policy, dmarc_checked_at, forced`

func scanAddress(row interface{ Scan(...any) error }) (Address, error) {
	var a Address
	var expires, created, verified, checked int64
	if err := row.Scan(&a.Address, &a.Status, &a.TokenHash, &expires, &created, &verified, &a.DMARCPolicy, &checked, &a.Forced); err != nil {
		return Address{}, err
	}
	a.TokenExpires, a.CreatedAt, a.VerifiedAt, a.DMARCCheckedAt = fromNano(expires), fromNano(created), fromNano(verified), fromNano(checked)
	return a, nil
}

func (s *SQLite) addressWhere(ctx context.Context, column, value string) (Address, error) {
	a, err := scanAddress(s.db.QueryRowContext(ctx, `SELECT `+addressColumns+` FROM addresses WHERE `+column+` = ?`, value))
	if errors.Is(err, sql.ErrNoRows) {
		return Address{}, fmt.Errorf("store: address by %s: %w", column, ErrNotFound)
	}
	if err != nil {
		return Address{}, fmt.Errorf("store: read address: %w", err)
	}
	return a, nil
}

// Address returns the address identity address.
func (s *SQLite) Address(ctx context.Context, address string) (Address, error) {
	return cachedRead(&s.admin, "address\x00"+address, func() (Address, error) {
		return s.addressWhere(ctx, "address", address)
	})
}

// AddressByToken returns the address whose verification token hashes to
// tokenHash.
func (s *SQLite) AddressByToken(ctx context.Context, tokenHash string) (Address, error) {
	if tokenHash == "" {
		return Address{}, fmt.Errorf("store: address by token: %w", ErrNotFound)
	}
	return s.addressWhere(ctx, "token_hash", tokenHash)
}

// ListAddresses returns every address identity, by address.
func (s *SQLite) ListAddresses(ctx context.Context) ([]Address, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+addressColumns+` FROM addresses ORDER BY address`)
	if err != nil {
		return nil, fmt.Errorf("store: list addresses: %w", err)
	}
	defer rows.Close()
	var out []Address
	for rows.Next() {
		a, err := scanAddress(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list addresses: %w", err)
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// DeleteAddress removes the address identity.
func (s *SQLite) DeleteAddress(ctx context.Context, address string) error {
	return s.execOne(ctx, "delete address "+address, `DELETE FROM addresses WHERE address = ?`, address)
}

// SetAddressToken gives the address a new verification token.
func (s *SQLite) SetAddressToken(ctx context.Context, address, tokenHash string, expires time.Time) error {
	return s.execOne(ctx, "set token of "+address,
		`UPDATE addresses SET token_hash = ?, token_expires = ?, status = CASE status WHEN 'verified' THEN status ELSE 'pending' END
		WHERE address = ?`, tokenHash, unixNano(expires), address)
}

// VerifyAddress marks the address verified and forgets its token, so a link
// works once.
func (s *SQLite) VerifyAddress(ctx context.Context, address string, at time.Time) error {
	return s.execOne(ctx, "verify "+address,
		`UPDATE addresses SET status = 'verified', verified_at = ?, token_hash = '', token_expires = 0 WHERE address = ?`,
		unixNano(at), address)
}

// RecordLoginFailures replaces the summary of failed logins of the
// credential whose username is username; nothing happens when no credential
// has it. It changes nothing the administrative cache holds.
func (s *SQLite) RecordLoginFailures(ctx context.Context, username string, f LoginFailures) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO login_failures (credential, first_at, last_at, failures, networks,
		last_network, blocked_networks, blocked_until, updated_at)
		SELECT name, ?, ?, ?, ?, ?, ?, ?, ? FROM credentials WHERE username = ?
		ON CONFLICT (credential) DO UPDATE SET first_at = excluded.first_at, last_at = excluded.last_at,
			failures = excluded.failures, networks = excluded.networks, last_network = excluded.last_network,
			blocked_networks = excluded.blocked_networks, blocked_until = excluded.blocked_until,
			updated_at = excluded.updated_at`,
		unixNano(f.First), unixNano(f.Last), f.Failures, f.Networks, f.LastNetwork, f.BlockedNetworks,
		unixNano(f.BlockedUntil), unixNano(f.UpdatedAt), username)
	if err != nil {
		return fmt.Errorf("store: record failed logins: %w", err)
	}
	return nil
}

// LoginFailures returns the credential's last summary of failed logins, or
// the zero LoginFailures.
func (s *SQLite) LoginFailures(ctx context.Context, name string) (LoginFailures, error) {
	var f LoginFailures
	var first, last, until, updated int64
	err := s.db.QueryRowContext(ctx, `SELECT first_at, last_at, failures, networks, last_network, blocked_networks,
		blocked_until, updated_at FROM login_failures WHERE credential = ?`, name).
		Scan(&first, &last, &f.Failures, &f.Networks, &f.LastNetwork, &f.BlockedNetworks, &until, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return LoginFailures{}, nil
	}
	if err != nil {
		return LoginFailures{}, fmt.Errorf("store: failed logins of %q: %w", name, err)
	}
	f.First, f.Last, f.BlockedUntil, f.UpdatedAt = fromNano(first), fromNano(last), fromNano(until), fromNano(updated)
	return f, nil
}

// SetAddressDMARC records the DMARC policy of the address's domain, as
// looked up at checked.
func (s *SQLite) SetAddressDMARC(ctx context.Context, address, policy string, checked time.Time) error {
	return s.execOne(ctx, "set DMARC policy of "+address,
		`UPDATE addresses SET dmarc_policy = ?, dmarc_checked_at = ? WHERE address = ?`, policy, unixNano(checked), address)
}

// SetAddressForced records whether the operator lets the address send
// whatever its domain's DMARC policy.
func (s *SQLite) SetAddressForced(ctx context.Context, address string, forced bool) error {
	return s.execOne(ctx, "set forced of "+address, `UPDATE addresses SET forced = ? WHERE address = ?`, forced, address)
}
