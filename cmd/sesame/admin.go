package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/net/idna"

	"github.com/sesame-mail/sesame/account"
	"github.com/sesame-mail/sesame/dkim"
	"github.com/sesame-mail/sesame/store"
)

// openStore opens the store in the configured data directory, creating the
// directory (mode 0700: it holds keys) when it is missing.
func (e *env) openStore() (*store.SQLite, error) {
	if err := os.MkdirAll(e.cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data_dir: %w", err)
	}
	return store.OpenSQLite(filepath.Join(e.cfg.DataDir, "sesame.db"))
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
	Name     string `json:"name"`
	Username string `json:"username"`
	Password string `json:"password"`
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
	return nil
}

func userCreate(e *env, args []string) error {
	name := args[0]
	if err := checkName(name); err != nil {
		return err
	}
	password := account.NewPassword()
	hash, err := account.HashPassword(password)
	if err != nil {
		return err
	}
	out := credentialsOutput{Name: name, Username: account.NewUsername(), Password: password}
	err = e.withStore(func(ctx context.Context, st *store.SQLite) error {
		now := time.Now()
		return st.CreateCredential(ctx, store.Credential{Name: name, Username: out.Username, PasswordHash: hash,
			CreatedAt: now, UpdatedAt: now})
	})
	if errors.Is(err, store.ErrExists) {
		return fmt.Errorf("credentials named %q exist already; use \"sesame user rotate %s\" for a new password", name, name)
	}
	if err != nil {
		return err
	}
	return e.printCredentials(out, "Created")
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

// domainName turns an operator's domain argument into its lower-case A-label form.
func domainName(arg string) (string, error) {
	d, err := idna.Registration.ToASCII(strings.TrimSuffix(strings.ToLower(arg), "."))
	if err != nil || !strings.Contains(d, ".") {
		return "", fmt.Errorf("%q is not a domain name such as example.com", arg)
	}
	return d, nil
}

type domainOutput struct {
	Domain  string        `json:"domain"`
	Records []dkim.Record `json:"records"`
}

func records(d store.Domain) (domainOutput, error) {
	out := domainOutput{Domain: d.Name, Records: []dkim.Record{}}
	for _, k := range d.Keys {
		r, err := dkim.DNSRecord(d.Name, k)
		if err != nil {
			return out, err
		}
		out.Records = append(out.Records, r)
	}
	return out, nil
}

func (e *env) printDomain(d store.Domain, intro string) error {
	out, err := records(d)
	if err != nil {
		return err
	}
	if e.json {
		return e.printJSON(out)
	}
	fmt.Fprintf(e.stdout, "%s\n\n", intro)
	for _, r := range out.Records {
		fmt.Fprintf(e.stdout, "  %s  %s\n       %s\n\n", r.Type, r.Name, r.Value)
	}
	fmt.Fprintf(e.stdout, "Mail with a From address at %s is signed with these keys from now on.\n", d.Name)
	return nil
}

func domainAdd(e *env, args []string) error {
	name, err := domainName(args[0])
	if err != nil {
		return err
	}
	now := time.Now()
	d := store.Domain{Name: name, CreatedAt: now}
	algs := []string{store.AlgRSA}
	if e.cfg.DKIM.Ed25519 {
		algs = append(algs, store.AlgEd25519)
	}
	for _, alg := range algs {
		k, err := dkim.NewKey(alg, now)
		if err != nil {
			return err
		}
		d.Keys = append(d.Keys, k)
	}
	err = e.withStore(func(ctx context.Context, st *store.SQLite) error { return st.CreateDomain(ctx, d) })
	if errors.Is(err, store.ErrExists) {
		return fmt.Errorf("domain %s exists already; \"sesame domain show %s\" prints its records", name, name)
	}
	if err != nil {
		return err
	}
	return e.printDomain(d, fmt.Sprintf("Added %s. Publish these DNS records so receivers can verify its DKIM signatures:", name))
}

func domainShow(e *env, args []string) error {
	name, err := domainName(args[0])
	if err != nil {
		return err
	}
	var d store.Domain
	err = e.withStore(func(ctx context.Context, st *store.SQLite) (err error) {
		d, err = st.Domain(ctx, name)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("no domain %s; add it with \"sesame domain add %s\"", name, name)
	}
	if err != nil {
		return err
	}
	return e.printDomain(d, fmt.Sprintf("DNS records for %s:", name))
}

func domainList(e *env, _ []string) error {
	var list []store.Domain
	err := e.withStore(func(ctx context.Context, st *store.SQLite) (err error) {
		list, err = st.ListDomains(ctx)
		return err
	})
	if err != nil {
		return err
	}
	if e.json {
		out := []domainOutput{}
		for _, d := range list {
			o, err := records(d)
			if err != nil {
				return err
			}
			out = append(out, o)
		}
		return e.printJSON(out)
	}
	if len(list) == 0 {
		fmt.Fprintln(e.stdout, `No domains yet; add one with "sesame domain add DOMAIN".`)
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DOMAIN\tADDED\tDKIM SELECTORS")
	for _, d := range list {
		var sels []string
		for _, k := range d.Keys {
			sels = append(sels, k.Selector)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", d.Name, d.CreatedAt.UTC().Format(time.DateTime), strings.Join(sels, ", "))
	}
	return tw.Flush()
}

func domainDelete(e *env, args []string) error {
	name, err := domainName(args[0])
	if err != nil {
		return err
	}
	err = e.withStore(func(ctx context.Context, st *store.SQLite) error { return st.DeleteDomain(ctx, name) })
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("no domain %s; see \"sesame domain list\"", name)
	}
	if err != nil {
		return err
	}
	if !e.json {
		fmt.Fprintf(e.stdout, "Deleted %s and its keys; mail from it is refused from now on.\n", name)
	}
	return nil
}
