package inbound

import (
	"fmt"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/sesame-mail/sesame/store"
)

// Reports that prove nothing change nothing; genuine ones still count. Each
// case runs against a fresh listener and store.
func TestReportVerification(t *testing.T) {
	type want struct {
		status   string
		verified bool
		why      string // in the verification text
		events   int
		lookups  int64
	}
	tests := []struct {
		name string
		send func(e *testEnv) error
		want want
	}{
		{"DSN to the feedback address naming a real queue id", func(e *testEnv) error {
			qid, _ := e.sent("victim@example.net")
			return e.report("", feedbackAddr, dsnReport([]string{"victim@example.net"},
				[]string{"from app by sesame.test (Sesame) with ESMTPSA id " + qid}))
		}, want{store.InboundUnverified, false, "counts only on the return path", 0, 0}},

		{"DSN on another recipient's return path", func(e *testEnv) error {
			_, paths := e.sent("victim@example.net", "attacker@example.net")
			return e.report("", paths["attacker@example.net"], dsnReport([]string{"victim@example.net"}, nil))
		}, want{store.InboundUnverified, false, "reports on victim@example.net, but came to the return path of attacker@example.net", 0, 1}},

		{"DSN on the recipient's own return path", func(e *testEnv) error {
			_, paths := e.sent("gone@example.net")
			return e.report("", paths["gone@example.net"], dsnReport([]string{"GONE@example.net"}, nil))
		}, want{store.InboundProcessed, true, "return path of gone@example.net", 1, 1}},

		{"DSN on one's own return path naming others too", func(e *testEnv) error {
			_, paths := e.sent("gone@example.net", "victim@example.net")
			return e.report("", paths["gone@example.net"], dsnReport([]string{"victim@example.net", "gone@example.net"}, nil))
		}, want{store.InboundProcessed, true, "return path of gone@example.net", 1, 1}},

		{"unsigned ARF", func(e *testEnv) error {
			qid, _ := e.sent("victim@example.net")
			return e.report("", feedbackAddr, arfReport("feedback@fbl.provider.test", "victim@example.net", qid))
		}, want{store.InboundUnverified, false, "no DKIM signature", 0, 0}},

		{"ARF signed by a domain that is no reporter", func(e *testEnv) error {
			qid, _ := e.sent("victim@example.net")
			k := newKey(e.t, e.zone, "evil.test")
			return e.report("", feedbackAddr, k.sign(e.t, arfReport("feedback@evil.test", "victim@example.net", qid)))
		}, want{store.InboundUnverified, false, "From <feedback@evil.test> is not a feedback reporter", 0, 0}},

		{"ARF from a reporter, signed by another domain", func(e *testEnv) error {
			qid, _ := e.sent("victim@example.net")
			k := newKey(e.t, e.zone, "evil.test")
			return e.report("", feedbackAddr, k.sign(e.t, arfReport("feedback@fbl.provider.test", "victim@example.net", qid)))
		}, want{store.InboundUnverified, false, "d=evil.test: not the reporter's domain", 0, 0}},

		{"ARF from a mailbox provider's user, signed by the provider", func(e *testEnv) error {
			qid, _ := e.sent("victim@example.net")
			k := newKey(e.t, e.zone, "mail.provider.test")
			return e.report("", feedbackAddr, k.sign(e.t, arfReport("someone@mail.provider.test", "victim@example.net", qid)))
		}, want{store.InboundUnverified, false, "is not a feedback reporter", 0, 0}},

		{"ARF signed by a reporter, altered after signing", func(e *testEnv) error {
			qid, _ := e.sent("victim@example.net")
			k := newKey(e.t, e.zone, "fbl.provider.test")
			signed := k.sign(e.t, arfReport("feedback@fbl.provider.test", "someone@example.net", qid))
			return e.report("", feedbackAddr, strings.Replace(signed, "someone@example.net", "victim@example.net", -1))
		}, want{store.InboundUnverified, false, "body hash did not verify", 0, 0}},

		{"ARF with two From fields", func(e *testEnv) error {
			qid, _ := e.sent("victim@example.net")
			k := newKey(e.t, e.zone, "fbl.provider.test")
			signed := k.sign(e.t, arfReport("feedback@fbl.provider.test", "victim@example.net", qid))
			return e.report("", feedbackAddr, "From: <feedback@fbl.provider.test>\n"+signed)
		}, want{store.InboundUnverified, false, "2 From fields", 0, 0}},

		{"ARF signed by a reporter domain", func(e *testEnv) error {
			qid, _ := e.sent("angry@example.net")
			k := newKey(e.t, e.zone, "fbl.provider.test")
			return e.report("", feedbackAddr, k.sign(e.t, arfReport("feedback@fbl.provider.test", "angry@example.net", qid)))
		}, want{store.InboundProcessed, true, "DKIM signature d=fbl.provider.test of feedback reporter <feedback@fbl.provider.test>", 1, 1}},

		{"ARF from a reporter address, signed by its parent domain", func(e *testEnv) error {
			qid, _ := e.sent("angry@example.net")
			k := newKey(e.t, e.zone, "provider.test")
			return e.report("", feedbackAddr, k.sign(e.t, arfReport("staff@mail.provider.test", "angry@example.net", qid)))
		}, want{store.InboundProcessed, true, "d=provider.test", 1, 1}},

		{"ARF naming the message by its return path alone", func(e *testEnv) error {
			qid, paths := e.sent("other@example.net", "angry@example.net")
			arf := arfReport("feedback@fbl.provider.test", "angry@example.net", qid)
			// Redacted, as Microsoft's are: no recipient, no Received field.
			arf = strings.Replace(arf, "<app@example.com>", "<"+paths["angry@example.net"]+">", 1)
			arf = strings.Replace(arf, "Original-Rcpt-To: <angry@example.net>\n", "", 1)
			arf = strings.Replace(arf, "To: <angry@example.net>\n", "", 1)
			arf = arf[:strings.Index(arf, "Received: from swaks")] + arf[strings.Index(arf, "From: app@example.com"):]
			k := newKey(e.t, e.zone, "fbl.provider.test")
			return e.report("", feedbackAddr, k.sign(e.t, arf))
		}, want{store.InboundProcessed, true, "d=fbl.provider.test", 1, 1}},

		{"unsigned ARF from a reporter address", func(e *testEnv) error {
			qid, _ := e.sent("angry@example.net")
			return e.report("127.0.0.2", feedbackAddr, arfReport("anyone@anywhere.test", "angry@example.net", qid))
		}, want{store.InboundProcessed, true, "sent from 127.0.0.2, a feedback reporter address (127.0.0.2/32)", 1, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEnv(t, func(c *Config) {
				c.FeedbackReporterIPs = append(c.FeedbackReporterIPs, mustPrefix(t, "127.0.0.2/32"))
			})
			if err := tt.send(e); err != nil {
				t.Fatalf("the report was refused: %v", err)
			}
			m := e.last()
			if m.Status != tt.want.status || m.Verified != tt.want.verified || !strings.Contains(m.Verification, tt.want.why) {
				t.Errorf("stored status %q, verified %v (%q); want %q, %v (%q)\ndetail: %s",
					m.Status, m.Verified, m.Verification, tt.want.status, tt.want.verified, tt.want.why, m.Detail)
			}
			events, sups := e.recorded()
			if len(events) != tt.want.events || len(sups) != tt.want.events {
				t.Errorf("%d events, %d suppressions; want %d each: %+v %+v", len(events), len(sups), tt.want.events, events, sups)
			}
			for _, ev := range events {
				if ev.Recipient != "gone@example.net" && ev.Recipient != "angry@example.net" {
					t.Errorf("%s recorded for %s, who is not the report's subject", ev.Type, ev.Recipient)
				}
			}
			if n := e.st.lookups.Load(); n != tt.want.lookups {
				t.Errorf("%d store lookups, want %d", n, tt.want.lookups)
			}
			if len(m.Raw) == 0 {
				t.Error("the report's bytes were not kept")
			}
		})
	}
}

