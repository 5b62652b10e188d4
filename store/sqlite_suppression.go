package store

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// SetSuppressionPerCredential makes the automatic suppressions (hard
// bounces, complaints) apply only to the credential whose mail caused them;
// by default they are shared by every credential, as on SES's account-level
// list. Set it before the first write.
func (s *SQLite) SetSuppressionPerCredential(on bool) { s.suppressPerCredential.Store(on) }

const sqlUpsertSuppression = `INSERT INTO suppressions (address, credential, reason, detail, created_at) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (address, credential) DO UPDATE SET reason = excluded.reason, detail = excluded.detail,
			created_at = excluded.created_at`

// upsertSuppression stores sup; an automatic one (bounce, complaint) goes on
// the shared list unless suppression is per credential.
func (s *SQLite) upsertSuppression(tx *txn, sup Suppression) error {
	if sup.Reason != SuppressManual && !s.suppressPerCredential.Load() {
		sup.Credential = ""
	}
	_, err := tx.Exec(sqlUpsertSuppression,
		sup.Address, sup.Credential, sup.Reason, sup.Detail, sup.CreatedAt.UnixNano())
	return err
}

// Suppress adds or replaces an entry of the suppression list.
func (s *SQLite) Suppress(ctx context.Context, sup Suppression) error {
	if err := s.write(ctx, &writeOp{run: func(tx *txn) error { return s.upsertSuppression(tx, sup) }}); err != nil {
		return fmt.Errorf("store: suppress %s: %w", sup.Address, err)
	}
	return nil
}

// Unsuppress removes the entry of address for credential ("" the shared
// one).
func (s *SQLite) Unsuppress(ctx context.Context, address, credential string) error {
	return s.execOne(ctx, "unsuppress "+address, `DELETE FROM suppressions WHERE address = ? AND credential = ?`,
		address, credential)
}

const suppressionColumns = `address, credential, reason, detail, created_at`

func scanSuppression(row interface{ Scan(...any) error }) (Suppression, error) {
	var sup Suppression
	var at int64
	if err := row.Scan(&sup.Address, &sup.Credential, &sup.Reason, &sup.Detail, &at); err != nil {
		return Suppression{}, err
	}
	sup.CreatedAt = time.Unix(0, at)
	return sup, nil
}

func (s *SQLite) suppressions(ctx context.Context, where string, args ...any) ([]Suppression, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+suppressionColumns+` FROM suppressions`+where+
		` ORDER BY created_at DESC, credential`, args...)
	if err != nil {
		return nil, fmt.Errorf("store: suppressions: %w", err)
	}
	defer rows.Close()
	var out []Suppression
	for rows.Next() {
		sup, err := scanSuppression(rows)
		if err != nil {
			return nil, fmt.Errorf("store: suppressions: %w", err)
		}
		out = append(out, sup)
	}
	return out, rows.Err()
}

// Suppression returns the entries of address.
func (s *SQLite) Suppression(ctx context.Context, address string) ([]Suppression, error) {
	list, err := s.suppressions(ctx, ` WHERE address = ?`, address)
	if err == nil && len(list) == 0 {
		err = fmt.Errorf("store: suppression of %s: %w", address, ErrNotFound)
	}
	return list, err
}

// ListSuppressions returns the whole list, newest first.
func (s *SQLite) ListSuppressions(ctx context.Context) ([]Suppression, error) {
	return s.suppressions(ctx, "")
}

// sqlSuppressedOne asks whether one address is suppressed for a credential
// (or for all); Suppressed extends its IN list for more.
const sqlSuppressedOne = `SELECT address FROM suppressions WHERE credential IN ('', ?) AND address IN (?)`

// Suppressed returns which of addresses (keyed as given) credential's mail
// may not go to.
func (s *SQLite) Suppressed(ctx context.Context, credential string, addresses []string) (map[string]bool, error) {
	out := map[string]bool{}
	if len(addresses) == 0 {
		return out, nil
	}
	args := []any{credential}
	for _, a := range addresses {
		args = append(args, a)
	}
	query := sqlSuppressedOne // the relay's usual question: one recipient, prepared
	if len(addresses) > 1 {
		query = strings.TrimSuffix(sqlSuppressedOne, `)`) + strings.Repeat(`, ?`, len(addresses)-1) + `)`
	}
	rows, err := s.readRows(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("store: suppressed: %w", err)
	}
	defer rows.Close()
	found := map[string]bool{}
	for rows.Next() {
		var a string
		if err := rows.Scan(&a); err != nil {
			return nil, fmt.Errorf("store: suppressed: %w", err)
		}
		found[strings.ToLower(a)] = true
	}
	for _, a := range addresses {
		if found[strings.ToLower(a)] {
			out[a] = true
		}
	}
	return out, rows.Err()
}
