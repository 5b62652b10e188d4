package smtpd

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sesame-mail/sesame/store"
	"github.com/sesame-mail/sesame/testkit"
)

// An attack on one username from several networks: the owner's network,
// which did not fail, keeps logging in; each attacking network is refused
// as the username until BlockFor after its own last failure, however often
// it retries meanwhile; once the attack is over, nothing stays blocked.
func TestUsernameAttackSparesOwner(t *testing.T) {
	clock := testkit.NewClock(t)
	g := newAuthGuard(AuthLimits{PerNetwork: 100, PerUsername: 5, Window: 10 * time.Minute, BlockFor: 5 * time.Minute}.withDefaults(),
		clock.Now)
	attackers := []string{"192.0.2.1", "192.0.2.2", "192.0.2.3"}
	for i := 0; i < 2; i++ {
		for _, ip := range attackers {
			g.failed(ip, "SMOWNER", wrongPassword)
		}
	}
	for _, ip := range attackers {
		if !g.blocked(ip, "SMOWNER") {
			t.Errorf("attacking network %s is not blocked for the username", ip)
		}
	}
	if g.blocked("192.0.2.9", "SMOWNER") {
		t.Fatal("the owner's network, which never failed, is blocked")
	}
	if st := g.stats(); st.UsernameAttacks != 1 || st.BlockedUsernameNetworks != 3 || st.BlockedNetworks != 0 {
		t.Errorf("stats %+v, want 1 attack and 3 networks blocked for a username", st)
	}
	// The attackers keep trying during their block: refused unchecked,
	// which extends nothing.
	for range 4 {
		clock.Advance(time.Minute)
		for _, ip := range attackers {
			if !g.blocked(ip, "SMOWNER") {
				t.Fatalf("%s unblocked after %s", ip, time.Minute)
			}
			g.failed(ip, "SMOWNER", unchecked)
		}
	}
	clock.Advance(time.Minute) // 5 minutes after their last checked failure
	for _, ip := range attackers {
		if g.blocked(ip, "SMOWNER") {
			t.Errorf("%s still blocked %s after its last checked failure: retries during the block extended it", ip, 5*time.Minute)
		}
	}
	// Still within the window of the attack: a network's next wrong
	// password blocks it again at once.
	g.failed("192.0.2.1", "SMOWNER", wrongPassword)
	if !g.blocked("192.0.2.1", "SMOWNER") || g.blocked("192.0.2.2", "SMOWNER") {
		t.Error("a new failure during the attack must block that network again, and only it")
	}
	// Long after, the run is over: a failure is one failure again.
	clock.Advance(time.Hour)
	g.failed("192.0.2.2", "SMOWNER", wrongPassword)
	if g.blocked("192.0.2.2", "SMOWNER") || g.blocked("192.0.2.1", "SMOWNER") {
		t.Error("blocked long after the attack ended")
	}
	if st := g.stats(); st.UsernameAttacks != 0 || st.BlockedUsernameNetworks != 0 {
		t.Errorf("stats %+v after the attack, want none", st)
	}
}

// A network that logs in forgets its failures as the username: a later
// attack does not block the owner for an earlier typo.
func TestLoginForgetsNetworkFailures(t *testing.T) {
	clock := testkit.NewClock(t)
	g := newAuthGuard(AuthLimits{PerNetwork: 100, PerUsername: 3, Window: 10 * time.Minute}.withDefaults(), clock.Now)
	g.failed("192.0.2.9", "SMOWNER", wrongPassword) // the owner's typo
	g.succeeded("192.0.2.9", "SMOWNER")
	for range 4 {
		g.failed("192.0.2.1", "SMOWNER", wrongPassword)
	}
	if !g.blocked("192.0.2.1", "SMOWNER") || g.blocked("192.0.2.9", "SMOWNER") {
		t.Error("want the attacker blocked, the owner not")
	}
}

