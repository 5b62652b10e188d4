package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
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

// CreateCredential stores c; ErrExists if its name or username is taken.
func (s *SQLite) CreateCredential(ctx context.Context, c Credential) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO credentials (name, username, password_hash, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?)`, c.Name, c.Username, c.PasswordHash, unixNano(c.CreatedAt), unixNano(c.UpdatedAt))
	if isUniqueViolation(err) {
		return fmt.Errorf("store: credential %q: %w", c.Name, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("store: create credential %q: %w", c.Name, err)
	}
	return nil
}

const credentialColumns = `name, username, password_hash, created_at, updated_at, last_used_at`

func scanCredential(row interface{ Scan(...any) error }) (Credential, error) {
	var c Credential
	var created, updated, used int64
	if err := row.Scan(&c.Name, &c.Username, &c.PasswordHash, &created, &updated, &used); err != nil {
		return Credential{}, err
	}
	c.CreatedAt, c.UpdatedAt, c.LastUsedAt = fromNano(created), fromNano(updated), fromNano(used)
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
func (s *SQLite) CredentialByUsername(ctx context.Context, username string) (Credential, error) {
	return s.credentialWhere(ctx, "username", username)
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

// CreateDomain stores d with its keys; ErrExists if the domain is present.
func (s *SQLite) CreateDomain(ctx context.Context, d Domain) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: create domain %s: %w", d.Name, err)
	}
	defer tx.Rollback()
	_, err = tx.Exec(`INSERT INTO domains (name, created_at) VALUES (?, ?)`, d.Name, unixNano(d.CreatedAt))
	if isUniqueViolation(err) {
		return fmt.Errorf("store: domain %s: %w", d.Name, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("store: create domain %s: %w", d.Name, err)
	}
	for _, k := range d.Keys {
		_, err := tx.Exec(`INSERT INTO dkim_keys (domain, selector, algorithm, private_key, created_at)
			VALUES (?, ?, ?, ?, ?)`, d.Name, k.Selector, k.Algorithm, k.PrivateKey, unixNano(k.CreatedAt))
		if err != nil {
			return fmt.Errorf("store: create domain %s: key %s: %w", d.Name, k.Selector, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: create domain %s: %w", d.Name, err)
	}
	return nil
}

// Domain returns the domain named name with its keys (RSA first).
func (s *SQLite) Domain(ctx context.Context, name string) (Domain, error) {
	d := Domain{Name: name}
	var created int64
	err := s.db.QueryRowContext(ctx, `SELECT created_at FROM domains WHERE name = ?`, name).Scan(&created)
	if errors.Is(err, sql.ErrNoRows) {
		return Domain{}, fmt.Errorf("store: domain %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return Domain{}, fmt.Errorf("store: read domain %s: %w", name, err)
	}
	d.CreatedAt = fromNano(created)
	d.Keys, err = s.domainKeys(ctx, name)
	if err != nil {
		return Domain{}, err
	}
	return d, nil
}

func (s *SQLite) domainKeys(ctx context.Context, name string) ([]DKIMKey, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT selector, algorithm, private_key, created_at FROM dkim_keys
		WHERE domain = ? ORDER BY algorithm DESC, selector`, name)
	if err != nil {
		return nil, fmt.Errorf("store: read keys of %s: %w", name, err)
	}
	defer rows.Close()
	var keys []DKIMKey
	for rows.Next() {
		var k DKIMKey
		var created int64
		if err := rows.Scan(&k.Selector, &k.Algorithm, &k.PrivateKey, &created); err != nil {
			return nil, fmt.Errorf("store: read keys of %s: %w", name, err)
		}
		k.CreatedAt = fromNano(created)
		keys = append(keys, k)
	}
	return keys, rows.Err()
}

// ListDomains returns every domain with its keys, by name.
func (s *SQLite) ListDomains(ctx context.Context) ([]Domain, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, created_at FROM domains ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("store: list domains: %w", err)
	}
	var out []Domain
	for rows.Next() {
		var d Domain
		var created int64
		if err := rows.Scan(&d.Name, &created); err != nil {
			rows.Close()
			return nil, fmt.Errorf("store: list domains: %w", err)
		}
		d.CreatedAt = fromNano(created)
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
