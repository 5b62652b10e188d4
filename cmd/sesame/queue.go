package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sesame-mail/sesame/dkim"
	"github.com/sesame-mail/sesame/relay"
	"github.com/sesame-mail/sesame/store"
)

func queueList(e *env, _ []string) error {
	var list []store.QueueEntry
	err := e.withStore(func(ctx context.Context, st *store.SQLite) (err error) {
		list, err = st.QueueMessages(ctx)
		return err
	})
	if err != nil {
		return err
	}
	if e.json {
		if list == nil {
			list = []store.QueueEntry{}
		}
		return e.printJSON(list)
	}
	if len(list) == 0 {
		fmt.Fprintln(e.stdout, "The queue is empty.")
		return nil
	}
	now := time.Now()
	for _, m := range list {
		printEntry(e, m, now)
	}
	return nil
}

func printEntry(e *env, m store.QueueEntry, now time.Time) {
	sender := m.Sender
	if sender == "" {
		sender = "<>"
	}
	fmt.Fprintf(e.stdout, "%s  %s old  %d bytes  from %s  (credential %s)\n", m.ID,
		now.Sub(m.ReceivedAt).Round(time.Second), m.Size, clean(sender), clean(m.Credential))
	for _, r := range m.Recipients {
		line := fmt.Sprintf("    %-9s %s", r.State, clean(r.Address))
		if r.State == store.StateDeferred {
			line += fmt.Sprintf("  (attempt %d, next in %s)", r.Attempts+1, r.NextAttempt.Sub(now).Round(time.Second))
		}
		if r.LastReply != "" {
			line += "  " + clean(r.LastReply)
		}
		fmt.Fprintln(e.stdout, line)
	}
}

func notQueued(id string, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("no message %s in the queue (delivered, bounced or deleted?); see \"sesame queue list\"", id)
	}
	return err
}

type queueShowOutput struct {
	store.QueueEntry
	Header string `json:"header"`
	// Corrupt says why the stored bytes are unusable (a quarantined
	// message); the envelope above is still there to decide on.
	Corrupt string `json:"corrupt,omitempty"`
}

func queueShow(e *env, args []string) error {
	id := args[0]
	var out queueShowOutput
	err := e.withStore(func(ctx context.Context, st *store.SQLite) error {
		var err error
		if out.QueueEntry, err = st.QueueMessage(ctx, id); err != nil {
			return err
		}
		data, err := st.MessageData(ctx, id)
		if errors.Is(err, store.ErrCorrupt) {
			out.Corrupt = err.Error()
			return nil
		}
		if err != nil {
			return err
		}
		out.Header = headerOf(data)
		return nil
	})
	if err != nil {
		return notQueued(id, err)
	}
	if e.json {
		return e.printJSON(out)
	}
	printEntry(e, out.QueueEntry, time.Now())
	fmt.Fprintf(e.stdout, "\nMessage-ID: %s\n\n%s", clean(out.MessageID), cleanText(out.Header))
	if out.Corrupt != "" {
		fmt.Fprintf(e.stdout, "The message cannot be sent: %s.\n"+
			"sesame queue delete %s --bounce tells its sender; sesame queue retry %s tries it again.\n", out.Corrupt, id, id)
	}
	return nil
}

// headerOf returns the header block of a message, without the empty line.
func headerOf(data []byte) string {
	s := string(data)
	if i := strings.Index(s, "\r\n\r\n"); i >= 0 {
		s = s[:i+2]
	}
	return strings.ReplaceAll(s, "\r\n", "\n")
}

func queueRetry(e *env, args []string) error {
	id := ""
	switch {
	case len(args) == 1 && !e.flags["all"]:
		id = args[0]
	case len(args) == 0 && e.flags["all"]:
	default:
		return errors.New("give a queue id, or --all")
	}
	var n int
	err := e.withStore(func(ctx context.Context, st *store.SQLite) (err error) {
		n, err = st.RetryNow(ctx, id, time.Now())
		return err
	})
	if err != nil {
		return notQueued(id, err)
	}
	if e.json {
		return e.printJSON(map[string]int{"recipients": n})
	}
	fmt.Fprintf(e.stdout, "%d recipient(s) due now; a running server attempts them within seconds.\n", n)
	return nil
}

func queueDelete(e *env, args []string) error {
	id := args[0]
	bounced := false
	err := e.withStore(func(ctx context.Context, st *store.SQLite) error {
		var notice *store.Message
		if e.flags["bounce"] {
			m, err := st.QueueMessage(ctx, id)
			if err != nil {
				return err
			}
			// A quarantined message's bytes are unusable: its bounce
			// goes without the original header.
			data, err := st.MessageData(ctx, id)
			if err != nil && !errors.Is(err, store.ErrCorrupt) {
				return err
			}
			if notice, err = relay.OperatorBounce(e.cfg.Hostname, m, data, time.Now()); err != nil {
				return err
			}
			if notice != nil {
				notice.Data = dkim.NewSystemSigner(dkim.NewDomainSigner(st), e.cfg.SystemDomain(), nil).Sign(ctx, notice.Data)
			}
			bounced = notice != nil
		}
		return st.DeleteMessage(ctx, id, notice)
	})
	if err != nil {
		return notQueued(id, err)
	}
	if e.json {
		return e.printJSON(map[string]any{"deleted": id, "bounced": bounced})
	}
	if bounced {
		fmt.Fprintf(e.stdout, "Deleted %s; its sender is sent a bounce.\n", id)
	} else {
		fmt.Fprintf(e.stdout, "Deleted %s.\n", id)
	}
	return nil
}