// Reports: one summary per credential however many failures since the
// last report, none for an unknown username, none when nothing changed.
func TestGuardReports(t *testing.T) {
	clock := testkit.NewClock(t)
	g := newAuthGuard(AuthLimits{PerNetwork: 100, PerUsername: 3, Window: 10 * time.Minute, BlockFor: 5 * time.Minute}.withDefaults(),
		clock.Now)
	start := clock.Now()
	for i := range 10 {
		g.failed(fmt.Sprintf("192.0.2.%d", i%4+1), "SMOWNER", wrongPassword)
		g.failed("192.0.2.1", "SMNOBODY", unknownUsername)
		clock.Advance(time.Second)
	}
	g.failed("192.0.2.1", "SMOWNER", unchecked)
	r := g.reports()
	if len(r) != 1 || r[0].username != "SMOWNER" {
		t.Fatalf("reports %+v, want one, for SMOWNER only", r)
	}
	last := start.Add(9 * time.Second)
	want := store.LoginFailures{First: start, Last: last, Failures: 10, Networks: 4, LastNetwork: "192.0.2.2",
		BlockedNetworks: 4, BlockedUntil: last.Add(5 * time.Minute), UpdatedAt: clock.Now()}
	if got := r[0].summary; got != want {
		t.Errorf("summary\n%+v, want\n%+v", got, want)
	}
	if r := g.reports(); len(r) != 0 {
		t.Errorf("reports without a new failure: %+v", r)
	}
	g.failed("192.0.2.1", "SMOWNER", unchecked)
	if r := g.reports(); len(r) != 0 {
		t.Errorf("a refusal without a check changed the report: %+v", r)
	}
	g.failed("192.0.2.5", "SMOWNER", wrongPassword)
	if r := g.reports(); len(r) != 1 || r[0].summary.Failures != 11 || r[0].summary.Networks != 5 {
		t.Errorf("after one more failure: %+v", r)
	}
}

// The guard forgets the oldest entries past its caps, and not the
// username under attack, which keeps failing.
func TestGuardMemoryBound(t *testing.T) {
	clock := testkit.NewClock(t)
	g := newAuthGuard(AuthLimits{PerNetwork: 1000, PerUsername: 3, Window: time.Hour}.withDefaults(), clock.Now)
	g.maxNetworks, g.maxUsernames, g.maxUserNetworks = 50, 10, 8
	for i := range 500 {
		ip := fmt.Sprintf("10.0.%d.%d", i/250, i%250)
		g.failed(ip, fmt.Sprintf("SMRANDOM%d", i), unknownUsername)
		g.failed(ip, "SMOWNER", wrongPassword)
		clock.Advance(time.Millisecond)
	}
	if len(g.network) > 50 || len(g.user) > 10 {
		t.Errorf("%d networks, %d usernames remembered; want at most 50, 10", len(g.network), len(g.user))
	}
	u := g.user["smowner"]
	if u == nil {
		t.Fatal("the username under attack was forgotten")
	}
	if len(u.nets) > 8 || u.count != 500 || u.networks != 500 {
		t.Errorf("%d networks kept for it, want at most 8; run %d failures from %d networks, want 500, 500", len(u.nets), u.count, u.networks)
	}
	if !g.blocked("10.0.1.249", "SMOWNER") {
		t.Error("the latest attacking network is not blocked")
	}
}

// The server writes the summaries to LoginReports, once more at shutdown,
// for the credential only.
func TestLoginReportsReachTheStore(t *testing.T) {
	te := newTestEnvDeps(t, func(c *Config) {
		c.AuthLimits = AuthLimits{PerConnection: 100, PerUsername: 2, Delay: time.Millisecond, ReportEvery: time.Hour}
	}, func(d *Deps) { d.LoginReports = d.Queue.(*store.SQLite) })
	for _, user := range []string{te.username, te.username, te.username, "SMNOBODY"} {
		s := dialRaw(t, te.starttls)
		s.starttls()
		s.cmd("EHLO client.test", "250")
		s.cmd("AUTH PLAIN "+plainIR(user, "guess"), "535 5.7.8")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := te.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	f, err := te.st.LoginFailures(context.Background(), "app")
	if err != nil || f.Failures != 3 || f.Networks != 1 || f.LastNetwork != "127.0.0.1" || f.BlockedNetworks != 1 {
		t.Fatalf("stored %+v, %v; want 3 failures from 127.0.0.1, blocked", f, err)
	}
}
