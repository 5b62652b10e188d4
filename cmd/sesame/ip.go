package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sesame-mail/sesame/config"
	"github.com/sesame-mail/sesame/store"
	"github.com/sesame-mail/sesame/warmup"
)

// shaperConfig translates the configuration's [[ip]], relay.source_ips,
// [warmup] and [[provider]] into the Limiter's, as docs/configuration.md
// describes them: source_ips are warm IPs of the default pool, an empty
// schedule is warmup.DefaultDaily, and without any IP one implicit IP in the
// default pool lets the operating system choose. How the operator's
// providers combine with the default ones is warmup's (MergeProviders).
func shaperConfig(cfg *config.Config) warmup.Config {
	w := warmup.Config{
		Schedule:   warmup.Schedule{Daily: cfg.Warmup.Schedule, SpreadHours: cfg.Warmup.SpreadHours},
		Backoff:    cfg.Warmup.ThrottleBackoff.Duration,
		BackoffMax: cfg.Warmup.ThrottleBackoffMax.Duration,
	}
	if len(w.Schedule.Daily) == 0 {
		w.Schedule.Daily = warmup.DefaultDaily
	}
	for _, a := range cfg.Relay.SourceIPs {
		ip, _ := netip.ParseAddr(a) // validated by config
		w.IPs = append(w.IPs, warmup.IP{Addr: ip.Unmap(), Pool: warmup.DefaultPool})
	}
	for _, c := range cfg.IPs {
		ip := warmup.IP{Pool: c.Pool}
		ip.Addr, _ = netip.ParseAddr(c.Address)
		ip.Addr = ip.Addr.Unmap()
		if ip.Pool == "" {
			ip.Pool = warmup.DefaultPool
		}
		if c.WarmupStart != "" {
			ip.Start, _ = warmup.ParseDate(c.WarmupStart)
		}
		w.IPs = append(w.IPs, ip)
	}
	if len(w.IPs) == 0 {
		w.IPs = []warmup.IP{{Pool: warmup.DefaultPool}}
	}
	var base, own []warmup.Provider
	if cfg.Warmup.DefaultProviders {
		base = warmup.DefaultProviders()
	}
	for _, p := range cfg.Providers {
		own = append(own, warmup.Provider{Name: p.Name, MX: p.MX, WarmupHourly: p.WarmupHourly, Hourly: p.Hourly,
			PerConnection: p.PerConnection})
	}
	w.Providers = warmup.MergeProviders(base, own)
	return w
}

// sourceAddrs lists every configured outbound address, for SPF guidance.
func sourceAddrs(cfg *config.Config) []string {
	out := append([]string(nil), cfg.Relay.SourceIPs...)
	for _, ip := range cfg.IPs {
		out = append(out, ip.Address)
	}
	return out
}

// loadLimiter builds the Limiter the running server has, from the store's
// counters: what `sesame ip` shows.
func loadLimiter(ctx context.Context, cfg *config.Config, st *store.SQLite, now time.Time) (*warmup.Limiter, error) {
	l := warmup.NewLimiter(shaperConfig(cfg))
	sends, err := st.IPSends(ctx, now.Add(-24*time.Hour))
	if err != nil {
		return nil, err
	}
	susp, err := st.IPSuspensions(ctx)
	if err != nil {
		return nil, err
	}
	pauses, err := st.IPPauses(ctx)
	if err != nil {
		return nil, err
	}
	l.Load(now, sends, susp, pauses)
	return l, nil
}

// ipStatus reads every IP's figures now.
func (e *env) ipStatus() ([]warmup.IPStatus, *warmup.Limiter, map[string]int, error) {
	now := time.Now()
	var l *warmup.Limiter
	var parked map[string]int
	err := e.withStore(func(ctx context.Context, st *store.SQLite) (err error) {
		if l, err = loadLimiter(ctx, e.cfg, st, now); err != nil {
			return err
		}
		parked, err = st.ParkedCounts(ctx)
		return err
	})
	if err != nil {
		return nil, nil, nil, err
	}
	return l.Status(now), l, parked, nil
}

func capText(n int) string {
	if n < 0 {
		return "unlimited"
	}
	return fmt.Sprint(n)
}

func dayText(st warmup.IPStatus) string {
	switch {
	case st.Warm:
		return "warm"
	case st.Day == 0:
		return "starts " + st.WarmupStart
	}
	return fmt.Sprintf("day %d", st.Day)
}

// suspendedText lists the providers st is suspended for.
func suspendedText(st warmup.IPStatus) string {
	var out []string
	for _, p := range st.Providers {
		if p.SuspendedUntil != nil {
			out = append(out, p.Provider+" until "+p.SuspendedUntil.UTC().Format("15:04"))
		}
	}
	if len(out) == 0 {
		return "-"
	}
	return strings.Join(out, ", ")
}

