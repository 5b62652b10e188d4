package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sesame-mail/sesame/account"
	"github.com/sesame-mail/sesame/config"
	"github.com/sesame-mail/sesame/store"
)

// openStore opens the store in the configured data directory, creating the
// directory (mode 0700: it holds keys) when it is missing.
func (e *env) openStore() (*store.SQLite, error) {
	if err := os.MkdirAll(e.cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data_dir: %w", err)
	}
	st, err := store.OpenSQLite(filepath.Join(e.cfg.DataDir, "sesame.db"))
	if err != nil {
		return nil, err
	}
	st.SetSuppressionPerCredential(e.cfg.Policy.SuppressionScope == "credential")
	return st, nil
}

// withStore runs f with the store open.
func (e *env) withStore(f func(ctx context.Context, st *store.SQLite) error) error {
	st, err := e.openStore()
	if err != nil {
		return err
	}
	defer st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return f(ctx, st)
}

var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

func checkName(name string) error {
	if !validName.MatchString(name) {
		return fmt.Errorf("%q is not a valid name: use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit", name)
	}
	return nil
}

// credentialsOutput is what user create and user rotate print.
type credentialsOutput struct {
	Name     string    `json:"name"`
	Username string    `json:"username"`
	Password string    `json:"password"`
	Allowed  *[]string `json:"allowed_identities,omitempty"` // user create only; empty: every verified identity
	// The SES API's key pair (user create only).
	AccessKeyID     string `json:"access_key_id,omitempty"`
	SecretAccessKey string `json:"secret_access_key,omitempty"`
}

func (e *env) printCredentials(c credentialsOutput, verb string) error {
	if e.json {
		return e.printJSON(c)
	}
	fmt.Fprintf(e.stdout, `%s SMTP credentials %q. The password is shown only this once: store it now.

  SMTP username: %s
  SMTP password: %s

  Server: %s, port 587 with STARTTLS, or port 465 with TLS; AUTH PLAIN or LOGIN.
`, verb, c.Name, c.Username, c.Password, e.cfg.Hostname)
	if c.AccessKeyID != "" {
		e.printAPIKeys(c.AccessKeyID, c.SecretAccessKey)
	}
	return nil
}

// printAPIKeys prints an access key pair and where to use it.
func (e *env) printAPIKeys(id, secret string) {
	fmt.Fprintf(e.stdout, `
  SES API access key id:     %s
  SES API secret access key: %s
`, id, secret)
	if e.cfg.API.Listen != "" {
		scheme := "https"
		if !e.cfg.API.TLS {
			scheme = "http"
		}
		fmt.Fprintf(e.stdout, "  SES API endpoint:          %s://%s (any region; see docs/api.md)\n", scheme, e.cfg.API.Listen)
	}
}

// newAPIKey makes an access key pair for the credential called name and
// stores it, sealed, replacing any key it had.
func (e *env) newAPIKey(ctx context.Context, st *store.SQLite, name string) (id, secret string, err error) {
	sealer, err := e.loadSealer()
	if err != nil {
		return "", "", err
	}
	id, secret = account.NewAccessKey()
	err = st.SetAPIKey(ctx, store.APIKey{ID: id, Credential: name, SealedSecret: sealer.Seal(id, secret), CreatedAt: time.Now()})
	return id, secret, err
}

// apiKeysOutput is what user keys prints.
type apiKeysOutput struct {
	Name            string    `json:"name"`
	AccessKeyID     string    `json:"access_key_id"`
	SecretAccessKey string    `json:"secret_access_key,omitempty"` // with --rotate only
	CreatedAt       time.Time `json:"created_at"`
}

