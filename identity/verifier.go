package identity

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/sesame-mail/sesame/store"
)

// DomainStore is what the Verifier reads and writes: the domains' status,
// their keys as rotations move on (rotation.go), and the DMARC policies of
// address identities' domains.
type DomainStore interface {
	KeyStore
	ListDomains(ctx context.Context) ([]store.Domain, error)
	SetDomainStatus(ctx context.Context, name string, st store.DomainStatus) error
	ListAddresses(ctx context.Context) ([]store.Address, error)
	SetAddressDMARC(ctx context.Context, address, policy string, checked time.Time) error
}

// Verifier keeps the verification status of domains current. Only the DKIM
// records decide it: they are what makes a receiver trust Sesame's
// signatures, and publishing them proves control of the domain's DNS.
type Verifier struct {
	cfg     Config
	domains DomainStore
	checker *Checker
	log     *slog.Logger
}

// NewVerifier returns a Verifier that checks with checker and records the
// outcome in domains.
func NewVerifier(cfg Config, domains DomainStore, checker *Checker) *Verifier {
	cfg = cfg.withDefaults()
	return &Verifier{cfg: cfg, domains: domains, checker: checker, log: cfg.Logger}
}

// proof is what a check says about a domain's control of its DKIM records.
type proof int

const (
	proven    proof = iota // every required record is right
	notProven              // a required record is missing or wrong, or there is none
	undecided              // a lookup failed: neither proof nor disproof
)

func proofOf(findings []Finding) (proof, []Finding) {
	var bad []Finding
	unknown, required := false, 0
	for _, f := range findings {
		if !f.Required {
			continue
		}
		required++
		switch f.Status {
		case StatusOK:
		case StatusUnknown:
			unknown = true
		default:
			bad = append(bad, f)
		}
	}
	switch {
	case len(bad) > 0 || required == 0:
		return notProven, bad
	case unknown:
		return undecided, nil
	}
	return proven, nil
}

// Verify checks the domain name now and stores its new status:
//
//   - pending: verified once proven; failed when still not proven
//     PendingTimeout after it was added.
//   - verified: stays verified while proven; after FailedAfterChecks checks
//     in a row that are not, failed.
//   - failed: verified again once proven (only `sesame domain verify` and
//     this method check failed domains; Run leaves them alone).
//
// A check that could not look a DKIM record up changes nothing but
// LastChecked. Verify returns the domain as stored after the check, and the
// findings.
func (v *Verifier) Verify(ctx context.Context, name string) (store.Domain, []Finding, error) {
	d, err := v.domains.Domain(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return store.Domain{}, nil, fmt.Errorf("identity: domain %s is not a sending domain; add it with sesame domain add %s: %w", name, name, err)
	}
	if err != nil {
		return store.Domain{}, nil, fmt.Errorf("identity: verify %s: %w", name, err)
	}
	findings, err := v.checker.Check(ctx, d)
	if err != nil {
		return store.Domain{}, nil, err
	}
	now := v.cfg.Now()
	p, bad := proofOf(findings)
	st := store.DomainStatus{Status: d.Status, StatusSince: d.StatusSince, LastChecked: now, FailedChecks: d.FailedChecks}
	become := func(status string) {
		st.Status, st.StatusSince = status, now
	}
	switch {
	case p == undecided:
	case d.Status == store.IdentityVerified && p == proven:
		st.FailedChecks = 0
	case d.Status == store.IdentityVerified:
		st.FailedChecks++
		if st.FailedChecks >= v.cfg.FailedAfterChecks {
			become(store.IdentityFailed)
			v.log.Warn(fmt.Sprintf("domain %s is no longer verified: %s, %d checks in a row; mail from it is refused until it is verified again with sesame domain verify %s",
				name, why(bad), st.FailedChecks, name), "domain", name, "status", st.Status)
		} else {
			v.log.Warn(fmt.Sprintf("domain %s failed a check: %s; %d more failed checks in a row and mail from it is refused: publish the record again",
				name, why(bad), v.cfg.FailedAfterChecks-st.FailedChecks), "domain", name, "failed_checks", st.FailedChecks)
		}
	case p == proven:
		// Pending or failed (or a status this version does not know): the
		// records are there now.
		become(store.IdentityVerified)
		st.FailedChecks = 0
		v.log.Info(fmt.Sprintf("domain %s is verified: its DKIM records are published; it may now be used as a sender", name),
			"domain", name, "status", st.Status)
	case d.Status == store.IdentityFailed:
	case !pendingSince(d).IsZero() && !now.Before(pendingSince(d).Add(v.cfg.PendingTimeout)):
		become(store.IdentityFailed)
		v.log.Warn(fmt.Sprintf("domain %s failed verification: %s within %s; publish the records of sesame domain show %s, then run sesame domain verify %s",
			name, why(bad), v.cfg.PendingTimeout, name, name), "domain", name, "status", st.Status)
	}
	if err := v.domains.SetDomainStatus(ctx, name, st); err != nil {
		return store.Domain{}, nil, fmt.Errorf("identity: verify %s: %w", name, err)
	}
	d.Status, d.StatusSince, d.LastChecked, d.FailedChecks = st.Status, st.StatusSince, st.LastChecked, st.FailedChecks
	if d.Keys, err = v.advanceRotation(ctx, d, findings); err != nil {
		return store.Domain{}, nil, err
	}
	return d, findings, nil
}

