package main

import (
	"context"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/sesame-mail/sesame/store"
)

type suppressionJSON struct {
	Address    string    `json:"address"`
	Credential string    `json:"credential"` // "" for every credential
	Reason     string    `json:"reason"`
	Detail     string    `json:"detail"`
	CreatedAt  time.Time `json:"created_at"`
}

func suppressionOutput(s store.Suppression) suppressionJSON {
	return suppressionJSON{Address: s.Address, Credential: s.Credential, Reason: s.Reason, Detail: s.Detail,
		CreatedAt: s.CreatedAt.UTC()}
}

// scopeText names whose mail an entry stops.
func scopeText(s store.Suppression) string {
	if s.Credential == "" {
		return "all"
	}
	return s.Credential
}

// userFlag is the --user of suppression add and remove: "" for the shared
// list; a named credential must exist.
func (e *env) userFlag() (string, error) {
	name := e.values["user"]
	if name == "" {
		return "", nil
	}
	err := e.withStore(func(ctx context.Context, st *store.SQLite) error {
		_, err := st.Credential(ctx, name)
		return err
	})
	if err != nil {
		return "", notFoundUser(name, err)
	}
	return name, nil
}

func suppressionList(e *env, _ []string) error {
	var list []store.Suppression
	err := e.withStore(func(ctx context.Context, st *store.SQLite) (err error) {
		list, err = st.ListSuppressions(ctx)
		return err
	})
	if err != nil {
		return err
	}
	if e.json {
		out := []suppressionJSON{}
		for _, s := range list {
			out = append(out, suppressionOutput(s))
		}
		return e.printJSON(out)
	}
	if len(list) == 0 {
		fmt.Fprintln(e.stdout, "The suppression list is empty.")
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ADDRESS\tFOR\tREASON\tSINCE\tDETAIL")
	for _, s := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", clean(s.Address), clean(scopeText(s)), s.Reason, s.CreatedAt.UTC().Format(time.DateTime), clean(s.Detail))
	}
	return tw.Flush()
}

func suppressionShow(e *env, args []string) error {
	addr, err := addressArg(args[0])
	if err != nil {
		return err
	}
	var list []store.Suppression
	err = e.withStore(func(ctx context.Context, st *store.SQLite) (err error) {
		list, err = st.Suppression(ctx, addr)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%s is not on the suppression list", addr)
	}
	if err != nil {
		return err
	}
	if e.json {
		out := []suppressionJSON{}
		for _, s := range list {
			out = append(out, suppressionOutput(s))
		}
		return e.printJSON(out)
	}
	for _, s := range list {
		whose, flag := "every credential's mail", ""
		if s.Credential != "" {
			whose, flag = fmt.Sprintf("mail of credential %q", s.Credential), " --user "+s.Credential
		}
		fmt.Fprintf(e.stdout, "%s is suppressed for %s since %s (%s): %s\n\"sesame suppression remove %s%s\" lifts it.\n",
			clean(s.Address), clean(whose), s.CreatedAt.UTC().Format(time.DateTime), s.Reason, clean(s.Detail), clean(s.Address), clean(flag))
	}
	fmt.Fprintln(e.stdout, "Mail to a suppressed address is accepted but not sent.")
	return nil
}

func suppressionAdd(e *env, args []string) error {
	addr, err := addressArg(args[0])
	if err != nil {
		return err
	}
	cred, err := e.userFlag()
	if err != nil {
		return err
	}
	s := store.Suppression{Address: addr, Credential: cred, Reason: store.SuppressManual, Detail: e.values["note"], CreatedAt: time.Now()}
	if s.Detail == "" {
		s.Detail = "added by the operator"
	}
	if err := e.withStore(func(ctx context.Context, st *store.SQLite) error { return st.Suppress(ctx, s) }); err != nil {
		return err
	}
	if e.json {
		return e.printJSON(suppressionOutput(s))
	}
	fmt.Fprintf(e.stdout, "%s is suppressed: mail to it is accepted but not sent.\n", addr)
	return nil
}

func suppressionRemove(e *env, args []string) error {
	addr, err := addressArg(args[0])
	if err != nil {
		return err
	}
	cred, err := e.userFlag()
	if err != nil {
		return err
	}
	err = e.withStore(func(ctx context.Context, st *store.SQLite) error { return st.Unsuppress(ctx, addr, cred) })
	if errors.Is(err, store.ErrNotFound) {
		if cred != "" {
			return fmt.Errorf("%s is not on the suppression list of %q (\"sesame suppression show %s\" shows its entries)", addr, cred, addr)
		}
		return fmt.Errorf("%s is not on the shared suppression list (\"sesame suppression show %s\" shows its entries; one for a single credential needs --user)", addr, addr)
	}
	if err != nil {
		return err
	}
	if !e.json {
		fmt.Fprintf(e.stdout, "%s is no longer suppressed.\n", addr)
	}
	return nil
}