// Keys are looked up only for the aligned domains of a configured
// reporter: a forger cannot make Sesame ask DNS servers of its choosing.
func TestKeyLookupsOnlyForReporters(t *testing.T) {
	e := newTestEnv(t, nil)
	qid, _ := e.sent("victim@example.net")
	evil := newKey(t, e.zone, "evil.test")
	e.report("", feedbackAddr, evil.sign(t, arfReport("feedback@evil.test", "victim@example.net", qid)))
	e.report("", feedbackAddr, evil.sign(t, arfReport("feedback@fbl.provider.test", "victim@example.net", qid)))
	if n := e.zone.questions("evil.test"); n != 0 {
		t.Errorf("%d DNS questions about evil.test, want none", n)
	}
	good := newKey(t, e.zone, "fbl.provider.test")
	e.report("", feedbackAddr, good.sign(t, arfReport("feedback@fbl.provider.test", "victim@example.net", qid)))
	if n := e.zone.questions("fbl.provider.test"); n != 1 {
		t.Errorf("%d DNS questions about fbl.provider.test, want 1", n)
	}
}

// A reporter's key that cannot be looked up now asks the reporter to try
// again, storing nothing.
func TestKeyLookupFailureIsTemporary(t *testing.T) {
	e := newTestEnv(t, nil)
	qid, _ := e.sent("angry@example.net")
	k := newKey(t, e.zone, "fbl.provider.test")
	e.zone.setBroken("fbl._domainkey.fbl.provider.test")
	err := e.report("", feedbackAddr, k.sign(t, arfReport("feedback@fbl.provider.test", "angry@example.net", qid)))
	if se, ok := err.(*smtp.SMTPError); !ok || se.Code != 451 || se.EnhancedCode != (smtp.EnhancedCode{4, 4, 3}) {
		t.Fatalf("end of DATA: %v, want 451 4.4.3", err)
	}
	if list, _ := e.st.InboundMessages(t.Context(), "", 10); len(list) != 0 {
		t.Errorf("stored %+v", list)
	}
}

