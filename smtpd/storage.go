package smtpd

import (
	"context"
	"time"

	"github.com/emersion/go-smtp"
)

// errNoStorage refuses mail while the queue's disk is full: 452 is RFC 5321's
// "insufficient system storage" (§4.2.3) and 4.3.1 RFC 3463's "mail system
// full". It is temporary, so clients keep the message and retry; a 5xx would
// make them drop it.
var errNoStorage = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1},
	Message: "Insufficient system storage: the message cannot be stored now; try again later"}

// StorageChecker is an ability the Queue may have. CheckStorage returns nil
// while the queue can write, and an error after a write failed for lack of
// space and until there is room again (store.SQLite.CheckStorage).
type StorageChecker interface {
	CheckStorage(ctx context.Context) error
}

// StorageReporter is another ability the Queue may have: NoteStorageFull
// tells it that a write in its data directory (a spool file, msgbuf.go)
// failed for lack of space, so that CheckStorage refuses the next
// transactions until there is room again (store.SQLite.NoteStorageFull).
type StorageReporter interface {
	NoteStorageFull(err error)
}

// noteSpoolFull passes a spool file's failure for lack of space to the
// Queue, when it can take it.
func (s *session) noteSpoolFull(err error) {
	if sr, ok := s.srv.deps.Queue.(StorageReporter); ok {
		sr.NoteStorageFull(err)
	}
}

// checkStorage refuses a transaction at MAIL FROM while the queue cannot
// write, as Postfix does when its queue file system is full: the client does
// not send a message that could not be kept anyway.
func (s *session) checkStorage() error {
	sc, ok := s.srv.deps.Queue.(StorageChecker)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sc.CheckStorage(ctx); err != nil {
		s.log.Warn("mail refused with 452 4.3.1: the queue cannot write", "err", err)
		return s.refuseNoStorage()
	}
	return nil
}

// refuseNoStorage counts a refusal for lack of space. Unlike refuse it
// records no reject event: that could not be stored either.
func (s *session) refuseNoStorage() error {
	s.refused = reasonTemporary
	s.srv.deps.Metrics.Submission(false, reasonTemporary)
	return errNoStorage
}
