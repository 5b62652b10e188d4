package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sesame-mail/sesame/store"
)

// fillConfig configures the fill subcommand.
type fillConfig struct {
	DB         string
	Count      int
	Size       int
	From       string
	ToDomain   string
	Credential string
	Defer      time.Duration
}

// fillMain puts Count messages of one recipient each straight into a
// stopped Sesame's store, for measuring Sesame with a huge queue: the
// scale scenario of the performance issue. With --defer the recipients are
// left deferred until then, as after a destination's 451, so they wait
// without being attempted. The messages are not DKIM-signed.
func fillMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var c fillConfig
	fs := flag.NewFlagSet("fill", flag.ContinueOnError)
	fs.StringVar(&c.DB, "db", "", "the store to fill: DATA_DIR/sesame.db of a Sesame that is not running")
	fs.IntVar(&c.Count, "count", 1000000, "messages to queue, one recipient each")
	fs.IntVar(&c.Size, "size", 1024, "message size in bytes")
	fs.StringVar(&c.From, "from", "shop@example.com", "envelope sender")
	fs.StringVar(&c.ToDomain, "to-domain", "example.net", "recipients are fill-N@ this domain")
	fs.StringVar(&c.Credential, "credential", "bench", "the credential the messages count for")
	fs.DurationVar(&c.Defer, "defer", 2*time.Hour, "leave the recipients deferred for this long (0: due at once)")
	fs.Usage = func() {
		fmt.Fprintf(stdout, "Usage: sesame-bench fill --db DATA_DIR/sesame.db [flags]\n\n"+
			"Queues --count messages straight into a stopped Sesame's store.\n\nFlags:\n")
		fs.SetOutput(stdout)
		fs.PrintDefaults()
	}
	if done, code := parseFlags(fs, args, stdout, stderr); done {
		return code
	}
	if c.DB == "" || c.Count < 1 {
		fmt.Fprintln(stderr, "sesame-bench fill: --db and a positive --count are required")
		return 2
	}
	st, err := store.OpenSQLite(c.DB)
	if err != nil {
		fmt.Fprintf(stderr, "sesame-bench fill: %v\n", err)
		return 1
	}
	defer st.Close()

	body := []byte(fmt.Sprintf("From: %s\r\nSubject: fill\r\nX-Bench-Fill: 1\r\n\r\n", c.From))
	if pad := c.Size - len(body); pad > 2 {
		body = append(body, strings.Repeat("x", pad-2)+"\r\n"...)
	}
	start := time.Now()
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	// Many writers at once: the store commits them in groups.
	for range 64 {
		wg.Go(func() {
			for ctx.Err() == nil {
				n := next.Add(1)
				if n > int64(c.Count) {
					return
				}
				m := &store.Message{Credential: c.Credential, Sender: c.From,
					Recipients: []string{fmt.Sprintf("fill-%d@%s", n, c.ToDomain)},
					MessageID:  fmt.Sprintf("<fill-%d@bench>", n), ReceivedAt: time.Now(), Data: body}
				if err := st.Enqueue(ctx, m); err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		fmt.Fprintf(stderr, "sesame-bench fill: %v\n", err)
		return 1
	}
	filled := time.Since(start)
	if c.Defer > 0 {
		// As after a 451 from the destination: one attempt made, the next
		// one later.
		db, err := sql.Open("sqlite", c.DB)
		if err == nil {
			_, err = db.ExecContext(ctx, `UPDATE recipients SET state = 'deferred', attempts = 1,
				last_reply = '451 4.3.0 sesame-bench fill: try again later', next_attempt_at = ?
				WHERE state = 'queued' AND address LIKE 'fill-%'`, time.Now().Add(c.Defer).UnixNano())
			db.Close()
		}
		if err != nil {
			fmt.Fprintf(stderr, "sesame-bench fill: defer: %v\n", err)
			return 1
		}
	}
	out, _ := json.Marshal(map[string]any{"filled": c.Count, "seconds": filled.Seconds(),
		"per_sec": float64(c.Count) / filled.Seconds(), "deferred_for": c.Defer.String()})
	fmt.Fprintln(stdout, string(out))
	return 0
}
