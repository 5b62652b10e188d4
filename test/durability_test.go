package test

import (
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// TestDurabilityAcrossKill checks "durable before 250": clients submit as
// fast as they can, serve is SIGKILLed mid-stream, and after a restart
// every message that got a 250 must reach the smarthost. Duplicates are
// allowed (redelivery after a crash); a missing message is not.
func TestDurabilityAcrossKill(t *testing.T) {
	inst := newInstance(t)
	inst.unthrottled()
	user := inst.standard(senderDomain, "durable")

	const workers = 8
	var (
		mu       sync.Mutex
		acked    []string // tokens that got a 250
		inflight []string // tokens whose DATA was sent but not acknowledged
		firstErr error
		stop     atomic.Bool
		wg       sync.WaitGroup
	)
	noteErr := func(err error) {
		mu.Lock()
		if firstErr == nil && !stop.Load() {
			firstErr = err
		}
		mu.Unlock()
	}
	worker := func() {
		defer wg.Done()
		for !stop.Load() {
			c, err := smtp.DialStartTLS(inst.smtpAddr, insecureTLS())
			if err != nil {
				noteErr(err)
				time.Sleep(10 * time.Millisecond)
				continue
			}
			c.CommandTimeout = 10 * time.Second
			c.SubmissionTimeout = 10 * time.Second
			if err := c.Auth(sasl.NewPlainClient("", user.Username, user.Password)); err != nil {
				noteErr(err)
				c.Close()
				time.Sleep(10 * time.Millisecond)
				continue
			}
			for !stop.Load() {
				tok := newToken()
				s := &submission{from: sender, to: recipient, token: tok}
				if err := sendOne(c, s.message("the durability test")); err != nil {
					noteErr(err)
					mu.Lock()
					inflight = append(inflight, tok)
					mu.Unlock()
					break
				}
				mu.Lock()
				acked = append(acked, tok)
				mu.Unlock()
			}
			c.Close()
		}
	}
	wg.Add(workers)
	for range workers {
		go worker()
	}
	time.Sleep(1500 * time.Millisecond)
	inst.kill()
	stop.Store(true)
	wg.Wait()

	mu.Lock()
	ackedBeforeKill := append([]string(nil), acked...)
	mu.Unlock()
	t.Logf("%d messages acknowledged before SIGKILL, %d in flight, %d already at the smarthost",
		len(ackedBeforeKill), len(inflight), inst.sink.count())
	if len(ackedBeforeKill) == 0 {
		t.Fatalf("no message was acknowledged in 1.5s; first error: %v", firstErr)
	}

	inst.start()
	deadline := time.After(60 * time.Second)
	for {
		changed := inst.sink.changes()
		var missing []string
		for _, tok := range ackedBeforeKill {
			if inst.sink.copies(tok) == 0 {
				missing = append(missing, tok)
			}
		}
		if len(missing) == 0 {
			break
		}
		select {
		case <-changed:
			continue
		case <-deadline:
		}
		n := len(missing)
		sort.Strings(missing)
		t.Fatalf("%d of %d acknowledged messages never reached the smarthost within 60s of the restart; some of them: %v",
			n, len(ackedBeforeKill), missing[:min(n, 20)])
	}

	var dups, inflightArrived int
	for _, tok := range ackedBeforeKill {
		if inst.sink.copies(tok) > 1 {
			dups++
		}
	}
	for _, tok := range inflight {
		if inst.sink.copies(tok) > 0 {
			inflightArrived++
		}
	}
	t.Logf("all %d acknowledged messages arrived (%d more than once); %d of %d unacknowledged ones arrived too",
		len(ackedBeforeKill), dups, inflightArrived, len(inflight))

	// One sample through the independent verifier: the signature survived
	// the spool and the restart.
	inst.expectDelivered(t, ackedBeforeKill[len(ackedBeforeKill)-1], senderDomain)
}

// sendOne submits one message on an authenticated connection and returns
// nil only when the server answered 250 to the data.
func sendOne(c *smtp.Client, msg []byte) error {
	if err := c.Mail(sender, nil); err != nil {
		return err
	}
	if err := c.Rcpt(recipient, nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		w.Close()
		return err
	}
	// The next MAIL goes on the same connection, as a busy app's pool does.
	_, err = w.CloseWithResponse()
	return err
}
