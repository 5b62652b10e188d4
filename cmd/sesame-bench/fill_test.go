package main

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/sesame-mail/sesame/store"
)

func TestFill(t *testing.T) {
	db := filepath.Join(t.TempDir(), "sesame.db")
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"fill", "--db", db, "--count", "50", "--defer", "1h"}, &out, &errOut); code != 0 {
		t.Fatalf("fill: exit %d: %s", code, errOut.String())
	}
	st, err := store.OpenSQLite(db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	list, err := st.QueueMessages(context.Background())
	if err != nil || len(list) != 50 {
		t.Fatalf("queue has %d messages (%v), want 50", len(list), err)
	}
	for _, m := range list {
		r := m.Recipients[0]
		if r.State != store.StateDeferred || r.NextAttempt.Before(time.Now().Add(50*time.Minute)) || m.Credential != "bench" {
			t.Fatalf("filled message %+v: want deferred for about an hour, for credential bench", m)
		}
	}
	if code := run(context.Background(), []string{"fill", "--count", "5"}, &out, &errOut); code != 2 {
		t.Errorf("fill without --db: exit %d, want 2", code)
	}
}
