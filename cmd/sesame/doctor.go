package main

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/sesame-mail/sesame/identity"
)

// reportFindings prints what a doctor command found (jsonOut with --json)
// and returns the error that sets its exit status.
//
// Only a finding known to be missing or wrong fails the check. A warning
// is shown with its fix but not counted: receivers accept the mail. An
// unknown one is shown but not counted either: Sesame could not judge it
// (an SPF term it does not evaluate), and the operator may have checked it
// by hand. A lookup that failed fails the check apart: it says nothing
// about the records, but nothing was checked either.
// subject names what was checked in the closing lines, unit what a finding
// is ("record(s)"), and allGood is the closing line when every finding is
// OK.
func (e *env) reportFindings(subject, unit, allGood string, findings []identity.Finding, jsonOut any) error {
	var problems, unjudged, unlooked, warnings int
	for _, f := range findings {
		switch {
		case f.Status == identity.StatusMissing || f.Status == identity.StatusWrong:
			problems++
		case f.Status == identity.StatusUnknown && f.LookupErr != nil:
			unlooked++
		case f.Status == identity.StatusUnknown:
			unjudged++
		case f.Status == identity.StatusWarning:
			warnings++
		}
	}
	if e.json {
		if err := e.printJSON(jsonOut); err != nil {
			return err
		}
	} else {
		for _, f := range findings {
			mark := map[string]string{
				identity.StatusMissing: "MISSING", identity.StatusWrong: "WRONG  ",
				identity.StatusUnknown: "UNKNOWN", identity.StatusWarning: "WARN   ",
			}[f.Status]
			if mark == "" {
				mark = "OK     "
			}
			fmt.Fprintf(e.stdout, "%s  %s %s (%s)\n", mark, f.Type, f.Name, f.Purpose)
			switch {
			case f.Status != identity.StatusOK:
				if len(f.Found) > 0 {
					fmt.Fprintf(e.stdout, "         found: %s\n", clean(strings.Join(f.Found, " | ")))
				}
				fmt.Fprintf(e.stdout, "         fix:   %s\n", clean(f.Advice)) // may quote what DNS holds
			case f.Advice != "":
				fmt.Fprintf(e.stdout, "         note:  %s\n", clean(f.Advice))
			}
		}
	}
	switch {
	case problems > 0:
		return fmt.Errorf("%s: %d %s missing or wrong", subject, problems, unit)
	case unlooked > 0:
		return fmt.Errorf("%s: %d %s could not be looked up (DNS trouble, see the UNKNOWN lines); check [relay] dns_servers and try again",
			subject, unlooked, unit)
	}
	if !e.json {
		var notes []string
		if unjudged > 0 {
			notes = append(notes, fmt.Sprintf("Sesame cannot judge %d %s marked UNKNOWN: check them by hand", unjudged, unit))
		}
		if warnings > 0 {
			notes = append(notes, fmt.Sprintf("%d warning(s) marked WARN are worth fixing", warnings))
		}
		if len(notes) > 0 {
			fmt.Fprintf(e.stdout, "\nNothing of %s is missing or wrong; %s.\n", subject, strings.Join(notes, "; "))
		} else {
			fmt.Fprintf(e.stdout, "\n%s\n", allGood)
		}
	}
	return nil
}

// ipCheck is `sesame ip check [IP]`: the reverse DNS receivers look up of
// each outbound address.
func ipCheck(e *env, args []string) error {
	var ips []netip.Addr
	if len(args) == 1 {
		ip, err := netip.ParseAddr(args[0])
		if err != nil {
			return fmt.Errorf("%q is not an IP address such as 192.0.2.25", args[0])
		}
		ips = append(ips, ip.Unmap())
	}
	checker, err := identity.NewChecker(e.identityConfig())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	findings, err := checker.CheckIPs(ctx, ips)
	if err != nil {
		return err
	}
	out := struct {
		Records []recordOutput `json:"records"`
	}{Records: []recordOutput{}}
	for _, f := range findings {
		out.Records = append(out.Records, recordOutput{Record: f.Record, Check: f.Status, Found: f.Found, Advice: f.Advice})
	}
	return e.reportFindings("the outbound addresses", "address(es)", "The reverse DNS of every outbound address is right.", findings, out)
}
