package test

// Warm-up from the built binary, as an operator runs it: an [[ip]] on its
// first day sends its cap and no more, the rest waits in the queue
// (deferred, reason warm-up) across a restart, and `sesame ip` and /metrics
// show the figures. The schedule's windows themselves are tested with a
// test clock in package relay (warmup_test.go).

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// warmupEnv is an MX installation whose one outbound IP is on warm-up day
// 1 of a schedule of dailyCap a day.
func warmupEnv(t *testing.T, ipTable string) *mxEnv {
	t.Helper()
	e := newMXEnv(t, mxOptions{})
	e.inst.unthrottled()
	e.inst.configure(map[string]any{"relay.source_ips": nil})
	e.inst.appendTables(ipTable)
	return e
}

type ipListJSON struct {
	IPs []struct {
		IP        string `json:"ip"`
		Pool      string `json:"pool"`
		Day       int    `json:"warmup_day"`
		DailyCap  int    `json:"daily_cap"`
		SentToday int    `json:"sent_today"`
		HourlyCap int    `json:"hourly_cap"`
		SentHour  int    `json:"sent_this_hour"`
		Paused    bool   `json:"paused"`
	} `json:"ips"`
	Waiting map[string]int `json:"waiting"`
}

func TestWarmupEndToEnd(t *testing.T) {
	today := time.Now().UTC().Format(time.DateOnly)
	// Day 1 allows 3 (spread over one hour, so an hour boundary during the
	// test changes nothing; only midnight UTC would).
	e := warmupEnv(t, fmt.Sprintf("[warmup]\nschedule = [3]\nspread_hours = 1\n\n[[ip]]\naddress = %q\nwarmup_start = %q\n",
		mxSourceIP, today))
	e.start(t)
	var ids []string
	for n := range 5 {
		ids = append(ids, e.send(t, fmt.Sprintf("warm-%d-%s", n, newToken()), fmt.Sprintf("user%d@example.net", n)))
	}
	deadline := time.Now().Add(mxWait)
	for len(e.mx1.Messages()) < 3 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond) // every chance to send a fourth
	if time.Now().UTC().Format(time.DateOnly) != today {
		t.Skip("midnight UTC passed during the test: day 2 has no cap")
	}
	msgs := e.mx1.Messages()
	if len(msgs) != 3 {
		t.Fatalf("the sink got %d messages, want the day-1 cap of 3", len(msgs))
	}
	for _, m := range msgs {
		if host, _, _ := net.SplitHostPort(m.Peer); host != mxSourceIP {
			t.Errorf("delivery from %s, want the [[ip]] address %s", host, mxSourceIP)
		}
	}
	// The first three in arrival order went; the last two wait.
	for n, m := range msgs {
		if !strings.Contains(string(m.Data), fmt.Sprintf("warm-%d-", n)) {
			t.Errorf("delivery %d is not message %d: arrival order broken", n, n)
		}
	}
	waiting := e.waitQueue(t, "two recipients waiting for warm-up", func(list []mxQueueEntry) bool {
		return len(list) == 2
	})
	for _, m := range waiting {
		r := m.Recipients[0]
		if m.ID != ids[3] && m.ID != ids[4] || r.State != "deferred" || !strings.Contains(r.LastReply, "warm-up") || r.Attempts != 0 {
			t.Errorf("queued %s: %s %q after %d attempts; want messages 4 and 5 deferred for warm-up, never attempted",
				m.ID, r.State, r.LastReply, r.Attempts)
		}
	}

	checkIPs := func(when string) {
		t.Helper()
		var l ipListJSON
		e.inst.adminJSON(t, &l, "ip", "list")
		if len(l.IPs) != 1 {
			t.Fatalf("%s: ip list shows %d IPs, want 1", when, len(l.IPs))
		}
		ip := l.IPs[0]
		if ip.IP != mxSourceIP || ip.Pool != "default" || ip.Day != 1 || ip.DailyCap != 3 || ip.SentToday != 3 ||
			ip.HourlyCap != 3 || ip.SentHour > 3 {
			t.Errorf("%s: ip list %+v, want %s in default on day 1 with 3 of 3 sent", when, ip, mxSourceIP)
		}
		if l.Waiting["default/other"] != 2 {
			t.Errorf("%s: waiting %v, want 2 in default/other", when, l.Waiting)
		}
	}
	checkIPs("before the restart")
	human := string(e.inst.mustAdmin(t, "ip", "list"))
	if !strings.Contains(human, "day 1") || !strings.Contains(human, "3/3") {
		t.Errorf("ip list prints:\n%s\nwant day 1 and 3/3", human)
	}
	show := string(e.inst.mustAdmin(t, "ip", "show", mxSourceIP))
	if !strings.Contains(show, today) || !strings.Contains(show, "warm") {
		t.Errorf("ip show prints:\n%s\nwant the schedule from %s until warm", show, today)
	}

	metrics := scrape(t, e.inst)
	for _, want := range []string{
		`sesame_ip_sent_messages{ip="127.0.0.9",pool="default",window="day"} 3`,
		`sesame_ip_cap_messages{ip="127.0.0.9",pool="default",window="day"} 3`,
		`sesame_ip_warmup_day{ip="127.0.0.9",pool="default"} 1`,
		`sesame_waiting_for_capacity_recipients{pool="default",provider="other"} 2`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// A restart keeps the count: nothing more goes out today.
	e.stopGracefully(t)
	e.start(t)
	time.Sleep(1500 * time.Millisecond)
	if n := len(e.mx1.Messages()); n != 3 {
		t.Errorf("after a restart the sink has %d messages, want still 3", n)
	}
	checkIPs("after the restart")

	if status, _, stderr := e.inst.adminStatus(t, "user", "pool", "mx", "bulk"); status == 0 || !strings.Contains(stderr, "[[ip]]") {
		t.Errorf("user pool to an unknown pool: status %d, %q; want a refusal naming [[ip]]", status, stderr)
	}
	if status, _, stderr := e.inst.adminStatus(t, "ip", "show", "192.0.2.1"); status == 0 || !strings.Contains(stderr, "ip list") {
		t.Errorf("ip show of an unknown IP: status %d, %q; want a refusal pointing at ip list", status, stderr)
	}
}

