package account

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sesame-mail/sesame/store"
	"github.com/sesame-mail/sesame/testkit"
)

var testDefaults = QuotaDefaults{Daily: 1000, Rate: 14, SandboxDaily: 200, SandboxRate: 1}

// send reserves and, when admitted, queues a message with n recipients in
// the real store, as the submission service does.
func send(t *testing.T, q *Quotas, st *store.SQLite, c store.Credential, now time.Time, n int) error {
	t.Helper()
	done, err := q.Reserve(context.Background(), c, n)
	if err != nil {
		return err
	}
	defer done(true)
	rcpts := make([]string, n)
	for i := range rcpts {
		rcpts[i] = "r" + string(rune('a'+i)) + "@example.net"
	}
	m := &store.Message{Credential: c.Name, Sender: "s@example.com", Recipients: rcpts, ReceivedAt: now, Data: []byte("x\r\n")}
	if err := st.Enqueue(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	return nil
}

func openStore(t *testing.T) (*store.SQLite, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s.db")
	st, err := store.OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st, path
}

func TestSandboxRateAndDailyQuota(t *testing.T) {
	st, path := openStore(t)
	clk := testkit.NewClock(t)
	q := NewQuotas(st, testDefaults, clk.Now)
	c := store.Credential{Name: "shop", Sandbox: true}

	if err := send(t, q, st, c, clk.Now(), 1); err != nil {
		t.Fatal(err)
	}
	// The second message within the same second.
	clk.Advance(300 * time.Millisecond)
	if err := send(t, q, st, c, clk.Now(), 1); !errors.Is(err, ErrSendRate) {
		t.Fatalf("second message within a second: %v", err)
	}
	clk.Advance(time.Second)
	if err := send(t, q, st, c, clk.Now(), 1); err != nil {
		t.Fatalf("after a second: %v", err)
	}
	for i := 2; i < 200; i++ {
		clk.Advance(time.Second)
		if err := send(t, q, st, c, clk.Now(), 1); err != nil {
			t.Fatalf("message %d: %v", i+1, err)
		}
	}
	clk.Advance(time.Second)
	if err := send(t, q, st, c, clk.Now(), 1); !errors.Is(err, ErrDailyQuota) {
		t.Fatalf("201st message of the day: %v", err)
	}

	// The count lives in the store: a restart (new Quotas, store reopened) keeps it.
	st.Close()
	st2, err := store.OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	q2 := NewQuotas(st2, testDefaults, clk.Now)
	clk.Advance(time.Second)
	if err := send(t, q2, st2, c, clk.Now(), 1); !errors.Is(err, ErrDailyQuota) {
		t.Fatalf("after restart: %v", err)
	}
	// A rolling day later the quota is free again.
	clk.Advance(25 * time.Hour)
	if err := send(t, q2, st2, c, clk.Now(), 1); err != nil {
		t.Fatalf("next day: %v", err)
	}
}

func TestProductionLimitsAndOverrides(t *testing.T) {
	st, _ := openStore(t)
	clk := testkit.NewClock(t)
	q := NewQuotas(st, testDefaults, clk.Now)
	if l := testDefaults.Limits(store.Credential{}); l != (Limits{1000, 14}) {
		t.Fatalf("defaults %+v", l)
	}
	if l := testDefaults.Limits(store.Credential{DailyQuota: 5, MaxSendRate: 2}); l != (Limits{5, 2}) {
		t.Fatalf("overrides %+v", l)
	}
	if l := testDefaults.Limits(store.Credential{Sandbox: true, DailyQuota: 5000}); l != (Limits{200, 1}) {
		t.Fatalf("sandbox ignores overrides %+v", l)
	}
	c := store.Credential{Name: "bulk", DailyQuota: 30, MaxSendRate: 10}
	// Recipients count, not messages: 10 at once empties the bucket.
	if err := send(t, q, st, c, clk.Now(), 10); err != nil {
		t.Fatal(err)
	}
	if err := send(t, q, st, c, clk.Now(), 1); !errors.Is(err, ErrSendRate) {
		t.Fatalf("over the rate: %v", err)
	}
	clk.Advance(time.Second)
	// A message larger than the bucket goes when the bucket is full...
	if err := send(t, q, st, c, clk.Now(), 15); err != nil {
		t.Fatalf("large message: %v", err)
	}
	// ...and its debt (5 recipients, half a second) holds back the next one.
	clk.Advance(200 * time.Millisecond)
	if err := send(t, q, st, c, clk.Now(), 1); !errors.Is(err, ErrSendRate) {
		t.Fatalf("after the debt: %v", err)
	}
	clk.Advance(10 * time.Second)
	if err := send(t, q, st, c, clk.Now(), 6); !errors.Is(err, ErrDailyQuota) {
		t.Fatalf("25 + 6 > 30: %v", err)
	}
	if err := send(t, q, st, c, clk.Now(), 5); err != nil {
		t.Fatalf("25 + 5 = 30: %v", err)
	}
}

// Concurrent sessions of one credential cannot overshoot the daily quota
// together: reservations count until their message is queued.
func TestConcurrentReservations(t *testing.T) {
	st, _ := openStore(t)
	q := NewQuotas(st, QuotaDefaults{Daily: 10, Rate: 1000}, time.Now)
	c := store.Credential{Name: "busy"}
	var wg sync.WaitGroup
	var mu sync.Mutex
	admitted := 0
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			done, err := q.Reserve(context.Background(), c, 1)
			if err != nil {
				return
			}
			mu.Lock()
			admitted++
			mu.Unlock()
			m := &store.Message{Credential: c.Name, Recipients: []string{"r@example.net"}, ReceivedAt: time.Now(), Data: []byte("x\r\n")}
			err = st.Enqueue(context.Background(), m)
			done(err == nil)
		}()
	}
	wg.Wait()
	if admitted != 10 {
		t.Fatalf("%d admitted, want exactly 10", admitted)
	}
}
