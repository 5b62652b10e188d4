package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sesame-mail/sesame/config"
	"github.com/sesame-mail/sesame/inbound"
	"github.com/sesame-mail/sesame/store"
)

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
	Client     string    `json:"client"`
	MailFrom   string    `json:"mail_from"`
	RcptTo     string    `json:"rcpt_to"`
	Kind       string    `json:"kind"`
	Status     string    `json:"status"`
	Detail     string    `json:"detail"`
	// Verified: the report proved who sent it; Verification: the proof,
	// or why there was none ("" when nothing needed proving).
	Verified     bool   `json:"verified"`
	Verification string `json:"verification"`
	Size         int64  `json:"size"`       // bytes received
	KeptBytes    int64  `json:"kept_bytes"` // what the message counts against inbound.max_stored_bytes
	Truncated    bool   `json:"truncated"`  // only the start of the message is kept
}

func inboundOutput(m store.InboundMessage) inboundJSON {
	return inboundJSON{ID: m.ID, ReceivedAt: m.ReceivedAt.UTC(), Client: m.Client, MailFrom: m.MailFrom, RcptTo: m.RcptTo,
		Kind: m.Kind, Status: m.Status, Detail: m.Detail, Verified: m.Verified, Verification: m.Verification,
		Size: m.Size, KeptBytes: m.Kept, Truncated: m.Truncated}
}

// verdict is "verified", "unverified" or "-" (nothing to verify), with
// the reason (escaped) after a colon when asked for.
func verdict(m store.InboundMessage, why bool) string {
	v := "unverified"
	switch {
	case m.Verification == "":
		return "-"
	case m.Verified:
		v = "verified"
	}
	if why {
		v += ": " + clean(m.Verification)
	}
	return v
}

// inboundStatusFlag checks --status.
func inboundStatusFlag(status string) error {
	switch status {
	case "", store.InboundProcessed, store.InboundUnmatched, store.InboundIgnored, store.InboundUnparsed, store.InboundUnverified:
		return nil
	}
	return fmt.Errorf("--status %q: expected processed, unmatched, ignored, unparsed or unverified", status)
}

func inboundList(e *env, _ []string) error {
	status := e.values["status"]
	if err := inboundStatusFlag(status); err != nil {
		return err
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
			out = append(out, inboundOutput(m))
		}
		return e.printJSON(out)
	}
	if len(list) == 0 {
		fmt.Fprintln(e.stdout, "No bounces or feedback reports received.")
		return nil
	}
	// Everything but the id, the time and the status comes from the
	// sender: escaped.
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tRECEIVED\tCLIENT\tKIND\tSTATUS\tVERIFIED\tSIZE\tFROM\tDETAIL")
	for _, m := range list {
		detail := m.Detail
		if !m.Verified && m.Verification != "" {
			detail = m.Verification + " (" + detail + ")"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.ID, m.ReceivedAt.UTC().Format(time.DateTime), dash(clean(m.Client)),
			dash(clean(m.Kind)), clean(m.Status), verdict(m, false), sizeText(m), clean(orNull(m.MailFrom)), clean(detail))
	}
	return tw.Flush()
}

// orNull writes the null sender as "<>".
func orNull(from string) string {
	if from == "" {
		return "<>"
	}
	return from
}

// sizeText is the size received, and what is kept when that is less.
func sizeText(m store.InboundMessage) string {
	if m.Truncated {
		return bytesText(m.Size) + " (cut)"
	}
	return bytesText(m.Size)
}

func bytesText(n int64) string {
	switch {
	case n >= 10<<20:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 10<<10:
		return fmt.Sprintf("%d KiB", n>>10)
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func inboundID(arg string) (int64, error) {
	id, err := strconv.ParseInt(arg, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not an inbound message id (a number from \"sesame inbound list\")", arg)
	}
	return id, nil
}

func inboundShow(e *env, args []string) error {
	id, err := inboundID(args[0])
	if err != nil {
		return err
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
	if e.flags["raw"] {
		// What was kept, byte for byte (to save or to feed to a tool):
		// the one output that is not escaped.
		_, err := e.stdout.Write(m.Raw)
		return err
	}
	if e.json {
		return e.printJSON(struct {
			inboundJSON
			Raw string `json:"raw"`
		}{inboundOutput(m), string(m.Raw)})
	}
	kept := bytesText(m.Size)
	if m.Truncated {
		kept = fmt.Sprintf("%s received; only the first %s are kept", bytesText(m.Size), bytesText(int64(len(m.Raw))))
	}
	text := cleanText(string(m.Raw))
	fmt.Fprintf(e.stdout, "Received: %s from %s\nFrom:     <%s>\nTo:       %s\nKind:     %s\nStatus:   %s\nVerified: %s\nDetail:   %s\nSize:     %s\n\n%s",
		m.ReceivedAt.UTC().Format(time.DateTime), dash(clean(m.Client)), clean(m.MailFrom), clean(m.RcptTo), dash(clean(m.Kind)),
		clean(m.Status), verdict(m, true), clean(m.Detail), kept, text)
	if text != "" && !strings.HasSuffix(text, "\n") {
		fmt.Fprintln(e.stdout)
	}
	if text != strings.ReplaceAll(string(m.Raw), "\r\n", "\n") {
		fmt.Fprintf(e.stdout, "\n(control characters escaped; \"sesame inbound show %d --raw\" prints the bytes as they are)\n", m.ID)
	}
	return nil
}

func inboundDelete(e *env, args []string) error {
	id, err := inboundID(args[0])
	if err != nil {
		return err
	}
	err = e.withStore(func(ctx context.Context, st *store.SQLite) error {
		return st.DeleteInbound(ctx, id)
	})
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("no inbound message %d; \"sesame inbound list\" shows them", id)
	}
	if err != nil {
		return err
	}
	if !e.json {
		fmt.Fprintf(e.stdout, "Deleted inbound message %d.\n", id)
	}
	return nil
}

func inboundPurge(e *env, _ []string) error {
	var f store.InboundFilter
	if v, ok := e.values["before"]; ok {
		if v == "" {
			return errors.New(`--before "": expected an age such as 24h or 7d, or an RFC 3339 time`)
		}
		before, err := parseAgo("--before", v, 0)
		if err != nil {
			return err
		}
		f.Before = before
	}
	f.Status = e.values["status"]
	if err := inboundStatusFlag(f.Status); err != nil {
		return err
	}
	if e.flags["unparsed"] {
		if f.Status != "" && f.Status != store.InboundUnparsed {
			return fmt.Errorf("--unparsed and --status %s: give one", f.Status)
		}
		f.Status = store.InboundUnparsed
	}
	if v, ok := e.values["client"]; ok {
		ip, err := netip.ParseAddr(v)
		if err != nil {
			return fmt.Errorf("--client %q: expected an IP address such as 192.0.2.7, as \"sesame inbound list\" shows it", v)
		}
		f.Client = ip.Unmap().String()
	}
	if f == (store.InboundFilter{}) && !e.flags["all"] {
		return errors.New("say what to delete: --before AGE, --status STATUS, --unparsed, --client IP, or --all for every received message")
	}
	var purged store.InboundTotals
	err := e.withStore(func(ctx context.Context, st *store.SQLite) (err error) {
		purged, err = st.PurgeInbound(ctx, f)
		return err
	})
	if err != nil {
		return err
	}
	if e.json {
		return e.printJSON(map[string]int64{"deleted": int64(purged.Messages), "bytes": purged.Bytes})
	}
	fmt.Fprintf(e.stdout, "Deleted %d inbound message(s), %s kept.\n", purged.Messages, bytesText(purged.Bytes))
	return nil
}
