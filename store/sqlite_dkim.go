package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// insertKey stores one key of domain; a key without a state is active from
// its creation.
func insertKey(tx *sql.Tx, domain string, k DKIMKey) error {
	if k.State == "" {
		k.State = KeyActive
	}
	if k.State == KeyActive && k.ActiveSince.IsZero() {
		k.ActiveSince = k.CreatedAt
	}
	_, err := tx.Exec(`INSERT INTO dkim_keys (domain, selector, algorithm, private_key, created_at, state, active_since, retire_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, domain, k.Selector, k.Algorithm, k.PrivateKey, unixNano(k.CreatedAt),
		k.State, unixNano(k.ActiveSince), unixNano(k.RetireAt))
	if isUniqueViolation(err) {
		return fmt.Errorf("store: key %s of %s: %w", k.Selector, domain, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("store: key %s of %s: %w", k.Selector, domain, err)
	}
	return nil
}

// AddDKIMKey stores a new key of an existing domain: ErrNotFound without
// the domain, ErrExists when the selector is taken.
func (s *SQLite) AddDKIMKey(ctx context.Context, domain string, k DKIMKey) error {
	defer s.admin.changed()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: add key to %s: %w", domain, err)
	}
	defer tx.Rollback()
	var one int
	err = tx.QueryRow(`SELECT 1 FROM domains WHERE name = ?`, domain).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("store: domain %s: %w", domain, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("store: add key to %s: %w", domain, err)
	}
	if err := insertKey(tx, domain, k); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: add key to %s: %w", domain, err)
	}
	return nil
}

// SetDKIMKeyStates writes the state, active_since and retire_at of the
// given keys of domain (by selector) in one transaction, so a rotation's
// switch is seen whole or not at all. ErrNotFound if one is missing.
func (s *SQLite) SetDKIMKeyStates(ctx context.Context, domain string, keys []DKIMKey) error {
	defer s.admin.changed()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: set key states of %s: %w", domain, err)
	}
	defer tx.Rollback()
	for _, k := range keys {
		res, err := tx.Exec(`UPDATE dkim_keys SET state = ?, active_since = ?, retire_at = ? WHERE domain = ? AND selector = ?`,
			k.State, unixNano(k.ActiveSince), unixNano(k.RetireAt), domain, k.Selector)
		if err != nil {
			return fmt.Errorf("store: set state of key %s of %s: %w", k.Selector, domain, err)
		}
		if n, err := res.RowsAffected(); err == nil && n == 0 {
			return fmt.Errorf("store: key %s of %s: %w", k.Selector, domain, ErrNotFound)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: set key states of %s: %w", domain, err)
	}
	return nil
}

// DeleteDKIMKey removes one key of domain.
func (s *SQLite) DeleteDKIMKey(ctx context.Context, domain, selector string) error {
	return s.execOne(ctx, "delete key "+selector+" of "+domain,
		`DELETE FROM dkim_keys WHERE domain = ? AND selector = ?`, domain, selector)
}
