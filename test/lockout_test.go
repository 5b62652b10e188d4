package test

import (
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"
)

// dialRawFrom is dialRaw from the local address src (127.0.0.x): the guard
// counts failed logins per client network, one per IPv4 address.
func dialRawFrom(t *testing.T, addr, src string) *rawClient {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	c := &rawClient{t: t, conn: conn, tp: textproto.NewConn(conn)}
	t.Cleanup(func() { c.conn.Close() })
	if code, msg := c.reply(); code != 220 {
		t.Fatalf("greeting to %s: %d %s", src, code, msg)
	}
	c.must(250, "EHLO raw.client.test")
	c.startTLS()
	return c
}

// failedLogins is the failed_logins object of `sesame user show --json`.
type failedLogins struct {
	Recent          bool       `json:"recent"`
	Failures        int        `json:"failures"`
	Networks        int        `json:"networks"`
	Last            *time.Time `json:"last"`
	LastNetwork     string     `json:"last_network"`
	BlockedNetworks int        `json:"blocked_networks"`
	BlockedUntil    *time.Time `json:"blocked_until"`
}

// TestUsernameAttack: anyone who knows a username guesses its password from
// several networks, past auth_failures_per_username. The owner, from a
// network that did not fail, logs in and sends; the attacking networks are
// refused as that username, even with the right password, until
// auth_block_time after their own last failure, and their retries during
// the block do not extend it. `sesame user show` and /metrics show the
// attack.
func TestUsernameAttack(t *testing.T) {
	inst := newInstance(t)
	const blockFor = 10 * time.Second
	inst.configure(map[string]any{
		"submission.auth_failures_per_username":   5,
		"submission.auth_failures_per_network":    50, // the per-username limit is the one under test
		"submission.auth_failure_window":          "10m",
		"submission.auth_block_time":              blockFor.String(),
		"submission.auth_failure_delay":           "10ms",
		"submission.auth_failure_report_interval": "1s",
	})
	owner := inst.standard(senderDomain, "owner")

	attackers := []string{"127.0.0.11", "127.0.0.12", "127.0.0.13"}
	login := func(src, password string) (int, string) {
		t.Helper()
		c := dialRawFrom(t, inst.smtpAddr, src)
		code, msg := c.authPlain(owner.Username, password)
		c.conn.Close()
		return code, msg
	}
	// Two wrong passwords from each attacking network: 6 failures, the
	// last (from 127.0.0.13) over the limit of 5.
	for round := range 2 {
		for _, src := range attackers {
			if code, msg := login(src, "guess"); code != 535 {
				t.Fatalf("guess %d from %s: %d %s, want 535", round+1, src, code, msg)
			}
		}
	}
	// An attacking network is refused as the username even with the right
	// password (Dovecot's and fail2ban's choice: the failing address pays).
	for _, src := range attackers {
		if code, msg := login(src, owner.Password); code != 535 {
			t.Fatalf("the right password from the attacking network %s during its block: %d %s, want 535", src, code, msg)
		}
	}
	metrics := scrape(t, inst)
	for metric, want := range map[string]float64{
		"sesame_auth_username_attacks":                   1,
		`sesame_auth_blocked_networks{scope="username"}`: 3,
		`sesame_auth_blocked_networks{scope="all"}`:      0,
	} {
		if !strings.Contains(metrics, metric) {
			t.Errorf("/metrics lacks %s", metric)
		} else if got := metricSum(metrics, metric); got != want {
			t.Errorf("%s = %v, want %v", metric, got, want)
		}
	}

	// The owner's app, from its own network, logs in and sends.
	app := dialRawFrom(t, inst.smtpAddr, "127.0.0.20")
	if code, msg := app.authPlain(owner.Username, owner.Password); code != 235 {
		t.Fatalf("the owner's right password from a network with no failures during the attack: %d %s, want 235", code, msg)
	}
	tok := newToken()
	s := &submission{from: sender, to: recipient, token: tok}
	if code, msg := app.send(sender, recipient, s.message("the owner's app")); code != 250 {
		t.Fatalf("the owner's message during the attack: %d %s, want 250", code, msg)
	}

	// 127.0.0.13 keeps trying the right password: refused while its block
	// lasts, which its refused attempts do not extend. Once it is over the
	// password is checked again (on the old code, every retry extended a
	// block on the whole username, forever).
	start := time.Now()
	refused := 0
	for {
		code, msg := login("127.0.0.13", owner.Password)
		if code == 235 {
			break
		}
		if code != 535 {
			t.Fatalf("the right password from 127.0.0.13 after %d refusals: %d %s", refused, code, msg)
		}
		refused++
		if time.Since(start) > blockFor+60*time.Second {
			t.Fatalf("127.0.0.13 still refused %s after its last failure, %d refusals later: retries extend the block",
				time.Since(start), refused)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("127.0.0.13 logged in %s after the loop began, after %d refusals during its block", time.Since(start).Round(time.Millisecond), refused)
	if refused == 0 {
		t.Error("127.0.0.13 was not refused at all after the attack")
	}

	// The operator sees the attack, in which the refusals without a check
	// counted for nothing. The server reports at most once a second
	// (auth_failure_report_interval).
	var f failedLogins
	deadline := time.Now().Add(30 * time.Second)
	for {
		var shown struct {
			FailedLogins failedLogins `json:"failed_logins"`
		}
		inst.adminJSON(t, &shown, "user", "show", "owner")
		f = shown.FailedLogins
		if f.Failures >= 6 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !f.Recent || f.Failures != 6 || f.Networks != 3 || f.LastNetwork != "127.0.0.13" || f.Last == nil ||
		f.BlockedNetworks != 3 || f.BlockedUntil == nil || !f.BlockedUntil.After(*f.Last) {
		t.Errorf("user show --json failed_logins = %+v; want 6 failures from 3 networks, the last from 127.0.0.13, 3 networks blocked", f)
	}
	text := string(inst.mustAdmin(t, "user", "show", "owner"))
	for _, want := range []string{"failed logins:  6 from 3 networks between", "the last from 127.0.0.13",
		"3 networks", "refused as this username"} {
		if !strings.Contains(text, want) {
			t.Errorf("user show lacks %q:\n%s", want, text)
		}
	}
}
