package account

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/sesame-mail/sesame/store"
)

// ReputationPolicy is when the reputation guard warns and pauses, as SES
// applies it: rates over a rolling window, once a credential has sent
// enough for them to mean something.
type ReputationPolicy struct {
	Window           time.Duration
	MinVolume        int     // recipients whose delivery ended, in the window
	BounceWarning    float64 // hard bounces / deliveries attempted
	BouncePause      float64
	ComplaintWarning float64 // complaints / deliveries
	ComplaintPause   float64
	// SimulatorDomain's recipients (the mailbox simulator) are left out.
	SimulatorDomain string
}

// Reputation is a credential's standing over the policy's window.
type Reputation struct {
	Attempted     int // deliveries attempted: delivered, bounced or expired
	HardBounces   int
	Complaints    int
	BounceRate    float64
	ComplaintRate float64
	// Verdict is "ok", "warning" or "pause"; Reason says why, for
	// operators and for the refusal text.
	Verdict string
	Reason  string
}

// EventCounter is what the guard reads.
type EventCounter interface {
	CountEvents(ctx context.Context, q store.EventQuery) (map[string]int, error)
}

// Standing computes c's reputation from the events of the window, or of the
// time since an operator resumed it, if later: a resume is a fresh start.
func (p ReputationPolicy) Standing(ctx context.Context, events EventCounter, c store.Credential, now time.Time) (Reputation, error) {
	cred := c.Name
	since := now.Add(-p.Window)
	if c.PausedReason == "" && c.PausedAt.After(since) {
		since = c.PausedAt
	}
	n, err := events.CountEvents(ctx, store.EventQuery{Since: since, Credential: cred, ExcludeDomain: p.SimulatorDomain})
	if err != nil {
		return Reputation{}, fmt.Errorf("account: reputation of %q: %w", cred, err)
	}
	r := Reputation{
		Attempted:   n[store.EventDelivery] + n[store.EventBounce] + n[store.EventExpired],
		HardBounces: n[store.EventBounce+":"+store.BounceHard],
		Complaints:  n["complaint"],
		Verdict:     "ok",
	}
	if r.Attempted > 0 {
		r.BounceRate = float64(r.HardBounces) / float64(r.Attempted)
	}
	if d := n[store.EventDelivery]; d > 0 {
		r.ComplaintRate = float64(r.Complaints) / float64(d)
	}
	if r.Attempted < p.MinVolume {
		return r, nil
	}
	switch {
	case r.BounceRate >= p.BouncePause:
		r.Verdict, r.Reason = "pause", fmt.Sprintf("bounce rate %.1f%% is over %.4g%%", 100*r.BounceRate, 100*p.BouncePause)
	case r.ComplaintRate >= p.ComplaintPause:
		r.Verdict, r.Reason = "pause", fmt.Sprintf("complaint rate %.2f%% is over %.4g%%", 100*r.ComplaintRate, 100*p.ComplaintPause)
	case r.BounceRate >= p.BounceWarning:
		r.Verdict, r.Reason = "warning", fmt.Sprintf("bounce rate %.1f%% is over %.4g%%", 100*r.BounceRate, 100*p.BounceWarning)
	case r.ComplaintRate >= p.ComplaintWarning:
		r.Verdict, r.Reason = "warning", fmt.Sprintf("complaint rate %.2f%% is over %.4g%%", 100*r.ComplaintRate, 100*p.ComplaintWarning)
	}
	return r, nil
}

// GuardStore is what the guard reads and writes.
type GuardStore interface {
	EventCounter
	ListCredentials(ctx context.Context) ([]store.Credential, error)
	SetPaused(ctx context.Context, name, reason string, at time.Time) error
	// LastEventID is the id of the newest event (0 when there is none).
	LastEventID(ctx context.Context) (int64, error)
}

// Guard pauses credentials whose bounce or complaint rate would ruin the
// outbound IPs' reputation, and warns before that.
type Guard struct {
	policy ReputationPolicy
	store  GuardStore
	log    *slog.Logger
	now    func() time.Time
	warned map[string]string // credential → the warning last logged
	// checked is the newest event the last complete check saw. Standings
	// only get worse with new events (old ones leaving the window can
	// only improve them), so without any there is nothing to check: a
	// queue waiting for hours costs no counting over the event log.
	checked int64
}

// NewGuard returns a guard applying policy.
func NewGuard(policy ReputationPolicy, st GuardStore, log *slog.Logger, now func() time.Time) *Guard {
	return &Guard{policy: policy, store: st, log: log, now: now, warned: map[string]string{}}
}

// Check looks at every credential once: pauses those over a pause
// threshold, logs a warning for those over a warning threshold.
func (g *Guard) Check(ctx context.Context) error {
	last, err := g.store.LastEventID(ctx)
	if err != nil {
		return err
	}
	if last == g.checked && last != 0 {
		return nil
	}
	creds, err := g.store.ListCredentials(ctx)
	if err != nil {
		return err
	}
	now := g.now()
	for _, c := range creds {
		if c.PausedReason != "" {
			continue
		}
		r, err := g.policy.Standing(ctx, g.store, c, now)
		if err != nil {
			return err
		}
		switch r.Verdict {
		case "pause":
			if err := g.store.SetPaused(ctx, c.Name, r.Reason, now); err != nil {
				return err
			}
			g.log.Warn("sending paused for a credential: "+r.Reason, "credential", c.Name,
				"hard_bounces", r.HardBounces, "complaints", r.Complaints, "attempted", r.Attempted,
				"resume", "sesame user resume "+c.Name)
		case "warning":
			if g.warned[c.Name] != r.Reason {
				g.log.Warn("credential near its reputation limits: "+r.Reason, "credential", c.Name,
					"attempted", r.Attempted)
			}
			g.warned[c.Name] = r.Reason
		default:
			delete(g.warned, c.Name)
		}
	}
	g.checked = last
	return nil
}

// Run checks every interval until ctx ends.
func (g *Guard) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := g.Check(ctx); err != nil && ctx.Err() == nil {
			g.log.Error("reputation check failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
