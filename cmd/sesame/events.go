package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sesame-mail/sesame/events"
	"github.com/sesame-mail/sesame/store"
)

// parseSince reads --since: a duration back from now ("24h", "90m", "7d"),
// or an RFC 3339 time.
func parseSince(v string, def time.Duration) (time.Time, error) {
	return parseAgo("--since", v, def)
}

// parseAgo reads the time flag named name: a duration back from now, or an
// RFC 3339 time; "" is def back from now.
func parseAgo(name, v string, def time.Duration) (time.Time, error) {
	now := time.Now()
	switch {
	case v == "":
		return now.Add(-def), nil
	case strings.HasSuffix(v, "d"):
		if days, err := strconv.Atoi(strings.TrimSuffix(v, "d")); err == nil && days > 0 {
			return now.Add(-time.Duration(days) * 24 * time.Hour), nil
		}
	default:
		if d, err := time.ParseDuration(v); err == nil && d > 0 {
			return now.Add(-d), nil
		}
		if t, err := time.Parse(time.RFC3339, v); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%s %q: expected a duration such as 24h or 7d, or a time such as 2026-11-27T08:00:00Z", name, v)
}

func eventsList(e *env, _ []string) error {
	since, err := parseSince(e.values["since"], 24*time.Hour)
	if err != nil {
		return err
	}
	q := store.EventQuery{Since: since, Credential: e.values["user"], Type: e.values["type"],
		Recipient: e.values["recipient"], Limit: 1000}
	if q.Type != "" && !slices.Contains(store.EventTypes, q.Type) {
		return fmt.Errorf("--type %q: expected one of %s", q.Type, strings.Join(store.EventTypes, ", "))
	}
	if v := e.values["limit"]; v != "" {
		if q.Limit, err = strconv.Atoi(v); err != nil || q.Limit < 1 {
			return fmt.Errorf("--limit %q: expected a positive number", v)
		}
	}
	var list []store.Event
	err = e.withStore(func(ctx context.Context, st *store.SQLite) (err error) {
		list, err = st.QueryEvents(ctx, q)
		return err
	})
	if err != nil {
		return err
	}
	if e.json {
		// The webhooks' shape, so one consumer reads both.
		out := []events.Payload{}
		for _, ev := range list {
			out = append(out, events.NewPayload(ev))
		}
		return e.printJSON(out)
	}
	if len(list) == 0 {
		fmt.Fprintln(e.stdout, "No events match.")
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tTYPE\tCREDENTIAL\tQUEUE ID\tRECIPIENT\tREMOTE\tREPLY")
	for _, ev := range list {
		typ := ev.Type
		if ev.BounceType != "" {
			typ += " (" + ev.BounceType + ")"
		}
		if ev.Count > 1 {
			typ += fmt.Sprintf(" (%d times)", ev.Count) // repeated refusals, summed
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ev.At.UTC().Format(time.DateTime), typ, dash(clean(ev.Credential)),
			dash(clean(ev.QueueID)), dash(clean(ev.Recipient)), dash(clean(ev.RemoteMTA)), clean(ev.Reply))
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

type statsJSON struct {
	Since         time.Time `json:"since"`
	Credential    string    `json:"credential,omitempty"`
	Sends         int       `json:"sends"`
	Deliveries    int       `json:"deliveries"`
	Bounces       int       `json:"bounces"`
	Complaints    int       `json:"complaints"`
	Rejects       int       `json:"rejects"`
	Deferrals     int       `json:"deferrals"`
	Expired       int       `json:"expired"`
	BounceRate    float64   `json:"bounce_rate"`
	ComplaintRate float64   `json:"complaint_rate"`
}

// stats counts events as the SES console's sending statistics do. The
// bounce rate is bounces (with expired mail) over the recipients whose
// delivery ended; the complaint rate is complaints over deliveries.
func stats(e *env, _ []string) error {
	since, err := parseSince(e.values["since"], 24*time.Hour)
	if err != nil {
		return err
	}
	var counts map[string]int
	err = e.withStore(func(ctx context.Context, st *store.SQLite) error {
		if name := e.values["user"]; name != "" {
			if _, err := st.Credential(ctx, name); err != nil {
				return notFoundUser(name, err)
			}
		}
		counts, err = st.CountEvents(ctx, store.EventQuery{Since: since, Credential: e.values["user"]})
		return err
	})
	if err != nil {
		return err
	}
	out := statsJSON{Since: since.UTC(), Credential: e.values["user"], Sends: counts[store.EventSend],
		Deliveries: counts[store.EventDelivery], Bounces: counts[store.EventBounce], Complaints: counts[store.EventComplaint],
		Rejects: counts[store.EventReject], Deferrals: counts[store.EventDeferral], Expired: counts[store.EventExpired]}
	if ended := out.Deliveries + out.Bounces + out.Expired; ended > 0 {
		out.BounceRate = float64(out.Bounces+out.Expired) / float64(ended)
	}
	if out.Deliveries > 0 {
		out.ComplaintRate = float64(out.Complaints) / float64(out.Deliveries)
	}
	if e.json {
		return e.printJSON(out)
	}
	who := "all credentials"
	if out.Credential != "" {
		who = fmt.Sprintf("credential %q", out.Credential)
	}
	fmt.Fprintf(e.stdout, "Sending statistics for %s since %s\n\n", who, out.Since.Format(time.DateTime+" MST"))
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "  sends\t%d\t\n", out.Sends)
	fmt.Fprintf(tw, "  deliveries\t%d\t\n", out.Deliveries)
	fmt.Fprintf(tw, "  bounces\t%d\t(%.2f%% bounce rate, expired mail included)\n", out.Bounces+out.Expired, 100*out.BounceRate)
	fmt.Fprintf(tw, "  complaints\t%d\t(%.2f%% complaint rate)\n", out.Complaints, 100*out.ComplaintRate)
	fmt.Fprintf(tw, "  rejects\t%d\t(refused at submission)\n", out.Rejects)
	fmt.Fprintf(tw, "  deferrals\t%d\t(temporary failures, retried)\n", out.Deferrals)
	return tw.Flush()
}
