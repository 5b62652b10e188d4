package store

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// An inbound message keeps whether it was verified and why, in lists and
// alone.
func TestInboundVerification(t *testing.T) {
	s, err := OpenSQLite(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	at := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	for _, m := range []InboundMessage{
		{ReceivedAt: at, Kind: "arf", Status: InboundProcessed, Verified: true, Verification: "DKIM signature d=arf.mail.yahoo.com", Raw: []byte("a")},
		{ReceivedAt: at, Kind: "dsn", Status: InboundUnverified, Verification: "came to the feedback address", Raw: []byte("b")},
	} {
		if _, err := s.RecordInbound(ctx, m, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	list, err := s.InboundMessages(ctx, InboundUnverified, 10)
	if err != nil || len(list) != 1 || list[0].Verified || list[0].Verification != "came to the feedback address" {
		t.Fatalf("unverified list %+v, %v", list, err)
	}
	m, err := s.InboundMessage(ctx, 1)
	if err != nil || !m.Verified || m.Verification != "DKIM signature d=arf.mail.yahoo.com" || string(m.Raw) != "a" {
		t.Fatalf("message 1: %+v, %v", m, err)
	}
}