// A DSN with 1,000 recipients and 1,000 Received fields costs one store
// lookup on a return path and none elsewhere (it cost about a million).
func TestReportBomb(t *testing.T) {
	e := newTestEnv(t, nil)
	qid, paths := e.sent("gone@example.net")
	rcpts := []string{"gone@example.net"}
	var received []string
	for i := range 1000 {
		if i > 0 {
			rcpts = append(rcpts, fmt.Sprintf("r%d@example.net", i))
		}
		received = append(received, fmt.Sprintf("from a by b with ESMTPSA id %016d", i))
	}
	received = append(received, "from app by sesame.test (Sesame) with ESMTPSA id "+qid)
	bomb := dsnReport(rcpts, received)

	if err := e.report("", feedbackAddr, bomb); err != nil {
		t.Fatal(err)
	}
	if n := e.st.lookups.Load(); n != 0 {
		t.Errorf("at the feedback address: %d lookups, want 0", n)
	}
	if m := e.last(); m.Status != store.InboundUnverified {
		t.Errorf("at the feedback address: status %q", m.Status)
	}

	if err := e.report("", paths["gone@example.net"], bomb); err != nil {
		t.Fatal(err)
	}
	if n := e.st.lookups.Load(); n != 1 {
		t.Errorf("on the return path: %d lookups in all, want 1", n)
	}
	m := e.last()
	if m.Status != store.InboundProcessed || !strings.Contains(m.Detail, "900 recipients past the first 100 not examined") ||
		!strings.Contains(m.Detail, "and 94 more") {
		t.Errorf("on the return path: %s: %s", m.Status, m.Detail)
	}
	if events, _ := e.recorded(); len(events) != 1 || events[0].Recipient != "gone@example.net" {
		t.Errorf("events %+v, want one bounce of gone@example.net", events)
	}

	// A complaint naming 1,000 recipients under 1,000 Received fields,
	// from a reporter address: one lookup too.
	e2 := newTestEnv(t, func(c *Config) { c.FeedbackReporterIPs = append(c.FeedbackReporterIPs, mustPrefix(t, "127.0.0.0/8")) })
	qid2, _ := e2.sent("angry@example.net")
	arf := arfReport("anyone@anywhere.test", "angry@example.net", qid2)
	var many strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&many, "Original-Rcpt-To: <r%d@example.net>\n", i)
	}
	arf = strings.Replace(arf, "Original-Rcpt-To:", many.String()+"Original-Rcpt-To:", 1)
	arf = strings.Replace(arf, "Received: from swaks", strings.Repeat("Received: from a by b with ESMTPSA id 0000000000000000\n", 1000)+"Received: from swaks", 1)
	if err := e2.report("", feedbackAddr, arf); err != nil {
		t.Fatal(err)
	}
	if n := e2.st.lookups.Load(); n != 1 {
		t.Errorf("complaint: %d lookups, want 1", n)
	}
}

