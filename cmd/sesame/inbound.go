package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/sesame-mail/sesame/config"
	"github.com/sesame-mail/sesame/inbound"
	"github.com/sesame-mail/sesame/store"
	"github.com/sesame-mail/sesame/verp"
)

// verifiedReturnPath gives mail from a verified domain a VERP return path
// per recipient; mail from a verified address of another domain keeps its
// sender (bounce.THATDOMAIN is not ours). Domain statuses are cached for a
// minute: a lookup per recipient would cost a read each.
func verifiedReturnPath(st *store.SQLite, signer *verp.Signer) func(sender, queueID, rcpt string) string {
	type entry struct {
		ok bool
		at time.Time
	}
	var mu sync.Mutex
	cache := map[string]entry{}
	verified := func(domain string) bool {
		mu.Lock()
		e, found := cache[domain]
		mu.Unlock()
		if found && time.Since(e.at) < time.Minute {
			return e.ok
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		d, err := st.DomainStatusOf(ctx, domain)
		ok := err == nil && d.Status == store.IdentityVerified
		if err == nil || errors.Is(err, store.ErrNotFound) {
			mu.Lock()
			if len(cache) > 10000 {
				clear(cache)
			}
			cache[domain] = entry{ok, time.Now()}
			mu.Unlock()
		}
		return ok
	}
	return func(sender, queueID, rcpt string) string {
		domain := store.AddressDomain(sender)
		if !verified(domain) {
			return ""
		}
		return signer.ReturnPath(domain, queueID, rcpt)
	}
}

// inboundLimits are the configured bounds on what the inbound listener
// keeps.
func inboundLimits(cfg *config.Config) inbound.Limits {
	in := cfg.Inbound
	return inbound.Limits{
		KeepRawBytes:          in.KeepRawBytes,
		MaxStoredMessages:     in.MaxStoredMessages,
		MaxStoredBytes:        in.MaxStoredBytes,
		ClientMessagesPerHour: in.ClientMessagesPerHour,
		ClientBytesPerHour:    in.ClientBytesPerHour,
		MinFreeBytes:          in.MinFreeBytes,
		DataDir:               cfg.DataDir,
	}
}

type inboundJSON struct {
	ID         int64     `json:"id"`
	ReceivedAt time.Time `json:"received_at"`
	MailFrom   string    `json:"mail_from"`
	RcptTo     string    `json:"rcpt_to"`
	Kind       string    `json:"kind"`
	Status     string    `json:"status"`
	Detail     string    `json:"detail"`
}

func inboundList(e *env, _ []string) error {
	status := e.values["status"]
	switch status {
	case "", store.InboundProcessed, store.InboundUnmatched, store.InboundIgnored, store.InboundUnparsed:
	default:
		return fmt.Errorf("--status %q: expected processed, unmatched, ignored or unparsed", status)
	}
	var list []store.InboundMessage
	err := e.withStore(func(ctx context.Context, st *store.SQLite) (err error) {
		list, err = st.InboundMessages(ctx, status, 1000)
		return err
	})
	if err != nil {
		return err
	}
	if e.json {
		out := []inboundJSON{}
		for _, m := range list {
			out = append(out, inboundJSON{m.ID, m.ReceivedAt.UTC(), m.MailFrom, m.RcptTo, m.Kind, m.Status, m.Detail})
		}
		return e.printJSON(out)
	}
	if len(list) == 0 {
		fmt.Fprintln(e.stdout, "No bounces or feedback reports received.")
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tRECEIVED\tKIND\tSTATUS\tFROM\tDETAIL")
	for _, m := range list {
		kind := m.Kind
		if kind == "" {
			kind = "-"
		}
		from := m.MailFrom
		if from == "" {
			from = "<>"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", m.ID, m.ReceivedAt.UTC().Format(time.DateTime), kind, m.Status, from, m.Detail)
	}
	return tw.Flush()
}

func inboundShow(e *env, args []string) error {
	id, err := strconv.ParseInt(args[0], 10, 64)
	if err != nil {
		return fmt.Errorf("%q is not an inbound message id (a number from \"sesame inbound list\")", args[0])
	}
	var m store.InboundMessage
	err = e.withStore(func(ctx context.Context, st *store.SQLite) (err error) {
		m, err = st.InboundMessage(ctx, id)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("no inbound message %d; \"sesame inbound list\" shows them", id)
	}
	if err != nil {
		return err
	}
	if e.json {
		return e.printJSON(struct {
			inboundJSON
			Raw string `json:"raw"`
		}{inboundJSON{m.ID, m.ReceivedAt.UTC(), m.MailFrom, m.RcptTo, m.Kind, m.Status, m.Detail}, string(m.Raw)})
	}
	fmt.Fprintf(e.stdout, "Received: %s\nFrom:     <%s>\nTo:       %s\nKind:     %s\nStatus:   %s\nDetail:   %s\n\n%s",
		m.ReceivedAt.UTC().Format(time.DateTime), m.MailFrom, m.RcptTo, m.Kind, m.Status, m.Detail,
		strings.ReplaceAll(string(m.Raw), "\r\n", "\n"))
	return nil
}
