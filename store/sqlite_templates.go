package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Template is an email template of the SES API: a subject, text and HTML
// with {{variables}}, which belongs to one credential.
type Template struct {
	Credential, Name    string
	Subject, Text, HTML string
	CreatedAt           time.Time
}

// Templates stores email templates, by credential and name.
type Templates interface {
	CreateTemplate(ctx context.Context, t Template) error // ErrExists if the credential has one of that name
	Template(ctx context.Context, credential, name string) (Template, error)
	ListTemplates(ctx context.Context, credential string) ([]Template, error) // by name
	UpdateTemplate(ctx context.Context, t Template) error                     // ErrNotFound if there is none
	DeleteTemplate(ctx context.Context, credential, name string) error        // ErrNotFound if there is none
}

var _ Templates = (*SQLite)(nil)

// CreateTemplate implements Templates.
func (s *SQLite) CreateTemplate(ctx context.Context, t Template) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO email_templates (credential, name, subject, text, html, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
		t.Credential, t.Name, t.Subject, t.Text, t.HTML, unixNano(t.CreatedAt))
	if isUniqueViolation(err) {
		return fmt.Errorf("store: template %q: %w", t.Name, ErrExists)
	}
	if err != nil && strings.Contains(err.Error(), "FOREIGN KEY") {
		return fmt.Errorf("store: credential %q: %w", t.Credential, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("store: create template %q: %w", t.Name, err)
	}
	return nil
}

// Template implements Templates.
func (s *SQLite) Template(ctx context.Context, credential, name string) (Template, error) {
	t := Template{Credential: credential, Name: name}
	var created int64
	err := s.db.QueryRowContext(ctx, `SELECT subject, text, html, created_at FROM email_templates WHERE credential = ? AND name = ?`,
		credential, name).Scan(&t.Subject, &t.Text, &t.HTML, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return Template{}, fmt.Errorf("store: template %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return Template{}, fmt.Errorf("store: read template %q: %w", name, err)
	}
	t.CreatedAt = fromNano(created)
	return t, nil
}

// ListTemplates implements Templates.
func (s *SQLite) ListTemplates(ctx context.Context, credential string) ([]Template, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, subject, text, html, created_at FROM email_templates WHERE credential = ? ORDER BY name`, credential)
	if err != nil {
		return nil, fmt.Errorf("store: list templates: %w", err)
	}
	defer rows.Close()
	var out []Template
	for rows.Next() {
		t := Template{Credential: credential}
		var created int64
		if err := rows.Scan(&t.Name, &t.Subject, &t.Text, &t.HTML, &created); err != nil {
			return nil, fmt.Errorf("store: list templates: %w", err)
		}
		t.CreatedAt = fromNano(created)
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list templates: %w", err)
	}
	return out, nil
}

// UpdateTemplate implements Templates.
func (s *SQLite) UpdateTemplate(ctx context.Context, t Template) error {
	return s.execOne(ctx, fmt.Sprintf("update template %q", t.Name),
		`UPDATE email_templates SET subject = ?, text = ?, html = ? WHERE credential = ? AND name = ?`, t.Subject, t.Text, t.HTML, t.Credential, t.Name)
}

// DeleteTemplate implements Templates.
func (s *SQLite) DeleteTemplate(ctx context.Context, credential, name string) error {
	return s.execOne(ctx, fmt.Sprintf("delete template %q", name),
		`DELETE FROM email_templates WHERE credential = ? AND name = ?`, credential, name)
}
