package store

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

func TestTemplates(t *testing.T) {
	st, err := OpenSQLite(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	now := time.Unix(1700000000, 0)
	for _, name := range []string{"a", "b"} {
		if err := st.CreateCredential(ctx, Credential{Name: name, Username: "u-" + name, PasswordHash: "h", CreatedAt: now, UpdatedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	tpl := Template{Credential: "a", Name: "welcome", Subject: "Hi {{name}}", Text: "t", HTML: "h", CreatedAt: now}
	if err := st.CreateTemplate(ctx, tpl); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateTemplate(ctx, tpl); !errors.Is(err, ErrExists) {
		t.Errorf("a second template of the name: %v, want ErrExists", err)
	}
	if err := st.CreateTemplate(ctx, Template{Credential: "nobody", Name: "x"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("a template of a missing credential: %v, want ErrNotFound", err)
	}
	if _, err := st.Template(ctx, "b", "welcome"); !errors.Is(err, ErrNotFound) {
		t.Errorf("another credential's template: %v, want ErrNotFound", err)
	}
	tpl.Subject = "Hello {{name}}"
	if err := st.UpdateTemplate(ctx, tpl); err != nil {
		t.Fatal(err)
	}
	got, err := st.Template(ctx, "a", "welcome")
	if err != nil || got != tpl {
		t.Errorf("Template = %+v, %v; want %+v", got, err, tpl)
	}
	if list, err := st.ListTemplates(ctx, "a"); err != nil || len(list) != 1 || list[0].Name != "welcome" {
		t.Errorf("ListTemplates = %+v, %v", list, err)
	}
	if err := st.UpdateTemplate(ctx, Template{Credential: "b", Name: "welcome"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("updating another credential's template: %v", err)
	}
	if err := st.DeleteTemplate(ctx, "a", "welcome"); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteTemplate(ctx, "a", "welcome"); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleting it twice: %v", err)
	}
}
