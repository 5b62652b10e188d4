package store

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestEventsAfter(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	if id, err := s.LastEventID(ctx); err != nil || id != 0 {
		t.Fatalf("LastEventID of an empty store = %d, %v", id, err)
	}
	now := time.Now()
	// ids 1..12: types cycle send, bounce, reject; credentials a, b.
	types := []string{EventSend, EventBounce, EventReject}
	for i := range 12 {
		e := Event{At: now.Add(time.Duration(i) * time.Second), Type: types[i%3], Credential: []string{"a", "b"}[i%2],
			QueueID: "Q", MessageID: "<m@x>", Recipient: "r@example.net", Reply: "550 no"}
		if e.Type == EventBounce {
			e.BounceType = BounceHard
		}
		if err := s.RecordEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	last, err := s.LastEventID(ctx)
	if err != nil || last != 12 {
		t.Fatalf("LastEventID = %d, %v; want 12", last, err)
	}

	ids := func(es []Event) []int64 {
		var out []int64
		for _, e := range es {
			out = append(out, e.ID)
		}
		return out
	}
	for _, tc := range []struct {
		name           string
		after, through int64
		f              EventFilter
		limit          int
		want           []int64
	}{
		{"all", 0, 12, EventFilter{}, 100, []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}},
		{"limit", 0, 12, EventFilter{}, 3, []int64{1, 2, 3}},
		{"after", 10, 12, EventFilter{}, 100, []int64{11, 12}},
		{"through", 3, 6, EventFilter{}, 100, []int64{4, 5, 6}},
		{"empty range", 6, 6, EventFilter{}, 100, nil},
		{"one type", 0, 12, EventFilter{Types: []string{EventBounce}}, 100, []int64{2, 5, 8, 11}},
		{"two types", 0, 12, EventFilter{Types: []string{EventBounce, EventReject}}, 100, []int64{2, 3, 5, 6, 8, 9, 11, 12}},
		{"credential", 0, 12, EventFilter{Credential: "a"}, 100, []int64{1, 3, 5, 7, 9, 11}},
		{"both", 0, 12, EventFilter{Types: []string{EventSend}, Credential: "b"}, 100, []int64{4, 10}},
		{"both limited", 0, 12, EventFilter{Types: []string{EventSend}, Credential: "b"}, 1, []int64{4}},
		{"no match", 0, 12, EventFilter{Credential: "c"}, 100, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.EventsAfter(ctx, tc.after, tc.through, tc.f, tc.limit)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(ids(got), tc.want) {
				t.Fatalf("EventsAfter = %v, want %v", ids(got), tc.want)
			}
			n, err := s.CountEventsAfter(ctx, tc.after, tc.through, tc.f)
			if err != nil {
				t.Fatal(err)
			}
			if tc.limit >= 12 && n != len(tc.want) {
				t.Fatalf("CountEventsAfter = %d, want %d", n, len(tc.want))
			}
		})
	}

	got, err := s.EventsAfter(ctx, 1, 2, EventFilter{}, 10)
	if err != nil || len(got) != 1 {
		t.Fatalf("EventsAfter(1, 2) = %v, %v", got, err)
	}
	if e := got[0]; e.Type != EventBounce || e.Credential != "b" || e.QueueID != "Q" || e.MessageID != "<m@x>" ||
		e.Recipient != "r@example.net" || e.Reply != "550 no" || e.BounceType != BounceHard ||
		!e.At.Equal(time.Unix(0, now.Add(time.Second).UnixNano())) {
		t.Fatalf("event 2 = %+v", e)
	}

	// Pruning every event does not make ids start again: a cursor stays
	// valid.
	if _, err := s.PruneEvents(ctx, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordEvent(ctx, Event{At: now, Type: EventReject}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.EventsAfter(ctx, 12, 1000, EventFilter{}, 10); err != nil || len(got) != 1 || got[0].ID != 13 {
		t.Fatalf("after pruning, EventsAfter(12) = %v, %v; want event 13", got, err)
	}
}

// The webhook queries walk the events by id (the primary key), whatever the
// filter: an index on credential would make them scan all of a credential's
// events to find the few after the cursor.
func TestEventsAfterPlan(t *testing.T) {
	s, _ := openTest(t)
	where, args := webhookWhere(1, 2, EventFilter{Types: []string{EventSend, EventBounce}, Credential: "a"})
	rows, err := s.db.Query(`EXPLAIN QUERY PLAN SELECT id FROM events`+where+` ORDER BY id LIMIT 100`, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	text := strings.Join(plan, "; ")
	if !strings.Contains(text, "INTEGER PRIMARY KEY") || strings.Contains(text, "TEMP B-TREE") {
		t.Fatalf("plan = %s; want a range scan of the primary key", text)
	}
}

func TestWebhookCursor(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	if _, err := s.WebhookCursor(ctx, "k1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("WebhookCursor of a new endpoint: %v, want ErrNotFound", err)
	}
	next := time.Now().Add(time.Minute)
	want := WebhookCursor{Endpoint: "k1", LastEvent: 7, Attempts: 3, NextAttempt: next, LastError: "HTTP 500"}
	if err := s.SaveWebhookCursor(ctx, want); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveWebhookCursor(ctx, WebhookCursor{Endpoint: "k2", LastEvent: 1}); err != nil {
		t.Fatal(err)
	}
	got, err := s.WebhookCursor(ctx, "k1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Endpoint != "k1" || got.LastEvent != 7 || got.Attempts != 3 || !got.NextAttempt.Equal(time.Unix(0, next.UnixNano())) ||
		got.LastError != "HTTP 500" {
		t.Fatalf("cursor = %+v, want %+v", got, want)
	}
	// Replaced whole: a success clears the failure.
	if err := s.SaveWebhookCursor(ctx, WebhookCursor{Endpoint: "k1", LastEvent: 8}); err != nil {
		t.Fatal(err)
	}
	got, err = s.WebhookCursor(ctx, "k1")
	if err != nil || got != (WebhookCursor{Endpoint: "k1", LastEvent: 8}) {
		t.Fatalf("cursor after success = %+v, %v", got, err)
	}
	if got, err := s.WebhookCursor(ctx, "k2"); err != nil || got.LastEvent != 1 {
		t.Fatalf("other cursor = %+v, %v", got, err)
	}
}
