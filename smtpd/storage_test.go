package smtpd

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/sesame-mail/sesame/store"
)

// fullDisk is the queue on a disk that can be filled: Enqueue fails as the
// store does on ENOSPC, and CheckStorage reports it, each on its own switch.
type fullDisk struct {
	*store.SQLite
	enqueueFails atomic.Bool
	checkFails   atomic.Bool
}

func (q *fullDisk) Enqueue(ctx context.Context, m *store.Message) error {
	if q.enqueueFails.Load() {
		return fmt.Errorf("store: enqueue: %w", &fs.PathError{Op: "write", Path: "/data/sesame.db-wal", Err: syscall.ENOSPC})
	}
	return q.SQLite.Enqueue(ctx, m)
}

func (q *fullDisk) CheckStorage(ctx context.Context) error {
	if q.checkFails.Load() {
		return fmt.Errorf("%w: writes have failed", store.ErrStorageFull)
	}
	return q.SQLite.CheckStorage(ctx)
}

func TestDiskFull(t *testing.T) {
	q := &fullDisk{}
	te := newTestEnvDeps(t, nil, func(d *Deps) {
		q.SQLite = d.Queue.(*store.SQLite)
		d.Queue = q
	})
	c := te.dial(t, te.username, te.password)
	msg := message("shop@example.com", "someone@example.net", "hi", "Hello.\r\n")
	want := func(step string, err error) {
		t.Helper()
		var se *smtp.SMTPError
		if !errors.As(err, &se) || se.Code != 452 || se.EnhancedCode != (smtp.EnhancedCode{4, 3, 1}) {
			t.Fatalf("%s: got %v, want 452 4.3.1", step, err)
		}
		c.Reset()
	}

	// The write that finds the disk full: refused at the end of DATA.
	q.enqueueFails.Store(true)
	_, err := send(c, "shop@example.com", []string{"someone@example.net"}, msg)
	want("DATA on a full disk", err)

	// While the store says it cannot write: refused at MAIL FROM, before
	// the client sends the message.
	q.checkFails.Store(true)
	want("MAIL FROM on a full disk", c.Mail("shop@example.com", nil))

	// Space freed: mail is taken again, on the same connection.
	q.enqueueFails.Store(false)
	q.checkFails.Store(false)
	if _, err := send(c, "shop@example.com", []string{"someone@example.net"}, msg); err != nil {
		t.Fatalf("after the disk was freed: %v", err)
	}
}
