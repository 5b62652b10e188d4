package web

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/sesame-mail/sesame/store"
)

type failingStore struct{}

func (failingStore) Ping(context.Context) error { return errors.New("disk on fire") }

// fullStore answers but cannot write: its disk is full.
type fullStore struct{}

func (fullStore) Ping(context.Context) error { return nil }
func (fullStore) CheckStorage(context.Context) error {
	return errors.New("insufficient storage: writes to /data/sesame.db have failed")
}

func TestHealthAndReadiness(t *testing.T) {
	st, err := store.OpenSQLite(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	stopping := func() error { return errors.New("stopping") }
	for _, tt := range []struct {
		name  string
		store Pinger
		ready func() error
		path  string
		code  int
		body  string
	}{
		{"healthy", st, nil, "/healthz", 200, "ok\n"},
		{"store down", failingStore{}, nil, "/healthz", 503, "store unavailable\n"},
		{"ready", st, func() error { return nil }, "/readyz", 200, "ready\n"},
		{"stopping", st, stopping, "/readyz", 503, "stopping\n"},
		{"stopping but alive", st, stopping, "/healthz", 200, "ok\n"},
		{"not ready without store", failingStore{}, func() error { return nil }, "/readyz", 503, "store unavailable\n"},
		{"not ready on a full disk", fullStore{}, func() error { return nil }, "/readyz", 503,
			"disk full: the queue cannot be written, so mail is refused with 452 4.3.1; free space in the data directory (details in the log)\n"},
		{"alive on a full disk", fullStore{}, func() error { return nil }, "/healthz", 200, "ok\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(Handler(Deps{Store: tt.store, Ready: tt.ready, Log: slog.New(slog.DiscardHandler)}))
			defer srv.Close()
			resp, err := http.Get(srv.URL + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.code || string(body) != tt.body {
				t.Fatalf("got %d %q, want %d %q", resp.StatusCode, body, tt.code, tt.body)
			}
		})
	}
}
