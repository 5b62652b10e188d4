package store

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The queue benchmarks write to a database under the test's temporary
// directory (TMPDIR), durable as in production: every write is answered
// after the fsync of the WAL holding it, so the numbers say as much about the
// disk as about the code. Run them with TMPDIR on the disk the data directory will use.

// benchBody is the message every benchmark queues: 10 KiB, one recipient.
var benchBody = bytes.Repeat([]byte("0123456789abcdef"), 10<<10/16)

func openBench(b *testing.B) *SQLite {
	b.Helper()
	s, err := OpenSQLite(filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

func benchMessage() *Message {
	return &Message{Credential: "app", Sender: "a@example.com", Recipients: []string{"r@example.net"},
		MessageID: "<bench@example.com>", ReceivedAt: time.Now(), Data: benchBody}
}

// BenchmarkEnqueue queues 10 KiB messages. single has one writer, so each
// Enqueue is its own transaction and fsync; batched has that many writers
// at once, whose Enqueues the committer (commitLoop) groups into shared
// transactions. ns/op is wall time over all writers (the inverse of
// throughput), not one Enqueue's latency; ops/commit is the average batch.
func BenchmarkEnqueue(b *testing.B) {
	b.Run("single", func(b *testing.B) { benchmarkEnqueue(b, 1) })
	b.Run("batched", func(b *testing.B) {
		for _, writers := range []int{16, 64} {
			b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) { benchmarkEnqueue(b, writers) })
		}
	})
}

func benchmarkEnqueue(b *testing.B, writers int) {
	s := openBench(b)
	ctx := context.Background()
	b.SetBytes(int64(len(benchBody)))
	b.ReportAllocs()
	var left atomic.Int64
	left.Store(int64(b.N))
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	commits := s.commits.Load()
	b.ResetTimer()
	for range writers {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				if err := s.Enqueue(ctx, benchMessage()); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	if n := s.commits.Load() - commits; n > 0 {
		b.ReportMetric(float64(b.N)/float64(n), "ops/commit")
	}
}

// BenchmarkComplete is the queue's side of one delivery: Claim a due
// recipient, then Complete it as delivered (which deletes the message).
// Each is a committer transaction of its own, so an op is two fsyncs.
func BenchmarkComplete(b *testing.B) {
	s := openBench(b)
	ctx := context.Background()
	// Fill the queue with b.N messages, many writers at once so that the
	// group commit makes it quick.
	var left atomic.Int64
	left.Store(int64(b.N))
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				if err := s.Enqueue(ctx, benchMessage()); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	now := time.Now().Add(time.Second) // every message above is due
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		ds, err := s.Claim(ctx, now, 1, time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		if len(ds) != 1 || len(ds[0].Recipients) != 1 {
			b.Fatalf("claimed %+v, want one message with one recipient", ds)
		}
		err = s.Complete(ctx, Report{QueueID: ds[0].QueueID, Outcomes: []Outcome{{Recipient: ds[0].Recipients[0].Address,
			State: StateDelivered, Reply: "250 2.0.0 Ok", RemoteMTA: "mx.example.net"}}})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

// BenchmarkChurn is the queue under a relay's steady state: 64 writers
// enqueue while 16 workers claim and complete (as delivered) what was
// enqueued, every message with its own random Message-ID as in real mail.
// cpu-us/op is the CPU time of the whole process (user and system, the
// benchmark's own goroutines included) per message; it is the figure to
// compare, as the wall time mostly waits on fsync.
func BenchmarkChurn(b *testing.B) {
	s := openBench(b)
	ctx := context.Background()
	var left, done atomic.Int64
	left.Store(int64(b.N))
	var wg sync.WaitGroup
	cpu0 := processCPU()
	b.ResetTimer()
	for range 64 {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				m := benchMessage()
				m.MessageID = "<" + NewQueueID() + "@example.com>"
				if err := s.Enqueue(ctx, m); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	for range 16 {
		wg.Go(func() {
			for done.Load() < int64(b.N) && !b.Failed() {
				ds, err := s.Claim(ctx, time.Now().Add(time.Second), 4, time.Minute)
				if err != nil {
					b.Error(err)
					return
				}
				if len(ds) == 0 {
					time.Sleep(time.Millisecond)
					continue
				}
				for _, d := range ds {
					err := s.Complete(ctx, Report{QueueID: d.QueueID, Outcomes: []Outcome{{Recipient: d.Recipients[0].Address,
						State: StateDelivered, Reply: "250 2.0.0 Ok", RemoteMTA: "mx.example.net"}}})
					if err != nil {
						b.Error(err)
						return
					}
					done.Add(1)
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-us/op")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