// userKeys shows the credential's access key id, or with --rotate gives
// it a new key pair (the old one stops working at once) and prints it once.
func userKeys(e *env, args []string) error {
	name := args[0]
	var out apiKeysOutput
	err := e.withStore(func(ctx context.Context, st *store.SQLite) error {
		if _, err := st.Credential(ctx, name); err != nil {
			return err
		}
		if e.flags["rotate"] {
			id, secret, err := e.newAPIKey(ctx, st, name)
			out = apiKeysOutput{Name: name, AccessKeyID: id, SecretAccessKey: secret, CreatedAt: time.Now()}
			return err
		}
		k, err := st.CredentialAPIKey(ctx, name)
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("credentials %q have no SES API key yet; make one with \"sesame user keys %s --rotate\"", name, name)
		}
		out = apiKeysOutput{Name: name, AccessKeyID: k.ID, CreatedAt: k.CreatedAt}
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("no credentials named %q; see \"sesame user list\"", name)
	}
	if err != nil {
		return err
	}
	if e.json {
		return e.printJSON(out)
	}
	if out.SecretAccessKey == "" {
		fmt.Fprintf(e.stdout, "SES API access key id of %q: %s (made %s). The secret is shown only when made; "+
			"\"sesame user keys %s --rotate\" makes a new pair.\n", name, out.AccessKeyID, out.CreatedAt.Format(time.RFC3339), name)
		return nil
	}
	fmt.Fprintf(e.stdout, "New SES API key pair for %q; the old one stops working at once. The secret is shown only this once: store it now.\n", name)
	e.printAPIKeys(out.AccessKeyID, out.SecretAccessKey)
	return nil
}

func userCreate(e *env, args []string) error {
	name := args[0]
	if err := checkName(name); err != nil {
		return err
	}
	allowed, err := identityArgs(e.lists["allow"])
	if err != nil {
		return fmt.Errorf("--allow: %w", err)
	}
	password := account.NewPassword()
	hash, err := account.HashPassword(password)
	if err != nil {
		return err
	}
	out := credentialsOutput{Name: name, Username: account.NewUsername(), Password: password, Allowed: &allowed}
	err = e.withStore(func(ctx context.Context, st *store.SQLite) error {
		now := time.Now()
		err := st.CreateCredential(ctx, store.Credential{Name: name, Username: out.Username, PasswordHash: hash,
			CreatedAt: now, UpdatedAt: now, Sandbox: e.cfg.Policy.SandboxNewUsers, Allowed: allowed})
		if err != nil {
			return err
		}
		out.AccessKeyID, out.SecretAccessKey, err = e.newAPIKey(ctx, st, name)
		if err != nil {
			return fmt.Errorf("%w (the SMTP credentials were made; \"sesame user keys %s --rotate\" makes the API keys)", err, name)
		}
		return nil
	})
	if errors.Is(err, store.ErrExists) {
		return fmt.Errorf("credentials named %q exist already; use \"sesame user rotate %s\" for a new password", name, name)
	}
	if err != nil {
		return err
	}
	if err := e.printCredentials(out, "Created"); err != nil {
		return err
	}
	if e.json {
		return nil
	}
	if len(allowed) == 0 {
		// Said every time: an unrestricted credential is the one thing here
		// an operator may not have meant.
		fmt.Fprintf(e.stdout, "\n  It may send as every verified domain and address. To restrict it (say, to one app's\n"+
			"  domain): \"sesame user allow %s example.com\", or \"--allow\" when creating it.\n", name)
	} else {
		fmt.Fprintf(e.stdout, "\n  It may send only as %s (each must also be verified).\n", strings.Join(allowed, ", "))
	}
	if e.cfg.Policy.SandboxNewUsers {
		fmt.Fprintf(e.stdout, "\n  It starts in the sandbox: it may send only to verified addresses and domains, %d a day,\n"+
			"  %v a second. \"sesame user promote %s\" gives it production access.\n",
			e.cfg.Policy.SandboxDailyQuota, e.cfg.Policy.SandboxMaxSendRate, name)
	}
	return nil
}

func userRotate(e *env, args []string) error {
	name := args[0]
	password := account.NewPassword()
	hash, err := account.HashPassword(password)
	if err != nil {
		return err
	}
	var out credentialsOutput
	err = e.withStore(func(ctx context.Context, st *store.SQLite) error {
		c, err := st.Credential(ctx, name)
		if err != nil {
			return err
		}
		out = credentialsOutput{Name: name, Username: c.Username, Password: password}
		return st.SetPassword(ctx, name, hash, time.Now())
	})
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("no credentials named %q; see \"sesame user list\"", name)
	}
	if err != nil {
		return err
	}
	return e.printCredentials(out, "Rotated")
}

func userDelete(e *env, args []string) error {
	err := e.withStore(func(ctx context.Context, st *store.SQLite) error {
		return st.DeleteCredential(ctx, args[0])
	})
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("no credentials named %q; see \"sesame user list\"", args[0])
	}
	if err != nil {
		return err
	}
	if !e.json {
		fmt.Fprintf(e.stdout, "Deleted credentials %q; they stop working at once.\n", args[0])
	}
	return nil
}

