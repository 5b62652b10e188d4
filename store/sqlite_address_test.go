package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// An address keeps the DMARC policy of its domain and the operator's
// --force choice.
func TestAddressDMARC(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	if err := s.CreateAddress(ctx, Address{Address: "a@example.com", Status: IdentityPending, CreatedAt: now,
		DMARCPolicy: "reject", DMARCCheckedAt: now, Forced: true}); err != nil {
		t.Fatal(err)
	}
	a, err := s.Address(ctx, "a@example.com")
	if err != nil || a.DMARCPolicy != "reject" || !a.DMARCCheckedAt.Equal(now) || !a.Forced {
		t.Fatalf("created: %+v, %v", a, err)
	}
	later := now.Add(time.Hour)
	if err := s.SetAddressDMARC(ctx, "a@example.com", "quarantine", later); err != nil {
		t.Fatal(err)
	}
	if err := s.SetAddressForced(ctx, "a@example.com", false); err != nil {
		t.Fatal(err)
	}
	list, err := s.ListAddresses(ctx)
	if err != nil || len(list) != 1 || list[0].DMARCPolicy != "quarantine" || !list[0].DMARCCheckedAt.Equal(later) || list[0].Forced {
		t.Fatalf("after the updates: %+v, %v", list, err)
	}
	// The cached read sees the change too.
	if a, err := s.Address(ctx, "a@example.com"); err != nil || a.DMARCPolicy != "quarantine" || a.Forced {
		t.Fatalf("Address after the updates: %+v, %v", a, err)
	}
	for name, err := range map[string]error{
		"SetAddressDMARC":  s.SetAddressDMARC(ctx, "nobody@example.com", "none", later),
		"SetAddressForced": s.SetAddressForced(ctx, "nobody@example.com", true),
	} {
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("%s of an unknown address: %v, want ErrNotFound", name, err)
		}
	}
}

// An address stored before DMARC policies were kept reads as never
// checked and not forced.
func TestMigrateAddressDMARC(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	script := schema
	for _, m := range migrations[:len(migrations)-1] {
		script += ";\n" + m
	}
	script += ";\nINSERT INTO addresses (address, status, created_at) VALUES ('old@example.com', 'verified', 1);" +
		fmt.Sprintf("\nPRAGMA user_version = %d;", len(migrations))
	if _, err := db.Exec(script); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a, err := s.Address(context.Background(), "old@example.com")
	if err != nil || a.Status != IdentityVerified || a.DMARCPolicy != "" || !a.DMARCCheckedAt.IsZero() || a.Forced {
		t.Fatalf("after migration: %+v, %v", a, err)
	}
}