func ipList(e *env, _ []string) error {
	list, _, parked, err := e.ipStatus()
	if err != nil {
		return err
	}
	if e.json {
		return e.printJSON(map[string]any{"ips": list, "waiting": parked})
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "IP\tPOOL\tWARM-UP\tTODAY\tTHIS HOUR\tSTATE\tSUSPENDED")
	for _, st := range list {
		state := "sending"
		if st.Paused {
			state = "paused"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%s\t%d/%s\t%s\t%s\n", st.IP, st.Pool, dayText(st), st.SentToday, capText(st.DailyCap),
			st.SentHour, capText(st.HourlyCap), state, suspendedText(st))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(parked) > 0 {
		fmt.Fprintln(e.stdout, "\nWaiting for capacity (pool/provider: recipients):")
		for line, n := range parked {
			fmt.Fprintf(e.stdout, "  %s: %d\n", line, n)
		}
	}
	return nil
}

// configuredIP returns the name of the outbound IP arg among the
// configuration's.
func (e *env) configuredIP(arg string) (string, error) {
	a, err := netip.ParseAddr(arg)
	if err != nil {
		return "", fmt.Errorf("%q is not an IP address", arg)
	}
	for _, ip := range shaperConfig(e.cfg).IPs {
		if ip.Addr.IsValid() && ip.Addr == a.Unmap() {
			return ip.Name(), nil
		}
	}
	return "", fmt.Errorf("%s is not an outbound IP of this configuration ([[ip]] or relay.source_ips); \"sesame ip list\" shows them", arg)
}

// findIP returns the status of the IP named arg.
func (e *env) findIP(list []warmup.IPStatus, arg string) (warmup.IPStatus, error) {
	name, err := e.configuredIP(arg)
	if err != nil {
		return warmup.IPStatus{}, err
	}
	for _, st := range list {
		if st.IP == name {
			return st, nil
		}
	}
	return warmup.IPStatus{}, fmt.Errorf("%s: no status (this is a bug)", name)
}

func ipShow(e *env, args []string) error {
	list, l, _, err := e.ipStatus()
	if err != nil {
		return err
	}
	st, err := e.findIP(list, args[0])
	if err != nil {
		return err
	}
	var ip warmup.IP
	for _, c := range l.Config().IPs {
		if c.Name() == st.IP {
			ip = c
		}
	}
	plan := l.Plan(ip, time.Now(), 60)
	if e.json {
		return e.printJSON(struct {
			warmup.IPStatus
			Schedule []warmup.DayPlan `json:"schedule"`
		}{st, plan})
	}
	w := e.stdout
	fmt.Fprintf(w, "IP:         %s\nPool:       %s\nWarm-up:    %s\n", st.IP, st.Pool, dayText(st))
	if st.WarmupStart != "" {
		fmt.Fprintf(w, "Started:    %s\n", st.WarmupStart)
	}
	fmt.Fprintf(w, "Today:      %d of %s\nThis hour:  %d of %s\n", st.SentToday, capText(st.DailyCap), st.SentHour, capText(st.HourlyCap))
	if st.Paused {
		fmt.Fprintf(w, "Paused:     since %s (sesame ip resume %s)\n", st.PausedAt.UTC().Format(time.DateTime), st.IP)
	}
	fmt.Fprintln(w, "\nProviders this hour:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  PROVIDER\tSENT\tCAP\tSUSPENDED")
	for _, p := range st.Providers {
		susp := "-"
		if p.SuspendedUntil != nil {
			susp = "until " + p.SuspendedUntil.UTC().Format(time.DateTime) + " after: " + clean(p.Reply)
		}
		fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\n", p.Provider, p.SentHour, capText(p.HourlyCap), susp)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nSchedule (UTC days):")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  DATE\tDAY\tDAILY CAP\tHOURLY CAP")
	for _, p := range plan {
		day := fmt.Sprint(p.Day)
		if p.DailyCap < 0 {
			day = "warm"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", p.Date, day, capText(p.DailyCap), capText(p.HourlyCap))
	}
	return tw.Flush()
}

func ipPause(e *env, args []string) error {
	ip, err := e.configuredIP(args[0])
	if err != nil {
		return err
	}
	err = e.withStore(func(ctx context.Context, s *store.SQLite) error {
		return s.PauseIP(ctx, store.IPPause{IP: ip, Reason: e.values["note"], At: time.Now()})
	})
	if err != nil {
		return err
	}
	if !e.json {
		fmt.Fprintf(e.stdout, "%s is paused: the running server stops starting deliveries from it within a second. Its mail waits, or goes out from the pool's other IPs. \"sesame ip resume %s\" lifts it.\n", ip, ip)
	}
	return nil
}

func ipResume(e *env, args []string) error {
	ip, err := e.configuredIP(args[0])
	if err != nil {
		return err
	}
	err = e.withStore(func(ctx context.Context, s *store.SQLite) error { return s.ResumeIP(ctx, ip) })
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%s is not paused", ip)
	}
	if err != nil {
		return err
	}
	if !e.json {
		fmt.Fprintf(e.stdout, "%s sends again.\n", ip)
	}
	return nil
}

func userPool(e *env, args []string) error {
	name, pool := args[0], args[1]
	if pool == warmup.DefaultPool {
		pool = ""
	}
	if pool != "" && !slices.Contains(e.cfg.Pools(), pool) {
		return fmt.Errorf("pool %q has no IP in the configuration (pools: %s); add [[ip]] tables with pool = %q first",
			pool, strings.Join(e.cfg.Pools(), ", "), pool)
	}
	err := e.withStore(func(ctx context.Context, st *store.SQLite) error { return st.SetPool(ctx, name, pool) })
	if err != nil {
		return notFoundUser(name, err)
	}
	if !e.json {
		fmt.Fprintf(e.stdout, "Mail of %q now leaves from the IPs of pool %q (mail already waiting for capacity keeps its place).\n", name, args[1])
	}
	return nil
}