type userOutput struct {
	Name      string     `json:"name"`
	Username  string     `json:"username"`
	CreatedAt time.Time  `json:"created_at"`
	RotatedAt time.Time  `json:"rotated_at"`
	LastUsed  *time.Time `json:"last_used"`
}

func userList(e *env, _ []string) error {
	var list []store.Credential
	err := e.withStore(func(ctx context.Context, st *store.SQLite) (err error) {
		list, err = st.ListCredentials(ctx)
		return err
	})
	if err != nil {
		return err
	}
	if e.json {
		out := []userOutput{}
		for _, c := range list {
			u := userOutput{Name: c.Name, Username: c.Username, CreatedAt: c.CreatedAt.UTC(), RotatedAt: c.UpdatedAt.UTC()}
			if !c.LastUsedAt.IsZero() {
				t := c.LastUsedAt.UTC()
				u.LastUsed = &t
			}
			out = append(out, u)
		}
		return e.printJSON(out)
	}
	if len(list) == 0 {
		fmt.Fprintln(e.stdout, `No credentials yet; create some with "sesame user create NAME".`)
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tUSERNAME\tCREATED\tLAST USED")
	for _, c := range list {
		used := "never"
		if !c.LastUsedAt.IsZero() {
			used = c.LastUsedAt.UTC().Format(time.DateTime)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.Name, c.Username, c.CreatedAt.UTC().Format(time.DateTime), used)
	}
	return tw.Flush()
}

// quotaDefaults are the configured quotas.
func (e *env) quotaDefaults() account.QuotaDefaults {
	p := e.cfg.Policy
	return account.QuotaDefaults{Daily: p.DailyQuota, Rate: p.MaxSendRate,
		SandboxDaily: p.SandboxDailyQuota, SandboxRate: p.SandboxMaxSendRate}
}

// reputationPolicy is the configured reputation guard.
func (e *env) reputationPolicy() account.ReputationPolicy {
	r := e.cfg.Reputation
	return account.ReputationPolicy{Window: r.Window.Duration, MinVolume: r.MinVolume,
		BounceWarning: r.BounceWarning, BouncePause: r.BouncePause,
		ComplaintWarning: r.ComplaintWarning, ComplaintPause: r.ComplaintPause, SimulatorDomain: e.cfg.Policy.SimulatorDomain}
}

// notFoundUser turns a missing credential into an error that says what to do.
func notFoundUser(name string, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("no credentials named %q; see \"sesame user list\"", name)
	}
	return err
}

type userShowOutput struct {
	Name        string     `json:"name"`
	Username    string     `json:"username"`
	AccessKeyID string     `json:"access_key_id"` // the SES API's; "" when it has none
	Sandbox     bool       `json:"sandbox"`
	DailyQuota  int        `json:"daily_quota"`
	MaxSendRate float64    `json:"max_send_rate"`
	Sent24h     int        `json:"sent_last_24h"`
	Allowed     []string   `json:"allowed_identities"`
	CreatedAt   time.Time  `json:"created_at"`
	LastUsed    *time.Time `json:"last_used"`

	BounceRate    float64 `json:"bounce_rate"`
	ComplaintRate float64 `json:"complaint_rate"`
	Reputation    string  `json:"reputation"` // ok, warning or pause
	Paused        string  `json:"paused"`     // why sending is paused; "" when it is not
	Pool          string  `json:"pool"`       // the IP pool its mail leaves from

	FailedLogins failedLoginsOutput `json:"failed_logins"`
}

// failedLoginsOutput is the last run of failed logins as the credential's
// username that the server reported (an attack, or an app with an old
// password): a run lasts while failures come less than auth_failure_window
// apart.
type failedLoginsOutput struct {
	Recent      bool       `json:"recent"` // the last failure is within auth_failure_window
	Failures    int        `json:"failures"`
	Networks    int        `json:"networks"` // distinct client networks (/32, /64)
	First       *time.Time `json:"first"`
	Last        *time.Time `json:"last"`
	LastNetwork string     `json:"last_network"`
	// BlockedNetworks were refused as the username, without a password
	// check, when the server last reported, until BlockedUntil.
	BlockedNetworks int        `json:"blocked_networks"`
	BlockedUntil    *time.Time `json:"blocked_until"`
	Blocked         bool       `json:"blocked"` // BlockedUntil is still ahead
}

