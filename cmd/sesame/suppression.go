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
	Address   string    `json:"address"`
	Reason    string    `json:"reason"`
	Detail    string    `json:"detail"`
	CreatedAt time.Time `json:"created_at"`
}

func suppressionOutput(s store.Suppression) suppressionJSON {
	return suppressionJSON{Address: s.Address, Reason: s.Reason, Detail: s.Detail, CreatedAt: s.CreatedAt.UTC()}
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
	fmt.Fprintln(tw, "ADDRESS\tREASON\tSINCE\tDETAIL")
	for _, s := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Address, s.Reason, s.CreatedAt.UTC().Format(time.DateTime), s.Detail)
	}
	return tw.Flush()
}

func suppressionShow(e *env, args []string) error {
	addr, err := addressArg(args[0])
	if err != nil {
		return err
	}
	var s store.Suppression
	err = e.withStore(func(ctx context.Context, st *store.SQLite) (err error) {
		s, err = st.Suppression(ctx, addr)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%s is not on the suppression list", addr)
	}
	if err != nil {
		return err
	}
	if e.json {
		return e.printJSON(suppressionOutput(s))
	}
	fmt.Fprintf(e.stdout, "%s is suppressed since %s (%s): %s\nMail to it is accepted but not sent. \"sesame suppression remove %s\" lifts it.\n",
		s.Address, s.CreatedAt.UTC().Format(time.DateTime), s.Reason, s.Detail, s.Address)
	return nil
}

func suppressionAdd(e *env, args []string) error {
	addr, err := addressArg(args[0])
	if err != nil {
		return err
	}
	s := store.Suppression{Address: addr, Reason: store.SuppressManual, Detail: e.values["note"], CreatedAt: time.Now()}
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
	err = e.withStore(func(ctx context.Context, st *store.SQLite) error { return st.Unsuppress(ctx, addr) })
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%s is not on the suppression list", addr)
	}
	if err != nil {
		return err
	}
	if !e.json {
		fmt.Fprintf(e.stdout, "%s is no longer suppressed.\n", addr)
	}
	return nil
}