// pendingSince is when d became pending: StatusSince, or for a domain stored
// before statuses existed, when it was added.
func pendingSince(d store.Domain) time.Time {
	return cmp.Or(d.StatusSince, d.CreatedAt)
}

// why says in words what is wrong with the records in bad, for logs: "its
// DKIM record sesame-rsa-20261127._domainkey.example.com is missing".
func why(bad []Finding) string {
	if len(bad) == 0 {
		return "it has no DKIM keys"
	}
	var parts []string
	for _, f := range bad {
		parts = append(parts, "its DKIM record "+f.Name+" is "+f.Status)
	}
	return strings.Join(parts, ", ")
}

// Run re-checks domains until ctx ends: pending ones every
// PendingCheckInterval, verified ones every VerifiedCheckInterval, counted
// from their last check; failed ones never (sesame domain verify does).
// It also looks up the DMARC policy of each address identity's domain every
// VerifiedCheckInterval, which MaySendAs reads. It wakes up at least once a
// minute, so a domain added by another process gets its first check within
// a minute.
func (v *Verifier) Run(ctx context.Context) {
	const maxSleep = time.Minute
	// A floor on the sleep, so a store that keeps failing cannot make a
	// busy loop.
	minSleep := min(time.Second, v.cfg.PendingCheckInterval, v.cfg.VerifiedCheckInterval)
	// When a domain was last tried, so one whose check fails before
	// storing anything is not tried again at once.
	tried := make(map[string]time.Time)
	triedAddrs := make(map[string]time.Time)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		next := earliest(v.runOnce(ctx, tried), v.refreshAddresses(ctx, triedAddrs))
		sleep := maxSleep
		if !next.IsZero() {
			sleep = min(max(next.Sub(v.cfg.Now()), minSleep), maxSleep)
		}
		timer.Reset(sleep)
	}
}

// runOnce checks the domains that are due and returns when the next one
// is (zero if none is waiting).
func (v *Verifier) runOnce(ctx context.Context, tried map[string]time.Time) time.Time {
	domains, err := v.domains.ListDomains(ctx)
	if err != nil {
		if ctx.Err() == nil {
			v.log.Error("identity: cannot list domains to check them; trying again in a minute", "err", err)
		}
		return time.Time{}
	}
	var next time.Time
	for _, d := range domains {
		var interval time.Duration
		switch d.Status {
		case store.IdentityVerified:
			interval = v.cfg.VerifiedCheckInterval
		case store.IdentityFailed:
			continue
		default:
			interval = v.cfg.PendingCheckInterval
		}
		// A rotation waiting for its record is looked for as often as a
		// pending domain, so the switch follows the publication.
		if v.waitingRotation(d) {
			interval = min(interval, v.cfg.PendingCheckInterval)
		}
		v.startScheduled(ctx, d)
		last := d.LastChecked
		if t := tried[d.Name]; t.After(last) {
			last = t
		}
		due := last.Add(interval)
		if last.IsZero() {
			due = time.Time{}
		}
		// A retiring key is retired, and a scheduled rotation started, on time.
		if r := v.rotationDue(d); !r.IsZero() && r.Before(due) {
			due = r
		}
		if now := v.cfg.Now(); now.Before(due) {
			if next.IsZero() || due.Before(next) {
				next = due
			}
			continue
		}
		if ctx.Err() != nil {
			return time.Time{}
		}
		now := v.cfg.Now()
		tried[d.Name] = now
		if _, _, err := v.Verify(ctx, d.Name); err != nil {
			if ctx.Err() == nil && !errors.Is(err, store.ErrNotFound) {
				v.log.Error("identity: checking a domain failed; trying again after its check interval", "domain", d.Name, "err", err)
			}
		}
		if due := now.Add(interval); next.IsZero() || due.Before(next) {
			next = due
		}
	}
	// Forget domains that are gone.
	for name := range tried {
		if !slices.ContainsFunc(domains, func(d store.Domain) bool { return d.Name == name }) {
			delete(tried, name)
		}
	}
	return next
}
