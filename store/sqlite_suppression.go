package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

func upsertSuppression(tx *sql.Tx, s Suppression) error {
	_, err := tx.Exec(`INSERT INTO suppressions (address, reason, detail, created_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (address) DO UPDATE SET reason = excluded.reason, detail = excluded.detail, created_at = excluded.created_at`,
		s.Address, s.Reason, s.Detail, s.CreatedAt.UnixNano())
	return err
}

// Suppress adds or replaces an entry of the suppression list.
func (s *SQLite) Suppress(ctx context.Context, sup Suppression) error {
	if err := s.write(ctx, &writeOp{run: func(tx *sql.Tx) error { return upsertSuppression(tx, sup) }}); err != nil {
		return fmt.Errorf("store: suppress %s: %w", sup.Address, err)
	}
	return nil
}

// Unsuppress removes address from the list.
func (s *SQLite) Unsuppress(ctx context.Context, address string) error {
	return s.execOne(ctx, "unsuppress "+address, `DELETE FROM suppressions WHERE address = ?`, address)
}

func scanSuppression(row interface{ Scan(...any) error }) (Suppression, error) {
	var sup Suppression
	var at int64
	if err := row.Scan(&sup.Address, &sup.Reason, &sup.Detail, &at); err != nil {
		return Suppression{}, err
	}
	sup.CreatedAt = time.Unix(0, at)
	return sup, nil
}

// Suppression returns the entry for address.
func (s *SQLite) Suppression(ctx context.Context, address string) (Suppression, error) {
	sup, err := scanSuppression(s.db.QueryRowContext(ctx,
		`SELECT address, reason, detail, created_at FROM suppressions WHERE address = ?`, address))
	if errors.Is(err, sql.ErrNoRows) {
		return Suppression{}, fmt.Errorf("store: suppression of %s: %w", address, ErrNotFound)
	}
	if err != nil {
		return Suppression{}, fmt.Errorf("store: suppression of %s: %w", address, err)
	}
	return sup, nil
}

// ListSuppressions returns the whole list, newest first.
func (s *SQLite) ListSuppressions(ctx context.Context) ([]Suppression, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT address, reason, detail, created_at FROM suppressions ORDER BY created_at DESC`)
	if err != nil {
		return nil, fmt.Errorf("store: list suppressions: %w", err)
	}
	defer rows.Close()
	var out []Suppression
	for rows.Next() {
		sup, err := scanSuppression(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list suppressions: %w", err)
		}
		out = append(out, sup)
	}
	return out, rows.Err()
}

// Suppressed returns which of addresses are on the list (keyed as given).
func (s *SQLite) Suppressed(ctx context.Context, addresses []string) (map[string]bool, error) {
	out := map[string]bool{}
	if len(addresses) == 0 {
		return out, nil
	}
	args := make([]any, len(addresses))
	for i, a := range addresses {
		args[i] = a
	}
	rows, err := s.db.QueryContext(ctx, `SELECT address FROM suppressions WHERE address IN (?`+
		strings.Repeat(`, ?`, len(addresses)-1)+`)`, args...)
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
