package test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/sesame-mail/sesame/testkit"
)

// TestDurabilityAcrossKill checks "durable before 250": clients submit as
// fast as they can, serve is SIGKILLed mid-stream, and after a restart
// every message that got a 250 must reach the smarthost. Duplicates are
// allowed (redelivery after a crash); a missing message is not.
// TestKillLoop (killloop_test.go) does the same twenty times in a row.
func TestDurabilityAcrossKill(t *testing.T) {
	inst := newInstance(t)
	inst.unthrottled()
	user := inst.standard(senderDomain, "durable")

	l := startLoad(user, 8, inst.smtpAddr)
	time.Sleep(1500 * time.Millisecond)
	inst.kill()
	l.stop()

	ackedBeforeKill, inflight, firstErr := l.results()
	t.Logf("%d messages acknowledged before SIGKILL, %d in flight, %d already at the smarthost",
		len(ackedBeforeKill), len(inflight), len(inst.sink.Messages()))
	if len(ackedBeforeKill) == 0 {
		t.Fatalf("no message was acknowledged in 1.5s; first error: %v", firstErr)
	}

	inst.start()
	waitArrived(t, inst.sink, ackedBeforeKill, 60*time.Second)

	var dups, inflightArrived int
	for _, tok := range ackedBeforeKill {
		if len(inst.sink.Keyed(tok)) > 1 {
			dups++
		}
	}
	for _, tok := range inflight {
		if len(inst.sink.Keyed(tok)) > 0 {
			inflightArrived++
		}
	}
	t.Logf("all %d acknowledged messages arrived (%d more than once); %d of %d unacknowledged ones arrived too",
		len(ackedBeforeKill), dups, inflightArrived, len(inflight))

	// One sample through the independent verifier: the signature survived
	// the spool and the restart.
	inst.expectDelivered(t, ackedBeforeKill[len(ackedBeforeKill)-1], senderDomain)
}

// load is a set of go-smtp clients (STARTTLS, AUTH PLAIN) that submit as
// fast as they can, each on its own connection, one new token per message,
// noting which tokens got a 250. A connection that fails is replaced.
// While paused, no client opens a connection (those open carry on until
// they fail): a client dialling a stopped server's port over and over could
// be given that very port as its own and connect to itself, and then serve
// could not listen there again.
type load struct {
	user creds

	mu       sync.Mutex
	addr     string        // where to connect; "" while paused
	wake     chan struct{} // closed while running; a pause makes a new one
	acked    []string      // tokens that got a 250
	inflight []string      // tokens sent without getting a 250
	firstErr error

	stopped atomic.Bool
	wg      sync.WaitGroup
}

// startLoad starts workers clients that submit to addr as user.
func startLoad(user creds, workers int, addr string) *load {
	l := &load{user: user, addr: addr, wake: make(chan struct{})}
	close(l.wake)
	l.wg.Add(workers)
	for range workers {
		go l.worker()
	}
	return l
}

// pause stops new connections until resume.
func (l *load) pause() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.addr != "" {
		l.addr, l.wake = "", make(chan struct{})
	}
}

// resume lets the clients connect again, to addr.
func (l *load) resume(addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.addr == "" {
		close(l.wake)
	}
	l.addr = addr
}

// stop ends every client and waits for them.
func (l *load) stop() {
	l.stopped.Store(true)
	l.resume("stopped") // wake the paused; they see stopped before dialling
	l.wg.Wait()
}

// results returns the tokens acknowledged and those sent without a 250,
// with the first error a client met before stop.
func (l *load) results() (acked, inflight []string, firstErr error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.acked...), append([]string(nil), l.inflight...), l.firstErr
}

// ackedCount is how many tokens got a 250 so far.
func (l *load) ackedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// waitAcked waits until more than n tokens got a 250, and says whether
// that happened within timeout.
func (l *load) waitAcked(n int, timeout time.Duration) bool {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if l.ackedCount() > n {
			return true
		}
	}
	return false
}

// target waits until the clients may connect; "" once stopped.
func (l *load) target() string {
	for {
		l.mu.Lock()
		addr, wake := l.addr, l.wake
		l.mu.Unlock()
		if l.stopped.Load() {
			return ""
		}
		if addr != "" {
			return addr
		}
		<-wake
	}
}

func (l *load) noteErr(err error) {
	l.mu.Lock()
	if l.firstErr == nil && !l.stopped.Load() {
		l.firstErr = err
	}
	l.mu.Unlock()
}

func (l *load) worker() {
	defer l.wg.Done()
	for {
		addr := l.target()
		if addr == "" {
			return
		}
		c, err := smtp.DialStartTLS(addr, insecureTLS())
		if err != nil {
			l.noteErr(err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		c.CommandTimeout = 10 * time.Second
		c.SubmissionTimeout = 10 * time.Second
		if err := c.Auth(sasl.NewPlainClient("", l.user.Username, l.user.Password)); err != nil {
			l.noteErr(err)
			c.Close()
			time.Sleep(10 * time.Millisecond)
			continue
		}
		for !l.stopped.Load() {
			tok := newToken()
			s := &submission{from: sender, to: recipient, token: tok}
			err := sendOne(c, s.message("the durability test"))
			l.mu.Lock()
			if err != nil {
				l.inflight = append(l.inflight, tok)
			} else {
				l.acked = append(l.acked, tok)
			}
			l.mu.Unlock()
			if err != nil {
				l.noteErr(err)
				break
			}
		}
		c.Close()
	}
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

// waitArrived waits until every token has reached the sink at least once.
func waitArrived(t *testing.T, s *testkit.Sink, tokens []string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		changed := s.Changed()
		var missing []string
		for _, tok := range tokens {
			if len(s.Keyed(tok)) == 0 {
				missing = append(missing, tok)
			}
		}
		if len(missing) == 0 {
			return
		}
		select {
		case <-changed:
			continue
		case <-deadline:
		}
		t.Fatalf("%d of %d acknowledged messages never reached the smarthost within %s; some of them: %v",
			len(missing), len(tokens), timeout, missing[:min(len(missing), 20)])
	}
}
