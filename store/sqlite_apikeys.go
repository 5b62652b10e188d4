package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// APIKey is a credential's access key for the SES-compatible API. The
// store keeps the secret as it is handed it, sealed (package account); it
// never sees the secret itself.
type APIKey struct {
	ID           string // the access key id, public
	Credential   string // the credential's name
	SealedSecret []byte
	CreatedAt    time.Time
}

// APIKeys stores the API's access keys: at most one per credential.
type APIKeys interface {
	// SetAPIKey gives the credential k, replacing its key if it had one
	// (the old one stops working at once); ErrNotFound if there is no
	// such credential.
	SetAPIKey(ctx context.Context, k APIKey) error
	// APIKey returns the key whose id is id, or ErrNotFound.
	APIKey(ctx context.Context, id string) (APIKey, error)
	// CredentialAPIKey returns the credential's key, or ErrNotFound.
	CredentialAPIKey(ctx context.Context, credential string) (APIKey, error)
}

var _ APIKeys = (*SQLite)(nil)

// SetAPIKey implements APIKeys.
func (s *SQLite) SetAPIKey(ctx context.Context, k APIKey) error {
	defer s.admin.changed()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: set API key of %q: %w", k.Credential, err)
	}
	defer tx.Rollback()
	var one int
	err = tx.QueryRowContext(ctx, `SELECT 1 FROM credentials WHERE name = ?`, k.Credential).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("store: credential %q: %w", k.Credential, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("store: set API key of %q: %w", k.Credential, err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM api_keys WHERE credential = ?`, k.Credential); err != nil {
		return fmt.Errorf("store: set API key of %q: %w", k.Credential, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO api_keys (access_key_id, credential, sealed_secret, created_at) VALUES (?, ?, ?, ?)`,
		k.ID, k.Credential, k.SealedSecret, unixNano(k.CreatedAt)); err != nil {
		return fmt.Errorf("store: set API key of %q: %w", k.Credential, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: set API key of %q: %w", k.Credential, err)
	}
	return nil
}

// APIKey implements APIKeys.
func (s *SQLite) APIKey(ctx context.Context, id string) (APIKey, error) {
	return s.apiKeyWhere(ctx, "access_key_id", id)
}

// CredentialAPIKey implements APIKeys.
func (s *SQLite) CredentialAPIKey(ctx context.Context, credential string) (APIKey, error) {
	return s.apiKeyWhere(ctx, "credential", credential)
}

func (s *SQLite) apiKeyWhere(ctx context.Context, column, value string) (APIKey, error) {
	var k APIKey
	var created int64
	err := s.db.QueryRowContext(ctx, `SELECT access_key_id, credential, sealed_secret, created_at FROM api_keys WHERE `+column+` = ?`, value).
		Scan(&k.ID, &k.Credential, &k.SealedSecret, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return APIKey{}, fmt.Errorf("store: API key %s %q: %w", column, value, ErrNotFound)
	}
	if err != nil {
		return APIKey{}, fmt.Errorf("store: read API key: %w", err)
	}
	k.CreatedAt = fromNano(created)
	return k, nil
}
