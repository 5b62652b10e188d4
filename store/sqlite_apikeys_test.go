package store

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

func TestAPIKeys(t *testing.T) {
	st, err := OpenSQLite(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	now := time.Unix(1700000000, 0)
	if err := st.SetAPIKey(ctx, APIKey{ID: "SES1", Credential: "nobody", SealedSecret: []byte("x"), CreatedAt: now}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("key of a missing credential: %v, want ErrNotFound", err)
	}
	if err := st.CreateCredential(ctx, Credential{Name: "shop", Username: "u1", PasswordHash: "h", CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if err := st.SetAPIKey(ctx, APIKey{ID: "SES1", Credential: "shop", SealedSecret: []byte("one"), CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if err := st.SetAPIKey(ctx, APIKey{ID: "SES2", Credential: "shop", SealedSecret: []byte("two"), CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.APIKey(ctx, "SES1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a replaced key still found: %v", err)
	}
	k, err := st.APIKey(ctx, "SES2")
	if err != nil || k.Credential != "shop" || string(k.SealedSecret) != "two" || !k.CreatedAt.Equal(now) {
		t.Errorf("APIKey = %+v, %v", k, err)
	}
	if k, err := st.CredentialAPIKey(ctx, "shop"); err != nil || k.ID != "SES2" {
		t.Errorf("CredentialAPIKey = %+v, %v", k, err)
	}
	if err := st.DeleteCredential(ctx, "shop"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.APIKey(ctx, "SES2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("the key of a deleted credential still found: %v", err)
	}
}