func newFailedLoginsOutput(f store.LoginFailures, window time.Duration, now time.Time) failedLoginsOutput {
	out := failedLoginsOutput{Failures: f.Failures, Networks: f.Networks, LastNetwork: f.LastNetwork, BlockedNetworks: f.BlockedNetworks}
	opt := func(t time.Time) *time.Time {
		if t.IsZero() {
			return nil
		}
		t = t.UTC()
		return &t
	}
	out.First, out.Last, out.BlockedUntil = opt(f.First), opt(f.Last), opt(f.BlockedUntil)
	out.Recent = f.Failures > 0 && now.Sub(f.Last) < window
	out.Blocked = f.BlockedNetworks > 0 && now.Before(f.BlockedUntil)
	return out
}

// String is the failed-logins line of "sesame user show".
func (f failedLoginsOutput) String(window time.Duration) string {
	if f.Failures == 0 || f.Last == nil {
		return "none"
	}
	run := fmt.Sprintf("%d from %d network%s between %s and %s, the last from %s", f.Failures, f.Networks, plural(f.Networks),
		f.First.Format(time.DateTime), f.Last.Format(time.DateTime), f.LastNetwork)
	if !f.Recent {
		return fmt.Sprintf("none in the last %s (before: %s)", window, run)
	}
	switch {
	case f.Blocked:
		run += fmt.Sprintf("\n                  %d network%s refused as this username (no password check) until %s",
			f.BlockedNetworks, plural(f.BlockedNetworks), f.BlockedUntil.Format(time.DateTime))
	case f.BlockedNetworks > 0:
		run += fmt.Sprintf("\n                  %d network%s were refused as this username until %s",
			f.BlockedNetworks, plural(f.BlockedNetworks), f.BlockedUntil.Format(time.DateTime))
	}
	return run
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func userShow(e *env, args []string) error {
	name := args[0]
	var out userShowOutput
	err := e.withStore(func(ctx context.Context, st *store.SQLite) error {
		c, err := st.Credential(ctx, name)
		if err != nil {
			return err
		}
		lim := e.quotaDefaults().Limits(c)
		sent, err := st.Sent(ctx, name, time.Now().Add(-24*time.Hour))
		if err != nil {
			return err
		}
		rep, err := e.reputationPolicy().Standing(ctx, st, c, time.Now())
		if err != nil {
			return err
		}
		failures, err := st.LoginFailures(ctx, name)
		if err != nil {
			return err
		}
		key, err := st.CredentialAPIKey(ctx, name)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		out = userShowOutput{Name: c.Name, Username: c.Username, AccessKeyID: key.ID, Sandbox: c.Sandbox, DailyQuota: lim.Daily,
			MaxSendRate: lim.Rate, Sent24h: sent, Allowed: c.Allowed, CreatedAt: c.CreatedAt.UTC(),
			BounceRate: rep.BounceRate, ComplaintRate: rep.ComplaintRate, Reputation: rep.Verdict, Paused: c.PausedReason, Pool: c.Pool,
			FailedLogins: newFailedLoginsOutput(failures, e.cfg.Submission.AuthFailureWindow.Duration, time.Now())}
		if out.Pool == "" {
			out.Pool = config.DefaultPool
		}
		if rep.Reason != "" {
			out.Reputation += ": " + rep.Reason
		}
		if out.Allowed == nil {
			out.Allowed = []string{}
		}
		if !c.LastUsedAt.IsZero() {
			t := c.LastUsedAt.UTC()
			out.LastUsed = &t
		}
		return nil
	})
	if err != nil {
		return notFoundUser(name, err)
	}
	if e.json {
		return e.printJSON(out)
	}
	access := "production"
	if out.Sandbox {
		access = "sandbox (only to verified addresses and domains)"
	}
	allowed := "every verified identity"
	if len(out.Allowed) > 0 {
		allowed = strings.Join(out.Allowed, ", ")
	}
	used := "never"
	if out.LastUsed != nil {
		used = out.LastUsed.Format(time.DateTime)
	}
	paused := "no"
	if out.Paused != "" {
		paused = fmt.Sprintf("YES: %s (\"sesame user resume %s\" to resume)", out.Paused, out.Name)
	}
	keyID := out.AccessKeyID
	if keyID == "" {
		keyID = fmt.Sprintf("none (\"sesame user keys %s --rotate\" makes one)", out.Name)
	}
	fmt.Fprintf(e.stdout, `Credentials %q
  username:       %s
  API key id:     %s
  access:         %s
  sending quota:  %d of %d recipients in the last 24 hours; at most %v a second
  may send as:    %s
  reputation:     %.2f%% bounces, %.3f%% complaints over %s: %s
  paused:         %s
  IP pool:        %s
  created:        %s
  last used:      %s
  failed logins:  %s
`, out.Name, out.Username, keyID, access, out.Sent24h, out.DailyQuota, out.MaxSendRate, allowed,
		100*out.BounceRate, 100*out.ComplaintRate, e.cfg.Reputation.Window, out.Reputation, paused, out.Pool,
		out.CreatedAt.Format(time.DateTime), used, out.FailedLogins.String(e.cfg.Submission.AuthFailureWindow.Duration))
	return nil
}

func setSandbox(e *env, name string, sandbox bool) error {
	err := e.withStore(func(ctx context.Context, st *store.SQLite) error { return st.SetSandbox(ctx, name, sandbox) })
	if err != nil {
		return notFoundUser(name, err)
	}
	if e.json {
		return e.printJSON(map[string]any{"name": name, "sandbox": sandbox})
	}
	if sandbox {
		fmt.Fprintf(e.stdout, "%q is in the sandbox: it may send only to verified addresses and domains.\n", name)
	} else {
		fmt.Fprintf(e.stdout, "%q has production access: it may send to anyone, within its quotas.\n", name)
	}
	return nil
}

func userPromote(e *env, args []string) error { return setSandbox(e, args[0], false) }
func userSandbox(e *env, args []string) error { return setSandbox(e, args[0], true) }

func userAllow(e *env, args []string) error {
	name := args[0]
	var items []string
	for _, arg := range args[1:] {
		items = append(items, strings.Split(arg, ",")...)
	}
	ids, err := identityArgs(items)
	if err != nil {
		return err
	}
	err = e.withStore(func(ctx context.Context, st *store.SQLite) error { return st.SetAllowed(ctx, name, ids) })
	if err != nil {
		return notFoundUser(name, err)
	}
	if e.json {
		return e.printJSON(map[string]any{"name": name, "allowed_identities": ids})
	}
	if len(ids) == 0 {
		fmt.Fprintf(e.stdout, "%q may send as every verified identity.\n", name)
	} else {
		fmt.Fprintf(e.stdout, "%q may send only as %s (each must also be verified).\n", name, strings.Join(ids, ", "))
	}
	return nil
}

// identityArgs normalizes domain and address arguments, skipping empty
// ones (what a trailing comma leaves); never nil.
func identityArgs(args []string) ([]string, error) {
	ids := []string{}
	for _, arg := range args {
		if arg = strings.TrimSpace(arg); arg == "" {
			continue
		}
		id, err := identityArg(arg)
		if err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// identityArg normalizes a domain or address argument.
func identityArg(arg string) (string, error) {
	if strings.Contains(arg, "@") {
		return addressArg(arg)
	}
	return domainName(arg)
}

func userQuota(e *env, args []string) error {
	name := args[0]
	if len(e.values) == 0 {
		return errors.New("give --daily N and/or --rate R (0 restores the configured default)")
	}
	err := e.withStore(func(ctx context.Context, st *store.SQLite) error {
		c, err := st.Credential(ctx, name)
		if err != nil {
			return err
		}
		daily, rate := c.DailyQuota, c.MaxSendRate
		if v, ok := e.values["daily"]; ok {
			if daily, err = strconv.Atoi(v); err != nil || daily < 0 {
				return fmt.Errorf("--daily %q: expected a whole number of recipients, 0 for the default", v)
			}
		}
		if v, ok := e.values["rate"]; ok {
			if rate, err = strconv.ParseFloat(v, 64); err != nil || rate < 0 || math.IsInf(rate, 0) || math.IsNaN(rate) {
				return fmt.Errorf("--rate %q: expected recipients per second, 0 for the default", v)
			}
		}
		return st.SetQuota(ctx, name, daily, rate)
	})
	if err != nil {
		return notFoundUser(name, err)
	}
	return userShow(e, args)
}

func userResume(e *env, args []string) error {
	name := args[0]
	err := e.withStore(func(ctx context.Context, st *store.SQLite) error {
		return st.SetPaused(ctx, name, "", time.Now())
	})
	if err != nil {
		return notFoundUser(name, err)
	}
	if !e.json {
		fmt.Fprintf(e.stdout, "%q may send again. Its rates count afresh from now; over the limits it is paused again.\n", name)
	}
	return nil
}
