package store

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestInboundLookupsUseIndexes checks that the lookups an inbound report
// makes search an index instead of scanning every event: one of them runs
// inside the committer's transaction, where a scan of a month of events
// would stall every submission.
func TestInboundLookupsUseIndexes(t *testing.T) {
	s, _ := openTest(t)
	// Some events of each kind, so the planner sees a table with rows.
	for i := range 50 {
		qid := NewQueueID()
		for _, typ := range []string{EventSend, EventDelivery} {
			e := Event{At: time.Now(), Type: typ, Credential: "c", QueueID: qid,
				MessageID: fmt.Sprintf("<%d@example.com>", i), Recipient: "r@example.net"}
			if err := s.RecordEvent(t.Context(), e); err != nil {
				t.Fatal(err)
			}
		}
	}
	for name, q := range map[string]struct {
		sql  string
		args []any
	}{
		"same event":                {sqlCountSameEvent, []any{EventBounce, "Q", "r@example.net"}},
		"send events by queue id":   {sqlSendEventsByQueueID, []any{"Q"}},
		"send events by Message-ID": {sqlSendEventsByMessageID, []any{"<1@example.com>"}},
	} {
		rows, err := s.db.QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+q.sql, q.args...)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		joined := strings.Join(plan, "; ")
		if !strings.Contains(joined, "USING INDEX events_") || strings.Contains(joined, "SCAN events") {
			t.Errorf("%s: query plan %q, want a search of an events index", name, joined)
		}
	}
}
