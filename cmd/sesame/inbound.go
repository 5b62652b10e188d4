package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sesame-mail/sesame/store"
)

type inboundJSON struct {
	ID         int64     `json:"id"`
	ReceivedAt time.Time `json:"received_at"`
	MailFrom   string    `json:"mail_from"`
	RcptTo     string    `json:"rcpt_to"`
	Kind       string    `json:"kind"`
	Status     string    `json:"status"`
	Detail     string    `json:"detail"`
	// Verified: the report proved who sent it; Verification: the proof,
	// or why there was none ("" when nothing needed proving).
	Verified     bool   `json:"verified"`
	Verification string `json:"verification"`
}

func inboundOf(m store.InboundMessage) inboundJSON {
	return inboundJSON{m.ID, m.ReceivedAt.UTC(), m.MailFrom, m.RcptTo, m.Kind, m.Status, m.Detail, m.Verified, m.Verification}
}

// verdict is "verified", "unverified" or "-" (nothing to verify), with
// the reason after a colon when asked for.
func verdict(m store.InboundMessage, why bool) string {
	v := "unverified"
	switch {
	case m.Verification == "":
		return "-"
	case m.Verified:
		v = "verified"
	}
	if why {
		v += ": " + m.Verification
	}
	return v
}

func inboundList(e *env, _ []string) error {
	status := e.values["status"]
	switch status {
	case "", store.InboundProcessed, store.InboundUnmatched, store.InboundIgnored, store.InboundUnparsed, store.InboundUnverified:
	default:
		return fmt.Errorf("--status %q: expected processed, unmatched, ignored, unparsed or unverified", status)
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
			out = append(out, inboundOf(m))
		}
		return e.printJSON(out)
	}
	if len(list) == 0 {
		fmt.Fprintln(e.stdout, "No bounces or feedback reports received.")
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tRECEIVED\tKIND\tSTATUS\tVERIFIED\tFROM\tDETAIL")
	for _, m := range list {
		kind := m.Kind
		if kind == "" {
			kind = "-"
		}
		from := m.MailFrom
		if from == "" {
			from = "<>"
		}
		detail := m.Detail
		if !m.Verified && m.Verification != "" {
			detail = m.Verification + " (" + detail + ")"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", m.ID, m.ReceivedAt.UTC().Format(time.DateTime), kind, m.Status,
			verdict(m, false), from, detail)
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
		}{inboundOf(m), string(m.Raw)})
	}
	fmt.Fprintf(e.stdout, "Received: %s\nFrom:     <%s>\nTo:       %s\nKind:     %s\nStatus:   %s\nVerified: %s\nDetail:   %s\n\n%s",
		m.ReceivedAt.UTC().Format(time.DateTime), m.MailFrom, m.RcptTo, m.Kind, m.Status, verdict(m, true), m.Detail,
		strings.ReplaceAll(string(m.Raw), "\r\n", "\n"))
	return nil
}