// A client over its processing budget has its reports kept unexamined;
// other clients are not held back by it.
func TestProcessingBudget(t *testing.T) {
	e := newTestEnv(t, func(c *Config) {
		c.ReportBudget = 1         // a nanosecond: the first report empties it
		c.ReportBudgetRate = 1e-12 // and nothing comes back during the test
	})
	_, paths := e.sent("a@example.net", "b@example.net", "c@example.net")
	if err := e.report("127.0.0.1", paths["a@example.net"], dsnReport([]string{"a@example.net"}, nil)); err != nil {
		t.Fatal(err)
	}
	if m := e.last(); m.Status != store.InboundProcessed {
		t.Fatalf("first report: %s %s", m.Status, m.Detail)
	}
	if err := e.report("127.0.0.1", paths["b@example.net"], dsnReport([]string{"b@example.net"}, nil)); err != nil {
		t.Fatal(err)
	}
	m := e.last()
	if m.Status != store.InboundUnverified || m.Verified || !strings.Contains(m.Verification, "not examined: 127.0.0.1 has used its report processing budget") ||
		!strings.Contains(string(m.Raw), "b@example.net") {
		t.Errorf("report over budget: %s, %v, %q", m.Status, m.Verified, m.Verification)
	}
	if err := e.report("127.0.0.2", paths["c@example.net"], dsnReport([]string{"c@example.net"}, nil)); err != nil {
		t.Fatal(err)
	}
	if m := e.last(); m.Status != store.InboundProcessed {
		t.Errorf("another client: %s %s", m.Status, m.Verification)
	}
	events, _ := e.recorded()
	if len(events) != 2 {
		t.Errorf("events %+v, want the bounces of a and c", events)
	}
}

// A report is judged on the whole message and kept in part: a DSN whose
// failed recipient comes after the first keep_raw_bytes still counts on its
// return path, an unverified one is cut the same way, and what each row
// counts against the caps includes its verification text.
func TestReportJudgedWholeKeptInPart(t *testing.T) {
	c := &counts{kept: map[string]int{}, refused: map[string]int{}}
	e := newTestEnv(t, func(cfg *Config) {
		cfg.Limits.KeepRawBytes = 1024
		cfg.Metrics = c
	})
	_, paths := e.sent("gone@example.net")
	dsn := strings.Replace(dsnReport([]string{"gone@example.net"}, nil), "Your message could not be delivered.",
		strings.Repeat("Your message could not be delivered.\n", 60), 1)

	if err := e.report("", paths["gone@example.net"], dsn); err != nil {
		t.Fatal(err)
	}
	m := e.last()
	if m.Status != store.InboundProcessed || !m.Verified || !m.Truncated || len(m.Raw) != 1024 ||
		strings.Contains(string(m.Raw), "Final-Recipient") {
		t.Errorf("on the return path: %s verified=%v truncated=%v, %d bytes kept of %d", m.Status, m.Verified, m.Truncated, len(m.Raw), m.Size)
	}
	if events, _ := e.recorded(); len(events) != 1 {
		t.Errorf("events %+v, want the bounce", events)
	}

	if err := e.report("", feedbackAddr, dsn); err != nil {
		t.Fatal(err)
	}
	m = e.last()
	if m.Status != store.InboundUnverified || m.Verification == "" || !m.Truncated || len(m.Raw) != 1024 {
		t.Errorf("at the feedback address: %s %q truncated=%v, %d bytes kept", m.Status, m.Verification, m.Truncated, len(m.Raw))
	}
	if m.Kept != m.StoredBytes() || m.Kept < int64(len(m.Raw)+len(m.Detail)+len(m.Verification)) {
		t.Errorf("the row counts %d bytes; its raw bytes, detail and verification are %d, %d and %d",
			m.Kept, len(m.Raw), len(m.Detail), len(m.Verification))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.kept[store.InboundProcessed] != 1 || c.kept[store.InboundUnverified] != 1 || c.truncated != 2 {
		t.Errorf("counted kept %v, %d truncated; want one processed and one unverified, both truncated", c.kept, c.truncated)
	}
}