// An operator's pause reaches the running server: mail waits while the IP
// is paused and goes as soon as it is resumed.
func TestIPPauseResumeEndToEnd(t *testing.T) {
	e := warmupEnv(t, fmt.Sprintf("[[ip]]\naddress = %q\n", mxSourceIP)) // already warm
	e.start(t)
	e.inst.mustAdmin(t, "ip", "pause", mxSourceIP, "--note", "blocklisted; delisting requested")
	time.Sleep(1500 * time.Millisecond) // the server notices within a second
	token := "paused-" + newToken()
	id := e.send(t, token, "user@example.net")
	e.waitQueue(t, "the message waiting while the IP is paused", func(list []mxQueueEntry) bool {
		m := findEntry(list, id)
		return m != nil && strings.Contains(m.Recipients[0].LastReply, "paused")
	})
	if n := len(e.mx1.Messages()); n != 0 {
		t.Fatalf("%d messages left a paused IP", n)
	}
	var l ipListJSON
	e.inst.adminJSON(t, &l, "ip", "list")
	if !l.IPs[0].Paused {
		t.Errorf("ip list %+v, want paused", l.IPs[0])
	}
	resumed := time.Now()
	e.inst.mustAdmin(t, "ip", "resume", mxSourceIP)
	mustWait(t, e.mx1, "the message after the resume", carrying(token))
	t.Logf("delivered %s after ip resume", time.Since(resumed).Round(time.Millisecond))
	e.waitGone(t, id)
	if status, _, stderr := e.inst.adminStatus(t, "ip", "resume", mxSourceIP); status == 0 || !strings.Contains(stderr, "not paused") {
		t.Errorf("resume of a running IP: status %d, %q; want \"not paused\"", status, stderr)
	}
}

// scrape returns the instance's /metrics page.
func scrape(t *testing.T, inst *instance) string {
	t.Helper()
	resp, err := http.Get("http://" + inst.httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
